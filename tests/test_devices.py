"""The device registry (mlc_farm/devices.py) is the one place of a family's facts: each record is consistent,
agrees with what the toolchain (its double, after shared/mlc-reference) accepts, has its pool templates, and
is what the README's checklist names."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from mlc_farm.devices import FAMILIES, GENERIC_HOST, of_target
from mlc_farm.farm.pools import POOLS
from tests.helpers import ROOT


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_each_family_is_whole(name: str) -> None:
    f = FAMILIES[name]
    assert re.fullmatch(r"[a-z0-9]{1,8}", f.lib_ext) and f.targets and f.mlc_device
    assert all(of_target(t) is f for t in f.targets)  # each of its targets builds for it, and only for it
    assert all(of_target(f"{kind} -keys=x") is f for kind in f.target_kinds)
    assert re.fullmatch(r"[a-z0-9_]+(-[a-z0-9_.]+){1,3}", f.default_host)
    assert (f.runtime_device is None) == (f.missing_here() == f"no {name} device here")
    for pool_type in ("docker", "kubernetes"):
        assert (POOLS / f"{pool_type}-{f.pool_template}.json").is_file()


def test_the_registry_covers_what_the_toolchain_accepts() -> None:
    ask = "import json; from mlc_llm.__main__ import LOCAL_DEVICES as L, PRESETS as P, TARGET_KINDS as T; print(json.dumps([L, P, T]))"
    done = subprocess.run([sys.executable, "-c", ask], capture_output=True, text=True, check=True)  # the double
    LOCAL_DEVICES, PRESETS, TARGET_KINDS = json.loads(done.stdout)

    assert all(of_target(preset) for preset in PRESETS)  # every preset builds for a family
    assert all(of_target(device) for device in LOCAL_DEVICES if device != "auto")
    assert {k for f in FAMILIES.values() for k in f.target_kinds} == set(TARGET_KINDS)
    assert of_target('{"kind":"cuda","arch":"sm_90a"}') is FAMILIES["cuda"] and of_target("tpu") is None
    assert FAMILIES["metal"].default_host != GENERIC_HOST  # the one family whose host is not Linux x86-64


def test_the_contributing_checklist_names_the_files_a_new_family_touches() -> None:
    text = (ROOT / "docs" / "contributing.md").read_text()
    section = text.split("**Add a device family**", 1)[1].split("\n\n", 1)[0]
    named = re.findall(r"`([\w./-]+\.(?:py|json|yaml|cuda|rocm)|[\w./-]+/)`", section)
    assert "mlc_farm/devices.py" in named
    for path in named:
        assert (ROOT / path.replace("<type>-<template>.json", "")).exists() or "<" in path, path
