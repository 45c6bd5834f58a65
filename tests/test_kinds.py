"""The build kinds' table: one record per kind, and every place that runs, names or places a build agrees with it."""

from __future__ import annotations

from typing import get_args

from mlc_farm.building import runners
from mlc_farm.planning.kinds import BY_NAME, KINDS, all_builds, by_kind, kind_of, label, on_device, reads
from mlc_farm.records.schema import Kind
from tests.test_plan import SOURCES, TC, matrix, plan_of

# A toolchain whose interpreter has transformers plans reference builds too: every kind is in this plan.
PLAN = plan_of(matrix(), SOURCES, TC.model_copy(update={"reference": "torch 2.5, transformers 4.46"}))


def test_every_kind_has_one_record_and_one_set_of_steps() -> None:
    assert [k.name for k in KINDS] == list(get_args(Kind))
    assert set(runners._STEPS) == set(BY_NAME)


def test_the_plan_has_every_kind_and_the_table_lists_each_build_once() -> None:
    kinds = by_kind(PLAN)
    assert all(kinds[k.name] for k in KINDS), {name: len(b) for name, b in kinds.items()}
    assert len(all_builds(PLAN)) == sum(len(b) for b in kinds.values())
    assert all(b.kind == name for name, builds in kinds.items() for b in builds.values())


def test_where_a_build_runs_agrees_with_its_kind() -> None:
    for b in all_builds(PLAN).values():
        device, model = on_device(b), reads(b)
        if kind_of(b).runs_on == "device":
            assert device is not None and model is None
        else:
            assert device is None and model is not None


def test_labels_name_the_build_and_a_shared_one_its_key() -> None:
    lib = next(iter(PLAN.lib_builds.values()))
    convert = next(iter(PLAN.convert_builds.values()))
    assert label(lib) == f"library {lib.device.name}/{lib.quantization} ({lib.key[:12]})"
    assert label(convert) == f"convert {convert.model}/{convert.quantization}"
    assert len({label(b) for b in all_builds(PLAN).values()}) == len(all_builds(PLAN))
