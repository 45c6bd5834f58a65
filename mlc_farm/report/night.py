"""The report of a night: wall time, build time and utilisation per pool, and the longest chain of builds that
waited for each other (what set the length of the night, and what the critical-path order works on)."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from mlc_farm.formatting import clock
from mlc_farm.planning.plan import Plan

Span = tuple[float, float]  # (start, end), seconds since the run started


class PoolUse(BaseModel):
    pool: str
    slots: int | None
    builds: int
    busy_seconds: float
    utilisation: float | None  # busy / (slots x wall); None for a pool without a limit of ours


class NightReport(BaseModel):
    wall_seconds: float
    pools: list[PoolUse]
    longest_chain: list[str]
    longest_chain_seconds: float

    def markdown(self) -> str:
        lines = [
            f"Wall time {clock(self.wall_seconds)}; longest chain {clock(self.longest_chain_seconds)}: "
            + (" -> ".join(self.longest_chain) or "none"),
            "",
            "| pool | slots | builds | build time | utilisation |",
            "|---|---|---|---|---|",
        ]
        for p in self.pools:
            use = f"{p.utilisation:.0%}" if p.utilisation is not None else "-"
            lines.append(f"| {p.pool} | {p.slots or '-'} | {p.builds} | {clock(p.busy_seconds)} | {use} |")
        return "\n".join(lines)

    def line(self) -> str:
        pools = ", ".join(
            f"{p.pool} {clock(p.busy_seconds)}" + (f" ({p.utilisation:.0%})" if p.utilisation is not None else "")
            for p in self.pools
        )
        chain = " -> ".join(self.longest_chain)
        return f"wall {clock(self.wall_seconds)}; build time {pools}; longest chain {clock(self.longest_chain_seconds)}: {chain}"


def night_report(
    plan: Plan,
    spans: Mapping[str, Span],
    pools: Mapping[str, str],
    slots: Mapping[str, int | None],
    labels: Mapping[str, str],
    wall: float,
) -> NightReport:
    """From the builds that ran (`spans`), each on its pool: per-pool use, and the longest chain: a library
    and the convert or config build it waited for."""
    use = []
    for pool in sorted({pools[k] for k in spans}):
        mine = [spans[k] for k in spans if pools[k] == pool]
        busy = sum(end - start for start, end in mine)
        limit = slots.get(pool)
        utilisation = busy / (limit * wall) if limit and wall > 0 else None
        use.append(PoolUse(pool=pool, slots=limit, builds=len(mine), busy_seconds=busy, utilisation=utilisation))
    chains: list[tuple[float, list[str]]] = [(end - start, [labels[k]]) for k, (start, end) in spans.items()]
    for key, lb in plan.lib_builds.items():
        if key not in spans:
            continue
        start, end = spans[key]
        # It compiled from the first of its models whose convert and config builds were both done: that model's
        # later-ending build is what it waited for.
        ready = [
            (max(spans[src.convert][1], spans[src.config][1]), n)
            for n, src in enumerate(lb.sources)
            if src.convert in spans
            and src.config in spans
            and max(spans[src.convert][1], spans[src.config][1]) <= start
        ]
        if ready:
            src = lb.sources[min(ready)[1]]
            gate = max((src.convert, src.config), key=lambda k: spans[k][1])
            chains.append((end - spans[gate][0], [labels[gate], labels[key]]))
    length, chain = max(chains, default=(0.0, []))
    return NightReport(wall_seconds=wall, pools=use, longest_chain=chain, longest_chain_seconds=length)
