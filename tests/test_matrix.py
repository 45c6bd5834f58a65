"""matrix.yaml: validation errors name file, field path and value; expansion follows include/exclude."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from mlc_farm.errors import MatrixError
from mlc_farm.matrix.cells import expand, select_cells
from mlc_farm.matrix.load import load_matrix, parse_matrix
from mlc_farm.matrix.schema import Cell
from tests.helpers import ROOT, cli

BASE = {
    "quantizations": ["q4f16_1", "q0f16"],
    "devices": [
        {"name": "cuda-sm90", "family": "cuda", "target": '{"kind":"cuda","arch":"sm_90a"}'},
        {"name": "rocm-gfx942", "family": "rocm", "target": '{"kind":"rocm","mcpu":"gfx942"}'},
    ],
    "models": [
        {"id": "a", "source": {"hf": "org/a"}, "conv_template": "LM"},
        {"id": "b", "source": {"hf": "org/b", "revision": "v1"}, "conv_template": "LM"},
    ],
}


def problems_of(doc: dict) -> list[str]:
    with pytest.raises(MatrixError) as info:
        parse_matrix(yaml.safe_dump(doc), "cat.yaml")
    assert str(info.value).startswith("cat.yaml: invalid matrix")
    return info.value.problems


def with_(**changes: object) -> dict:
    return {**BASE, **changes}


def test_shipped_matrices_are_valid() -> None:
    loaded = load_matrix(ROOT / "matrix.yaml")
    cells = expand(loaded.matrix)
    assert {c.device for c in cells} == {"cuda-multi", "rocm-gfx942"}
    assert Cell(model="Qwen2.5-0.5B-Instruct", quantization="q0f16", device="rocm-gfx942") not in cells
    assert loaded.matrix.device("cuda-multi").cuda_archs == ["80", "86", "89", "90a"]


def test_tiny_example_is_valid_once_its_models_exist(tmp_path: Path) -> None:
    text = (ROOT / "examples" / "tiny-cpu.yaml").read_text()
    for name in ("tiny-llama-a", "tiny-llama-b"):
        (tmp_path / "tiny-models" / name).mkdir(parents=True)
        (tmp_path / "tiny-models" / name / "config.json").write_text("{}")
    m = parse_matrix(text, "tiny-cpu.yaml", tmp_path).matrix
    assert len(expand(m)) == 8
    assert [d.target for d in m.devices] == ["llvm", "vulkan:generic"]


def test_unknown_quantization_suggests_the_close_name() -> None:
    doc = with_(models=[{**BASE["models"][0], "quantizations": ["q4f16_l"]}])
    assert problems_of(doc) == ["models[0].quantizations[0]: unknown quantization 'q4f16_l'; did you mean 'q4f16_1'?"]


def test_a_misplaced_field_points_at_where_it_belongs() -> None:
    doc = with_(models=[{**BASE["models"][0], "context_window_size": 4096}])
    assert problems_of(doc) == [
        "models[0].context_window_size: Extra inputs are not permitted (unknown field; did you mean "
        "'overrides.context_window_size'?)"
    ]


def test_unknown_device_names_the_field_and_known_devices() -> None:
    doc = with_(models=[{**BASE["models"][0], "devices": ["cuda-sm80"]}])
    assert problems_of(doc) == ["models[0].devices[0]: unknown device 'cuda-sm80'; did you mean 'cuda-sm90'?"]


def test_duplicate_model_ids() -> None:
    doc = with_(models=[BASE["models"][0], BASE["models"][0]])
    assert problems_of(doc) == ["models[1].id: duplicate model id 'a'"]


@pytest.mark.parametrize("bad", ["../x", "a/b", "", ".hidden", "x..y"])
def test_model_id_must_be_a_safe_path_component(bad: str) -> None:
    doc = with_(models=[{**BASE["models"][0], "id": bad}])
    (problem,) = problems_of(doc)
    assert problem.startswith(f"models[0].id: {bad!r} is not a safe model id")


def test_rule_naming_nothing_or_unknown_things() -> None:
    doc = with_(exclude=[{}], include=[{"model": "c"}])
    assert problems_of(doc) == [
        "include[0].model: unknown model 'c'; expected one of: a, b",
        "exclude[0]: the rule names nothing (set model, quantization or device)",
    ]


def test_rule_that_matches_no_cell() -> None:
    doc = with_(
        models=[{**BASE["models"][0], "devices": ["cuda-sm90"]}],
        exclude=[{"model": "a", "device": "rocm-gfx942"}],
    )
    assert problems_of(doc) == ["exclude[0]: matches no cell of the matrix ({'model': 'a', 'device': 'rocm-gfx942'})"]


def test_schema_errors_carry_the_path_and_value() -> None:
    doc = with_(devices=[{**BASE["devices"][0], "family": "tpu"}], models=[{**BASE["models"][0], "colour": 1}])
    problems = problems_of(doc)
    assert any(p.startswith("devices[0].family: Input should be") and "(got 'tpu')" in p for p in problems)
    assert any(p.startswith("models[0].colour: Extra inputs are not permitted") for p in problems)


def test_malformed_yaml_gives_the_line() -> None:
    with pytest.raises(MatrixError) as info:
        parse_matrix("quantizations: [q4f16_1\ndevices: []\n", "bad.yaml")
    (problem,) = info.value.problems
    assert problem.startswith("line 2, column 8: malformed YAML")


def test_missing_local_source_directory(tmp_path: Path) -> None:
    doc = with_(models=[{"id": "a", "source": {"path": "nowhere"}, "conv_template": "LM"}])
    with pytest.raises(MatrixError) as info:
        parse_matrix(yaml.safe_dump(doc), "m.yaml", tmp_path)
    assert info.value.problems == ["models[0].source.path: directory 'nowhere' does not exist"]


def test_expansion_applies_exclude_then_include() -> None:
    doc = with_(
        models=[*BASE["models"], {"id": "c", "source": {"hf": "org/c"}, "conv_template": "LM",
                                  "quantizations": ["q0f16"], "devices": ["rocm-gfx942"]}],
        exclude=[{"device": "rocm-gfx942"}],
        include=[{"model": "b", "quantization": "q3f16_1", "device": "rocm-gfx942"}],
    )  # fmt: skip
    cells = expand(parse_matrix(yaml.safe_dump(doc), "m.yaml").matrix)
    assert [(c.model, c.quantization, c.device) for c in cells] == [
        ("a", "q4f16_1", "cuda-sm90"),
        ("a", "q0f16", "cuda-sm90"),
        ("b", "q4f16_1", "cuda-sm90"),
        ("b", "q0f16", "cuda-sm90"),
        ("b", "q3f16_1", "rocm-gfx942"),
    ]


def test_select_cells_rejects_unknown_names() -> None:
    m = parse_matrix(yaml.safe_dump(BASE), "m.yaml").matrix
    assert {c.model for c in select_cells(m, "m.yaml", ["b"])} == {"b"}
    picked = select_cells(m, "m.yaml", ["a"], ["q0f16"], ["rocm-gfx942"])
    assert [(c.model, c.quantization, c.device) for c in picked] == [("a", "q0f16", "rocm-gfx942")]
    with pytest.raises(MatrixError) as info:
        select_cells(m, "m.yaml", ["bb"], ["q4f16_l"])
    assert info.value.problems == [
        "--model: unknown model 'bb'; did you mean 'b'?",
        "--quantization: unknown quantization 'q4f16_l'; did you mean 'q4f16_1'?",
    ]


def test_cli_exits_2_with_the_message_and_writes_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "cat.yaml"
    bad.write_text(yaml.safe_dump(with_(quantizations=["q4f16_l"])))
    store = tmp_path / "store"
    for command in ("plan", "build"):
        done = cli(command, "--matrix", str(bad), "--store", str(store))
        assert done.returncode == 2, done.stderr
        assert f"{bad}: invalid matrix" in done.stderr
        assert "quantizations[0]: unknown quantization 'q4f16_l'; did you mean 'q4f16_1'?" in done.stderr
    assert not store.exists()


def test_a_device_family_must_agree_with_its_target() -> None:
    devices = [
        {"name": "cpu", "family": "cpu", "target": "cuda"},
        {"name": "w", "family": "webgpu", "target": '{"kind":"cuda","arch":"sm_90a"}'},
        {"name": "x", "family": "vulkan", "target": "no-such-target"},
        {"name": "ok", "family": "android", "target": "android:adreno"},
    ]
    assert problems_of(with_(devices=devices)) == [
        "devices[0].target: 'cuda' builds for cuda, but family is 'cpu'",
        'devices[1].target: \'{"kind":"cuda","arch":"sm_90a"}\' builds for cuda, but family is \'webgpu\'',
        "devices[2].target: 'no-such-target' is not a target compile takes (a preset such as llvm, vulkan:generic, "
        'webgpu, iphone, android; a local device such as cuda; or a TVM target like {"kind":"cuda","arch":"sm_90a"})',
    ]


def test_opt_host_archs_and_convert_device_are_checked() -> None:
    cuda = {"name": "c", "family": "cuda", "target": "cuda:0"}
    doc = with_(
        devices=[
            {**cuda, "opt": "O4", "host": "x86_64 linux", "cuda_archs": ["sm_90"]},
            {**cuda, "name": "d", "opt": "cutlass=0;cudagraph=1", "host": "aarch64-unknown-linux-gnu"},
            {"name": "e", "family": "cpu", "target": "llvm", "cuda_archs": ["80"]},
        ],
        convert_device="gpu",
    )
    assert problems_of(doc) == [
        "devices[0].opt: 'O4' is not O0..O3 or a flag string like 'cutlass=0;cudagraph=1'",
        "devices[0].host: 'x86_64 linux' is not an LLVM triple like 'x86_64-unknown-linux-gnu'",
        "devices[0].cuda_archs[0]: 'sm_90' is not a CUDA architecture like '80' or '90a'",
        "devices[2].cuda_archs: only a cuda device takes CUDA architectures (family is 'cpu')",
        "convert_device: 'gpu' is not a device convert_weight takes (cpu, auto, cuda, cuda:N, rocm:N, metal, vulkan, opencl)",
    ]


def test_host_defaults_to_a_generic_triple_for_the_family() -> None:
    m = parse_matrix(yaml.safe_dump(with_(devices=[
        {"name": "c", "family": "cuda", "target": "cuda"},
        {"name": "m", "family": "metal", "target": "metal:generic"},
        {"name": "g", "family": "cuda", "target": "cuda", "host": "aarch64-unknown-linux-gnu"},
    ])), "m.yaml").matrix  # fmt: skip
    assert [d.host_triple for d in m.devices] == [
        "x86_64-unknown-linux-gnu", "arm64-apple-darwin", "aarch64-unknown-linux-gnu",
    ]  # fmt: skip


def test_names_are_checked_against_what_the_toolchain_accepts() -> None:
    from mlc_farm.matrix.load import toolchain_problems
    from mlc_farm.matrix.schema import BUILTIN_NAMES
    from mlc_farm.toolchain.probe import probe

    names = probe().names
    assert names is not None and "redpajama_chat" in names.conv_templates and "llama" in names.model_types
    m = parse_matrix(yaml.safe_dump(with_(models=[
        {"id": "a", "source": {"hf": "org/a"}, "conv_template": "lama-3", "model_type": "lama"},
        {"id": "b", "source": {"hf": "org/b"}, "conv_template": "LM", "model_type": "llama"},
    ])), "m.yaml").matrix  # fmt: skip
    assert toolchain_problems(m, names) == [
        "models[0].conv_template: 'lama-3' is not a conv template of the toolchain; did you mean 'llama-3'?",
        "models[0].model_type: 'lama' is not a model type of the toolchain; did you mean 'llama'?",
    ]
    # Without a toolchain only the quantizations are known: the rest is not guessed at.
    assert toolchain_problems(m, BUILTIN_NAMES) == []


def test_plan_rejects_a_name_the_installed_toolchain_does_not_know(tiny_matrix: Path) -> None:
    bad = tiny_matrix.with_name(f"bad-{tiny_matrix.name}")
    bad.write_text(tiny_matrix.read_text().replace("conv_template: LM}", "conv_template: chatm1}", 1))
    for command in ("plan", "build"):
        done = cli(command, "--matrix", str(bad), "--store", str(bad.parent / "never-written"))
        assert done.returncode == 2, done.stdout + done.stderr
        assert (
            "models[0].conv_template: 'chatm1' is not a conv template of the toolchain; did you mean 'chatml'?"
            in done.stderr
        )
        assert "Traceback" not in done.stderr
    assert not (bad.parent / "never-written" / "builds").exists()


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_api")
def test_without_a_toolchain_plan_checks_names_against_the_snapshot_a_build_kept(
    tiny_matrix: Path, tmp_path: Path
) -> None:
    store = str(tmp_path / "store")
    assert cli("build", "--matrix", str(tiny_matrix), "--store", store, "--model", "tiny-llama-a").returncode == 0
    typo = tiny_matrix.with_name(f"typo-{tmp_path.name}.yaml")
    typo.write_text(tiny_matrix.read_text().replace("conv_template: LM}", "conv_template: llama-3-typo}", 1))
    laptop = {"MLC_FARM_MLC_LLM": "/nonexistent/python -m mlc_llm"}  # no toolchain here
    done = cli("plan", "--matrix", str(typo), "--store", store, env=laptop)
    said = " ".join(done.stderr.split())
    assert done.returncode == 2 and "'llama-3-typo' is not a conv template of the toolchain" in said, said
    assert "names checked against a snapshot of the registries of mlc_llm 0.20.0.dev0, kept by the probe in" in said
    elsewhere = cli("plan", "--matrix", str(typo), "--store", str(tmp_path / "empty"), env=laptop)
    assert elsewhere.returncode == 0 and "conv templates and model types are not checked" in elsewhere.stdout


def test_the_farms_tiny_llama_is_a_source_every_worker_makes_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlc_farm.errors import BadInput
    from mlc_farm.planning.sources import fetch, resolve

    bad = problems_of(with_(models=[{"id": "t", "source": {"tiny": -1}, "conv_template": "LM"}]))
    assert any(p.startswith("models[0].source.tiny: Input should be greater than or equal to 0") for p in bad), bad
    monkeypatch.setenv("MLC_FARM_CACHE", str(tmp_path / "planner"))
    loaded = parse_matrix(yaml.safe_dump(with_(models=[{"id": "t", "source": {"tiny": 3}, "conv_template": "LM"}])),
                          "cat.yaml")  # fmt: skip
    source = resolve(loaded, loaded.matrix.models)["t"]
    assert source.kind == "tiny" and source.identity and source.ref == "the farm's tiny Llama, seed 3"
    monkeypatch.setenv("MLC_FARM_CACHE", str(tmp_path / "worker"))  # another machine makes it again
    assert sorted(fetch(source).files) == ["config.json", "model.safetensors", "tokenizer.json",
                                           "tokenizer_config.json"]  # fmt: skip
    with pytest.raises(BadInput, match="made here differs from the one planned"):
        fetch(source.model_copy(update={"identity": "0" * 64}))


def test_a_loaded_matrix_is_plain_data_that_comes_back_the_same(tiny_matrix: Path) -> None:
    """A run's pre-flight holds its matrix and is handed to the flow as a parameter: written out as JSON (no
    serializer warning for a local or tiny source) and read back, it is the same matrix."""
    import warnings

    from mlc_farm.matrix.schema import LoadedMatrix

    loaded = load_matrix(tiny_matrix)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = LoadedMatrix.model_validate(loaded.model_dump(mode="json"))
    assert again == loaded and {type(m.source).__name__ for m in again.matrix.models} == {"LocalSource"}
