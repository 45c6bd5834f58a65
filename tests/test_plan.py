"""Plan and keys: weights once per model x quantization, libraries shared by architecture, keys that move
exactly when an input moves."""

from __future__ import annotations

from pathlib import Path

import yaml

from mlc_farm.matrix.cells import expand
from mlc_farm.matrix.load import parse_matrix
from mlc_farm.planning.kinds import all_builds
from mlc_farm.planning.plan import make_plan
from mlc_farm.planning.sources import ResolvedSource, resolve_local
from mlc_farm.tiny_model import write_tiny_llama
from mlc_farm.toolchain.info import ToolchainInfo

TC = ToolchainInfo(mlc_llm_version="0.20.0", mlc_llm_commit="a" * 40, tvm_version="0.22", tvm_commit="b" * 40)
CONFIG = {"model_type": "llama", "hidden_size": 128, "num_hidden_layers": 2, "vocab_size": 1000}


def matrix(**extra: object) -> dict:
    return {
        "quantizations": ["q4f16_1", "q0f16"],
        "devices": [
            {"name": "cpu", "family": "cpu", "target": "llvm"},
            {"name": "cuda", "family": "cuda", "target": '{"kind":"cuda","arch":"sm_90a"}', "cuda_archs": ["90a"]},
        ],
        "models": [
            {"id": "base", "source": {"hf": "org/base"}, "conv_template": "LM"},
            {"id": "tune", "source": {"hf": "org/tune"}, "conv_template": "chatml"},
        ],
        **extra,
    }


def source(model: str, identity: str, **config: object) -> ResolvedSource:
    cfg = {**CONFIG, "_name_or_path": model, "torch_dtype": "bfloat16", **config}
    return ResolvedSource(model=model, kind="hf", ref=f"org/{model}", identity=identity, config=cfg)


def plan_of(doc: dict, sources: dict[str, ResolvedSource], tc: ToolchainInfo = TC):
    m = parse_matrix(yaml.safe_dump(doc), "m.yaml").matrix
    return make_plan(m, expand(m), sources, tc)


SOURCES = {"base": source("base", "1" * 40), "tune": source("tune", "2" * 40)}


def test_weights_per_model_and_quantization_libraries_shared_by_architecture() -> None:
    p = plan_of(matrix(), SOURCES)
    assert len(p.cells) == 8
    assert len(p.convert_builds) == 4  # 2 models x 2 quantizations, never per device
    assert len(p.config_builds) == 4
    assert len(p.lib_builds) == 4  # the fine-tune shares the base model's libraries
    for lb in p.lib_builds.values():
        assert [c.model for c in lb.users] == ["base", "tune"]
        assert [b.model for b in lb.sources] == ["base", "tune"]
        assert all(b.convert in p.convert_builds and b.config in p.config_builds for b in lb.sources)


def test_different_architectures_do_not_share() -> None:
    p = plan_of(matrix(), {**SOURCES, "tune": source("tune", "2" * 40, num_hidden_layers=4)})
    assert len(p.lib_builds) == 8


def test_overrides_split_libraries_and_weights() -> None:
    doc = matrix()
    doc["models"][1]["overrides"] = {"context_window_size": 4096}
    p = plan_of(doc, SOURCES)
    assert len(p.lib_builds) == 8
    assert len(p.convert_builds) == 4 and len(p.config_builds) == 4


def test_keys_move_with_their_inputs_only() -> None:
    base = plan_of(matrix(), SOURCES)
    new_commit = plan_of(matrix(), {**SOURCES, "tune": source("tune", "3" * 40)})
    assert set(new_commit.lib_builds) == set(base.lib_builds)  # new weights, same architecture: same libs
    changed = set(new_commit.convert_builds) - set(base.convert_builds)
    assert {new_commit.convert_builds[k].model for k in changed} == {"tune"}
    assert len(changed) == 2

    nightly = plan_of(matrix(), SOURCES, TC.model_copy(update={"mlc_llm_version": "0.21.0"}))
    assert not set(nightly.convert_builds) & set(base.convert_builds)
    assert not set(nightly.lib_builds) & set(base.lib_builds)

    doc = matrix()
    doc["devices"][1]["cuda_archs"] = ["90a", "80"]
    archs = plan_of(doc, SOURCES)
    assert len(set(archs.lib_builds) - set(base.lib_builds)) == 2  # only the cuda libraries
    assert set(archs.convert_builds) == set(base.convert_builds)


def test_unresolved_source_is_reported_not_built() -> None:
    broken = ResolvedSource(model="tune", kind="hf", ref="org/tune", error="cannot reach the Hub")
    p = plan_of(matrix(), {**SOURCES, "tune": broken})
    assert [pc.problem for pc in p.cells if pc.cell.model == "tune"] == ["cannot reach the Hub"] * 4
    assert len(p.convert_builds) == 2


def test_local_source_identity_is_its_content(tmp_path: Path) -> None:
    d = write_tiny_llama(tmp_path / "m", seed=1)
    first = resolve_local("m", d)
    (d / "README.md").write_text("not read by the toolchain")
    assert resolve_local("m", d).identity == first.identity
    write_tiny_llama(d, seed=2)
    assert resolve_local("m", d).identity != first.identity


def test_summary_grid_pictures_every_cell() -> None:
    from mlc_farm.records.outcomes import Outcome
    from mlc_farm.report.summary import summarize

    p = plan_of(matrix(), SOURCES)
    outcomes = {k: Outcome(status="built") for k in all_builds(p)}
    cuda_lib = next(k for k, lb in p.lib_builds.items() if lb.device.name == "cuda" and lb.quantization == "q0f16")
    outcomes[cuda_lib] = Outcome(status="failed", detail="compile failed")
    grid = summarize(p, outcomes).grid().splitlines()
    assert grid[0] == "| model | quantization | cpu | cuda |"
    assert grid[2:] == [
        "| base | q4f16_1 | 🟢 ok | 🟢 ok |",
        "| base | q0f16 | 🟢 ok | 🔴 failed |",
        "| tune | q4f16_1 | 🟢 ok | 🟢 ok |",
        "| tune | q0f16 | 🟢 ok | 🔴 failed |",
    ]


def test_summary_counts_each_step_on_its_own() -> None:
    """Built weights are never reported as reused: convert, config and library have their own counts."""
    from mlc_farm.records.outcomes import Outcome
    from mlc_farm.report.summary import summarize

    p = plan_of(matrix(), SOURCES)
    outcomes = {k: Outcome(status="reused") for k in all_builds(p)}
    outcomes |= {k: Outcome(status="built") for k in p.config_builds}
    summary = summarize(p, outcomes)
    assert summary.message() == "8 cells: 8 ok (convert 4 reused; config 4 built; library 4 reused; check 8 reused)"


def test_conv_template_moves_only_the_config_key() -> None:
    """A chat-template edit reruns gen_config (seconds), never convert_weight (hours) or compile."""
    base = plan_of(matrix(), SOURCES)
    doc = matrix()
    doc["models"][0]["conv_template"] = "llama-3"
    edited = plan_of(doc, SOURCES)
    assert set(edited.convert_builds) == set(base.convert_builds)
    assert set(edited.lib_builds) == set(base.lib_builds)
    assert {edited.config_builds[k].model for k in set(edited.config_builds) - set(base.config_builds)} == {"base"}
    assert len(set(edited.config_builds) - set(base.config_builds)) == 2  # base x 2 quantizations


def test_context_window_moves_config_and_library_keys_not_convert() -> None:
    base = plan_of(matrix(), SOURCES)
    doc = matrix()
    doc["models"][0]["overrides"] = {"context_window_size": 1024}
    edited = plan_of(doc, SOURCES)
    assert set(edited.convert_builds) == set(base.convert_builds)
    assert len(set(edited.config_builds) - set(base.config_builds)) == 2
    assert len(set(edited.lib_builds) - set(base.lib_builds)) == 4  # base x 2 quantizations x 2 devices


def test_host_is_part_of_the_library_key() -> None:
    base = plan_of(matrix(), SOURCES)
    assert {lb.device.host_triple for lb in base.lib_builds.values()} == {"x86_64-unknown-linux-gnu"}
    doc = matrix()
    doc["devices"][0]["host"] = "aarch64-unknown-linux-gnu"
    arm = plan_of(doc, SOURCES)
    assert len(set(arm.lib_builds) - set(base.lib_builds)) == 2  # only the cpu libraries
    assert set(arm.convert_builds) == set(base.convert_builds)
