"""Pure scheduling rules, owned by one object and tested without Prefect:

- a build whose key has a record is reused, never run (unless forced);
- convert and config builds can start at once;
- a library waits for the first of its models whose convert and config builds both succeeded (any will do:
  same architecture), so one model's failure does not sink a shared library;
- a library none of whose models can provide weights is never started;
- a fidelity reference (transformers, from the source) can start at once; a cell's check waits for its
  library, its weights and config and its reference, and is never started when one of them failed;
- each build runs on a pool (the weights pool, or its device's pool), with at most that pool's slots at once;
  a pool never idles while work for it is ready;
- critical-path order: of the ready builds of a pool, the one with the longest remaining path starts first:
  its expected time plus the longest waiting library that will compile from it (a library compiles from its
  first model whose builds have not failed) and the backlog of that library's pool, so a 70B conversion and
  the libraries behind it do not start last and set the length of the night, and the GPU pools are fed
  first. `order="fifo"` keeps plan order (to compare against; benchmarks/schedule.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

from mlc_farm.parallel import each
from mlc_farm.planning.kinds import KINDS, Build, DeviceBuild, all_builds, on_device
from mlc_farm.planning.plan import CheckBuild, LibBuild, ModelBuilds, Plan

Order = Literal["critical-path", "fifo"]


def to_build(plan: Plan, have: Callable[[str], bool], force: bool, workers: int) -> set[str]:
    """The keys of the plan that must run: those with no record, or all of them when forced. The look-ups
    (a GET each on S3) run `workers` at a time (the store's `readers`)."""
    keys = all_builds(plan)
    if force:
        return set(keys)
    return {key for key, found in zip(keys, each(have, keys, workers), strict=True) if not found}


class Scheduler:
    def __init__(
        self,
        plan: Plan,
        todo: set[str],
        slots: Mapping[str, int | None] | None = None,
        pool_of: Callable[[Build], str] = lambda _b: "local",
        durations: Mapping[str, float] | None = None,
        order: Order = "critical-path",
    ):
        """`slots`: builds at once per pool (a pool not named, or None, has no limit of ours)."""
        self.slots, self.pool_of, self.order = dict(slots or {}), pool_of, order
        self.durations = dict(durations or {})
        self.ok: set[str] = set(all_builds(plan)) - todo  # reused: usable from the start
        self.failed: set[str] = set()
        self.running: dict[str, str] = {}  # key -> pool
        # Plan order (quick kinds first: configs take seconds) breaks ties, and is the whole order in "fifo".
        weights: list[Build] = [
            b for kind in sorted(KINDS, key=lambda k: not k.quick) if kind.runs_on == "weights"
            for b in kind.builds(plan).values()
        ]  # fmt: skip
        self.ready: list[tuple[Build, ModelBuilds | None]] = [(b, None) for b in weights if b.key in todo]
        self.waiting: list[LibBuild] = [lb for lb in plan.lib_builds.values() if lb.key in todo]
        self.checks: list[CheckBuild] = [cb for cb in plan.check_builds.values() if cb.key in todo]

    def _weights_for(self, lb: LibBuild) -> ModelBuilds | None:
        return next((b for b in lb.sources if b.convert in self.ok and b.config in self.ok), None)

    def _remaining_path(self) -> dict[str, float]:
        """Expected time of each ready build plus what waits behind it: a library that will compile from it
        takes its own time, and cannot end before its pool has worked through the libraries not started yet
        (their time / the pool's slots); a check waits for its library, its model's weights and its reference
        (a reference check first waits for the checks it is the reference of). So the conversions that feed a
        loaded pool, or that many checks wait for, go first, longest first."""
        backlog: dict[str, float] = {}
        device_work = [*self.waiting, *self.checks, *(b for b, _ in self.ready if on_device(b))]
        for b in device_work:
            pool = self.pool_of(b)
            backlog[pool] = backlog.get(pool, 0.0) + self.durations.get(b.key, 0.0)
        load = {pool: work / slots if (slots := self.slots.get(pool)) else 0.0 for pool, work in backlog.items()}
        after: dict[str, float] = {}
        # Measured checks before reference checks: a reference check's tail includes the checks that wait for it.
        for cb in sorted(self.checks, key=lambda c: c.role == "reference"):
            tail = self.durations.get(cb.key, 0.0) + after.get(cb.key, 0.0) + load.get(self.pool_of(cb), 0.0)
            for key in cb.depends_on():
                after[key] = max(after.get(key, 0.0), tail)
        for lb in self.waiting:
            source = next((s for s in lb.sources if s.convert not in self.failed and s.config not in self.failed), None)
            if source:
                tail = self.durations.get(lb.key, 0.0) + after.get(lb.key, 0.0) + load[self.pool_of(lb)]
                for key in (source.convert, source.config):
                    after[key] = max(after.get(key, 0.0), tail)
        return {b.key: self.durations.get(b.key, 0.0) + after.get(b.key, 0.0) for b, _ in self.ready}

    def _free(self, pool: str) -> float:
        limit = self.slots.get(pool)
        return float("inf") if limit is None else limit - sum(p == pool for p in self.running.values())

    def starts(self) -> list[tuple[Build, ModelBuilds | None]]:
        """The builds to start now (with the model a library compiles from); they count as running."""
        for lb in list(self.waiting):
            if builds := self._weights_for(lb):
                self.ready.append((lb, builds))
                self.waiting.remove(lb)
        for cb in list(self.checks):
            if all(k in self.ok for k in cb.depends_on()):
                self.ready.append((cb, cb.builds))
                self.checks.remove(cb)
        if self.order == "critical-path":  # a stable sort: equal paths keep the order they became ready in
            path = self._remaining_path()
            self.ready.sort(key=lambda item: -path[item[0].key])
        started, left = [], []
        free = {pool: self._free(pool) for pool in {self.pool_of(b) for b, _ in self.ready}}
        for item in self.ready:
            pool = self.pool_of(item[0])
            if free[pool] > 0:
                free[pool] -= 1
                started.append(item)
                self.running[item[0].key] = pool
            else:
                left.append(item)
        self.ready = left
        return started

    def finish(self, key: str, ok: bool) -> None:
        self.running.pop(key, None)
        (self.ok if ok else self.failed).add(key)

    def never_started(self) -> list[DeviceBuild]:
        """Builds left waiting once nothing runs: libraries none of whose models' weights could be built, checks
        one of whose inputs failed."""
        return [*self.waiting, *self.checks] if not self.running and not self.ready else []
