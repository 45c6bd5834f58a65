"""Pure scheduling rules, owned by one object and tested without Prefect:

- a build whose key has a record is reused, never run (unless forced);
- convert and config builds can start at once;
- a library waits for the first of its models whose convert and config builds both succeeded (any will do:
  same architecture), so one model's failure does not sink a shared library;
- a library none of whose models can provide weights is never started;
- at most `limit` builds run at once (embedded mode); in farm mode the pools' own limits apply.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Union

from mlc_farm.plan import ConfigBuild, ConvertBuild, LibBuild, ModelBuilds, Plan

Build = Union[ConvertBuild, ConfigBuild, LibBuild]  # noqa: UP007 (a runtime alias)


def to_build(plan: Plan, have: Callable[[str], bool], force: bool) -> set[str]:
    """The keys of the plan that must run: those with no record, or all of them when forced."""
    return set(plan.all_keys()) if force else {k for k in plan.all_keys() if not have(k)}


class Scheduler:
    def __init__(self, plan: Plan, todo: set[str], limit: int | None = None):
        self.limit = limit
        self.ok: set[str] = set(plan.all_keys()) - todo  # reused: usable from the start
        self.failed: set[str] = set()
        self.running: set[str] = set()
        # Configs first: seconds each, while a conversion can take hours.
        weights: list[Build] = [*plan.config_builds.values(), *plan.convert_builds.values()]
        self.ready: list[tuple[Build, ModelBuilds | None]] = [(b, None) for b in weights if b.key in todo]
        self.waiting: list[LibBuild] = [lb for lb in plan.lib_builds.values() if lb.key in todo]

    def _weights_for(self, lb: LibBuild) -> ModelBuilds | None:
        return next((b for b in lb.sources if b.convert in self.ok and b.config in self.ok), None)

    def starts(self) -> list[tuple[Build, ModelBuilds | None]]:
        """The builds to start now (with the model a library compiles from); they count as running."""
        for lb in list(self.waiting):
            if builds := self._weights_for(lb):
                self.ready.append((lb, builds))
                self.waiting.remove(lb)
        free = len(self.ready) if self.limit is None else max(0, self.limit - len(self.running))
        started, self.ready = self.ready[:free], self.ready[free:]
        self.running |= {b.key for b, _ in started}
        return started

    def finish(self, key: str, ok: bool) -> None:
        self.running.discard(key)
        (self.ok if ok else self.failed).add(key)

    def never_started(self) -> list[LibBuild]:
        """Libraries left waiting once nothing runs: none of their models' weights could be built."""
        return list(self.waiting) if not self.running and not self.ready else []
