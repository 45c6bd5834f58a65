"""Expected build times from the store's records: what the critical-path order is computed from."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mlc_farm.digests import digest
from mlc_farm.planning.durations import DEFAULT_SECONDS, bits_per_weight, estimate, parameters
from mlc_farm.records.schema import RECORD, BuildRecord, FileEntry
from tests.test_plan import SOURCES, matrix, plan_of

PLAN = plan_of(matrix(), SOURCES)
CONFIGS = {m: s.config for m, s in SOURCES.items()}
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def record(inputs: dict, seconds: float, size: int = 1000) -> BuildRecord:
    f = FileEntry(path="params_shard_0.bin", size=size, sha256="0" * 64)
    return RECORD.validate(dict(key=digest(inputs), kind=inputs["kind"], files=[f], inputs=inputs,
                                       toolchain=inputs["toolchain"], started_at=T0,
                                       finished_at=T0 + timedelta(seconds=seconds), seconds={}))  # fmt: skip


def older_toolchain(inputs: dict) -> dict:
    return {**inputs, "toolchain": {**inputs["toolchain"], "mlc_llm_version": "0.19.0"}}


def convert_of(model: str, quantization: str):
    return next(b for b in PLAN.convert_builds.values() if (b.model, b.quantization) == (model, quantization))


def test_nothing_known_gives_the_defaults() -> None:
    got = estimate(PLAN, [], CONFIGS)
    assert {got[k] for k in PLAN.convert_builds} == {DEFAULT_SECONDS["convert"]}
    assert {got[k] for k in PLAN.lib_builds} == {DEFAULT_SECONDS["library"]}


def test_the_same_build_under_another_toolchain_takes_what_it_took() -> None:
    b = convert_of("base", "q4f16_1")
    got = estimate(PLAN, [record(older_toolchain(b.inputs), 321)], CONFIGS)
    assert got[b.key] == 321


def test_another_quantization_of_the_same_source_is_scaled_by_its_bits() -> None:
    q0 = convert_of("base", "q0f16")
    got = estimate(PLAN, [record(older_toolchain({**q0.inputs, "quantization": "q0f16", "model_type": "x"}), 400)],
                   CONFIGS)  # fmt: skip
    assert got[convert_of("base", "q4f16_1").key] == 400 * 4 / 16


def test_other_models_give_a_rate_per_weight_byte() -> None:
    """tune's conversions ran before, at 1 s per 1,000 bytes written; base's are estimated from its size."""
    tune = convert_of("tune", "q4f16_1")
    other = {**tune.inputs, "source": {"kind": "hf", "ref": "org/other", "identity": "9" * 40}}
    got = estimate(PLAN, [record(older_toolchain(other), 5, size=5000)], CONFIGS)
    params = parameters(CONFIGS["base"])
    assert params == 2 * 1000 * 128 + 2 * (4 * 128 * 128 + 3 * 128 * 512)
    assert abs(got[convert_of("base", "q4f16_1").key] - params * 4 / 8 / 1000) < 1e-6
    assert bits_per_weight("q0f32") == 32 and bits_per_weight("q3f16_1") == 3


def test_a_library_takes_what_its_architecture_took_on_that_target_else_the_targets_median() -> None:
    libs = list(PLAN.lib_builds.values())
    cpu = [lb for lb in libs if lb.device.name == "cpu"]
    cuda = [lb for lb in libs if lb.device.name == "cuda"]
    history = [record(older_toolchain(cpu[0].inputs), 120), record(older_toolchain(cuda[0].inputs), 900)]
    other_arch = {**cuda[1].inputs, "model": {"hidden_size": 4096}}
    history += [record(older_toolchain(other_arch), 700), record(older_toolchain({**other_arch, "opt": "O2"}), 1100)]
    got = estimate(PLAN, history, CONFIGS)
    assert got[cpu[0].key] == 120 and got[cuda[0].key] == 900  # the very build, on an older toolchain
    assert got[cuda[1].key] == 900  # no q0f16 record of it on cuda: the median of cuda's 700, 900 and 1,100
    assert got[cpu[1].key] == 120  # the cpu target's only record
