"""`mlc-farm plan`: the builds a matrix needs and what the store has."""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from mlc_farm.building.preflight import preflight
from mlc_farm.cli._app import app
from mlc_farm.cli._errors import command
from mlc_farm.cli._options import Format, MatrixOpt, ModelOpt, StoreOpt
from mlc_farm.cli._output import out
from mlc_farm.errors import BadInput, StoreError
from mlc_farm.matrix.schema import Accepted, LoadedMatrix
from mlc_farm.planning import sources
from mlc_farm.planning.fingerprints import fingerprints
from mlc_farm.planning.kinds import BY_NAME, all_builds, by_kind, kind_of
from mlc_farm.planning.plan import Plan, conversion_classes, make_plan
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.records.reads import load_record
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import toolchain_path
from mlc_farm.terminal import name_columns
from mlc_farm.toolchain.info import ToolchainInfo, of_pools
from mlc_farm.toolchain.probe import probe_here


@dataclass
class Planned:
    """A matrix's plan and what the store has of it: what `plan` prints, as a table or as JSON."""

    loaded: LoadedMatrix
    store: ArtifactStore
    pools: list[str]
    toolchain: ToolchainInfo
    probes: dict[str, str]  # pool -> which probe it was checked with
    accepted: Accepted
    sources: dict[str, ResolvedSource]
    plan: Plan
    in_store: dict[str, bool | None]  # None: not asked (the toolchain is unknown)
    cannot: list[str]  # what the pools cannot build, sources that are invalid: exit 2 after the plan is shown

    def counts(self) -> dict[str, int]:
        p = self.plan
        counts = {"cells": len(p.cells), "unresolved_cells": sum(pc.problem is not None for pc in p.cells)}
        for kind, builds in by_kind(p).items():
            counts[f"{kind}_builds"] = len(builds)
            counts[f"{kind}_builds_in_store"] = sum(bool(self.in_store[k]) for k in builds)
        counts["libraries_shared"] = sum(len(lb.users) - 1 for lb in p.lib_builds.values())
        return counts


def planned(matrix: Path, model: list[str] | None, store: str | None) -> Planned:
    probes: dict[str, str] = {}

    def probe(st: ArtifactStore, pools: list[str]) -> ToolchainInfo:
        tc, found = _pool_probes(st, pools, probe_here(pools))
        probes.update(found)
        return tc

    pre = preflight(str(matrix), model, None, None, store, probe, building=False)
    loaded, cells, st, tc, cannot = pre.loaded, pre.cells, pre.store(), pre.toolchain, list(pre.unbuildable)
    wanted = {c.model for c in cells}
    srcs = sources.resolve(loaded, [m for m in loaded.matrix.models if m.id in wanted])
    cannot += [s.error for s in srcs.values() if s.invalid and s.error]
    classes = conversion_classes(loaded.matrix, cells, srcs) if tc.known else {}
    p = make_plan(loaded.matrix, cells, srcs, tc, fingerprints(st, tc, classes) if classes else {})
    # With an unknown toolchain the keys that hold it are not the keys a build would have: the store is not asked.
    in_store = {k: (load_record(st, k) is not None) if tc.known else None for k in all_builds(p)}
    return Planned(loaded, st, pre.pools, tc, probes, pre.accepted, srcs, p, in_store, cannot)


@command(app)
def plan(
    matrix: MatrixOpt = Path("matrix.yaml"),
    model: ModelOpt = None,
    store: StoreOpt = None,
    fmt: Annotated[Format, typer.Option("--format", help="How to print the plan.")] = Format.table,
    explain: Annotated[
        bool, typer.Option("--explain", help="For every build to do, what differs from the closest stored build.")
    ] = False,
) -> None:
    """Show the builds a matrix needs, what they share, and how many the store already has."""
    found = planned(matrix, model, store)
    if fmt is Format.json:
        print(json.dumps(_as_json(found), indent=2))
    else:
        _print_plan(found, explain)
    if found.cannot:
        raise BadInput("\n".join(found.cannot))


def _as_json(found: Planned) -> dict[str, Any]:
    p, in_store, tc = found.plan, found.in_store, found.toolchain
    weights = {
        f"{kind}_builds": [
            {"key": b.key, "model": b.model, "quantization": b.quantization, "in_store": in_store[b.key]}
            for b in builds.values()
        ]
        for kind, builds in (("convert", p.convert_builds), ("config", p.config_builds))
    }
    libraries = [
        {
            "key": lb.key,
            "quantization": lb.quantization,
            "device": lb.device.name,
            "target": lb.device.target,
            "host": lb.device.host_triple,
            "pool": lb.device.work_pool,
            "sources": [b.model_dump() for b in lb.sources],
            "cells": [c.model_dump() for c in lb.users],
            "in_store": in_store[lb.key],
        }
        for lb in p.lib_builds.values()
    ]
    checks = [
        {
            "key": k,
            "cell": f"{b.model}/{b.quantization}/{b.device.name}",
            "role": b.role,
            "reference": b.reference,
            "thresholds": b.thresholds.model_dump(),
            "in_store": in_store[k],
        }
        for k, b in p.check_builds.items()
    ]
    return {
        "matrix": found.loaded.file,
        "store": found.store.url,
        "toolchain": {**tc.model_dump(exclude={"names"}), "known": tc.known},
        "capabilities_checked": tc.known,
        "names_checked_against": found.accepted.source,
        "counts": found.counts(),
        "sources": {k: v.model_dump(exclude={"config"}) for k, v in found.sources.items()},
        **weights,
        "library_builds": libraries,
        "reference_builds": [
            {"key": k, "model": b.model, "in_store": in_store[k]} for k, b in p.reference_builds.items()
        ],
        "check_builds": checks,
        "cells": [pc.model_dump() for pc in p.cells],
        "cannot_build": found.cannot,
    }


def _print_plan(found: Planned, explain: bool) -> None:
    p, tc, counts = found.plan, found.toolchain, found.counts()
    out.print(Text(f"toolchain: {tc.describe()}; names checked against {found.accepted.source}"))
    out.print(Text("pools checked with: " + "; ".join(f"{pool}: {how}" for pool, how in found.probes.items())))
    out.print(
        _plan_table(p, found.loaded, found.in_store, title=f"plan for {found.loaded.file}", wide=out.width >= 120)
    )
    for src in found.sources.values():
        if src.error and not src.invalid:
            out.print(Text.assemble(("unresolved source", "red"), f" {src.model}: {src.error}"))

    def stored(kind: str) -> str:
        return f"{counts[f'{kind}_builds_in_store']} in store" if tc.known else "store not asked"

    out.print(
        f"{counts['cells']} cells -> "
        + ", ".join(f"{counts[f'{k}_builds']} {k} builds ({stored(k)})" for k in BY_NAME)
        + f"; {counts['libraries_shared']} cells reuse a library built for another model of the same architecture"
    )
    if not tc.known:
        out.print(
            "the toolchain is unknown (why: the first line): every key holds the toolchain's identity, so these "
            "keys are not the ones a build would have and what the store has cannot be told; fix MLC_FARM_MLC_LLM "
            "(`mlc-farm toolchain` says what is wrong)"
        )
        out.print(
            "pool capabilities were not checked (no toolchain here): a target a pool cannot build fails at compile time"
        )
    if explain and tc.known:
        _why_to_build(found.store, p, {k: bool(v) for k, v in found.in_store.items()})
        _how_fidelity(p)
        out.print("\nwhat each pool can compile:", highlight=False)
        for pool in found.pools:
            out.print(f"  {pool}: {'; '.join(tc.can_build(pool).lines())}", highlight=False, soft_wrap=True)


def _how_fidelity(p: Plan) -> None:
    """What each cell's fidelity will be measured against, and the bound it must meet."""
    out.print("\nfidelity of each cell:", highlight=False)
    for pc in p.cells:
        c = pc.cell
        if pc.problem:
            continue
        cb = p.check_builds.get(pc.check or "")
        if cb is None:
            how = f"not measured: {pc.no_fidelity}"
        elif cb.role == "reference":
            how = f"the reference of {c.model} on {c.device} (its own pass)"
        elif cb.reference in p.reference_builds:
            how = f"against {p.reference_builds[cb.reference].tools} in float32; {cb.thresholds.describe()}"
        else:
            ref = p.check_builds[cb.reference or ""]
            how = f"against the {ref.quantization} library on {c.device}; {cb.thresholds.describe()}"
        out.print(f"  {c.model}/{c.quantization}/{c.device}: {how}", highlight=False, soft_wrap=True, markup=False)


def _why_to_build(st: ArtifactStore, p: Plan, in_store: dict[str, bool]) -> None:
    """Why each build is to do: what differs from the closest build in the store."""
    from mlc_farm.catalog.history import toolchain_name
    from mlc_farm.planning.explain import closest_build
    from mlc_farm.records.reads import all_records

    records = [r for _, r in all_records(st)]
    builds = [(kind_of(b).label(b), k, b.inputs) for k, b in all_builds(p).items()]
    for key, b in p.convert_builds.items():
        fp = b.inputs["toolchain"].get("conversion_fingerprint")
        done = load_record(st, key) if in_store[key] and fp else None
        if done is not None and done.toolchain != b.toolchain:
            out.print(
                f"convert {b.model}/{b.quantization} {key[:12]} reused: conversion unchanged under "
                f"{toolchain_name(b.toolchain)} (fingerprint {fp[:12]} = that of "
                f"{toolchain_name(done.toolchain)}, which converted it)",
                highlight=False,
                soft_wrap=True,
            )
    todo = [(label, key, inputs) for label, key, inputs in builds if not in_store[key]]
    if not builds:
        out.print("\nno build was planned: every cell is unresolved or cannot be built (see above)")
    else:
        out.print(f"\nwhy {len(todo)} builds are to do:" if todo else "\nnothing to do: every build is in the store")
    for label, key, inputs in todo:
        why = closest_build(key, inputs, records)
        than = f" (compared with {why.closest[:12]}, built {why.built_at})" if why.closest else ""
        note = f" ({p.convert_builds[key].identity_note})" if key in p.convert_builds else ""
        out.print(f"{label} {key[:12]}{than}{note}:", highlight=False, soft_wrap=True)
        for change in why.changes:
            out.print(f"  {change}", highlight=False, soft_wrap=True, markup=False)


_STEPS = ("convert", "config", "library", "check")


def _plan_table(p: Plan, loaded: LoadedMatrix, in_store: dict[str, bool | None], title: str, wide: bool) -> Table:
    """One row per cell, its names whole at any width. Wide: each build's key and whether the store has it;
    narrow (an 80-column terminal), one column saying what is to build (`plan --json` has the keys)."""
    t = Table(title=title)
    cells = [pc.cell for pc in p.cells]
    pools = [loaded.matrix.device(c.device).work_pool for c in cells]
    name_columns(
        t,
        {
            "model": [c.model for c in cells],
            "quant": [c.quantization for c in cells],
            "device": [c.device for c in cells],
            "pool": pools,
        },
    )
    for col in _STEPS if wide else ("builds",):
        t.add_column(col, overflow="fold")

    def show(key: str | None) -> Text:
        if key is None:
            return Text("-")
        if in_store[key] is None:
            return Text.assemble(f"{key[:12]} ", ("unknown", "yellow"))
        return Text.assemble(f"{key[:12]} ", ("in store", "cyan") if in_store[key] else ("to build", "yellow"))

    def builds(keys: tuple[str | None, ...]) -> Text:
        todo = [step for step, key in zip(_STEPS, keys, strict=True) if key and in_store[key] is not True]
        unknown = any(key and in_store[key] is None for key in keys)
        if not todo:
            return Text("in store", "cyan")
        return Text(("unknown: " if unknown else "to build: ") + ", ".join(todo), "yellow")

    for pc, pool in zip(p.cells, pools, strict=True):
        c, keys = pc.cell, (pc.convert, pc.config, pc.library, pc.check)
        if pc.problem:
            t.add_row(c.model, c.quantization, c.device, pool, Text("unresolved", "red"), *("-",) * (3 if wide else 0))
        else:
            t.add_row(c.model, c.quantization, c.device, pool, *(map(show, keys) if wide else (builds(keys),)))
    return t


def _pool_probes(st: ArtifactStore, pools: list[str], here: ToolchainInfo) -> tuple[ToolchainInfo, dict[str, str]]:
    """What each pool can build is its own probe's (`toolchains/<pool>.json`, written by the farm's
    probe-toolchain runs) where the store has one: this machine's tools say nothing of a ROCm pool's. With every
    pool's stored probe, the plan is the farm's (its toolchains and keys); else this machine's, with the stored
    pools' capabilities. Also, for each pool, which probe was used."""
    stored = {}
    for pool in pools:
        with contextlib.suppress(StoreError, ValidationError):
            if (doc := st.read_json(toolchain_path(pool))) is not None:
                stored[pool] = ToolchainInfo.model_validate(doc)
    said = {p: f"its stored probe ({toolchain_path(p)})" if p in stored else "this machine's probe" for p in pools}
    if stored and len(stored) == len(pools) and all(t.known for t in stored.values()):
        return of_pools(stored, pools[0]), said
    caps = {p: here.can_build(p) for p in pools} | {p: t.capabilities for p, t in stored.items()}
    return here.model_copy(update={"pool_capabilities": caps}), said
