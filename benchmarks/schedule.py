"""A simulated night of a farm: the real scheduler (mlc_farm.planning.schedule) in FIFO and critical-path order, against
the lower bound of any schedule (run by hand).

A catalog of fine-tunes: architectures from 1B to 70B parameters, a few models each, x quantizations x
devices on pools with N slots. Conversions take 5-90 min by model size, configs half a minute, compiles
2-20 min by target, each cell's check (a run and a fidelity pass on its device) 1-10 min by model size; the scheduler sees the expected durations, the builds take them +-25% (noise). The
bound is max(critical path, work per pool / slots of the pool). Several nights with different seeds.

    PYTHONPATH=. .venv/bin/python benchmarks/schedule.py [--seeds 5]
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlc_farm.matrix.cells import expand
from mlc_farm.matrix.load import parse_matrix
from mlc_farm.planning.kinds import all_builds
from mlc_farm.planning.plan import LibBuild, Plan, make_plan
from mlc_farm.planning.schedule import Order, Scheduler
from mlc_farm.planning.sources import ResolvedSource
from mlc_farm.toolchain.info import ToolchainInfo

# (name, parameters in billions, hidden size, layers): 5 fine-tunes of each.
ARCHS = [("1b", 1, 2048, 16), ("3b", 3, 3072, 28), ("7b", 7, 4096, 32), ("8b", 8, 4096, 36),
         ("14b", 14, 5120, 48), ("32b", 32, 5120, 64), ("70b", 70, 8192, 80)]  # fmt: skip
QUANTS = ["q4f16_1", "q4f32_1", "q0f16"]
# (device, target, pool, compile minutes)
DEVICES = [
    ("cuda-sm80", '{"kind":"cuda","arch":"sm_80"}', "cuda", 12), ("cuda-sm90", '{"kind":"cuda","arch":"sm_90a"}', "cuda", 14),
    ("rocm-gfx942", '{"kind":"rocm","mcpu":"gfx942"}', "rocm", 18), ("vulkan", "vulkan:generic", "cpu", 4),
    ("webgpu", "webgpu", "cpu", 6), ("android", "android", "cpu", 8),
]  # fmt: skip
SLOTS = {"weights": 4, "cuda": 4, "rocm": 2, "cpu": 4}
FAMILY = {"cuda": "cuda", "rocm": "rocm", "vulkan": "vulkan", "webgpu": "webgpu", "android": "android"}


def catalog() -> tuple[Plan, dict[str, float], dict[str, str]]:
    """The plan of the simulated matrix, each build's expected minutes, and its pool."""
    doc = {
        "quantizations": QUANTS,
        "weights_pool": "weights",
        "devices": [
            {"name": n, "family": FAMILY[n.split("-")[0]], "target": t, "pool": p,
             **({"cuda_archs": [t.split("sm_")[1].rstrip('"}')]} if "cuda" in n else {})}
            for n, t, p, _ in DEVICES
        ],
        "models": [
            {"id": f"m{a}-{i}", "source": {"hf": f"org/m{a}-{i}"}, "conv_template": "LM"} for a, *_ in ARCHS for i in range(5)
        ],
    }  # fmt: skip
    m = parse_matrix(yaml.safe_dump(doc), "sim.yaml").matrix
    size = {f"m{a}-{i}": (b, h, layers) for a, b, h, layers in ARCHS for i in range(5)}
    sources = {
        model: ResolvedSource(model=model, kind="hf", ref=f"org/{model}", identity=f"{n:040d}",
                              config={"model_type": "llama", "hidden_size": h, "num_hidden_layers": layers,
                                      "vocab_size": 128256, "intermediate_size": 4 * h})
        for n, (model, (_, h, layers)) in enumerate(size.items())
    }  # fmt: skip
    tc = ToolchainInfo(mlc_llm_version="0.20.0", mlc_llm_commit="a" * 40, tvm_version="0.22", tvm_commit="b" * 40)
    plan = make_plan(m, expand(m), sources, tc)
    minutes: dict[str, float] = {}
    for b in plan.convert_builds.values():
        minutes[b.key] = 5 + 85 * size[b.model][0] / 70
    for b in plan.config_builds.values():
        minutes[b.key] = 0.5
    compile_minutes = {n: c for n, _, _, c in DEVICES}
    for lb in plan.lib_builds.values():
        billions = size[lb.sources[0].model][0]
        minutes[lb.key] = min(20.0, max(2.0, compile_minutes[lb.device.name] * (0.6 + billions / 70)))
    for cb in plan.check_builds.values():
        minutes[cb.key] = 1 + 9 * size[cb.model][0] / 70
    pools = {k: "weights" for k in [*plan.convert_builds, *plan.config_builds]}
    pools |= {k: b.device.work_pool for k, b in [*plan.lib_builds.items(), *plan.check_builds.items()]}
    return plan, minutes, pools


def simulate(plan: Plan, expected: dict[str, float], actual: dict[str, float], pools: dict[str, str],
             order: Order) -> float:  # fmt: skip
    """The makespan of a night run by the real scheduler: start what it says, finish the earliest build."""
    s = Scheduler(plan, set(all_builds(plan)), SLOTS, lambda b: pools[b.key], expected, order)
    clock, running = 0.0, {}
    while True:
        for b, _ in s.starts():
            running[b.key] = clock + actual[b.key]
        if not running:
            return clock
        key = min(running, key=running.__getitem__)
        clock = running.pop(key)
        s.finish(key, True)


def bound(plan: Plan, actual: dict[str, float], pools: dict[str, str]) -> tuple[float, float, float]:
    """(lower bound, critical path, the busiest pool's work per slot): no schedule can beat the bound."""
    path = max(actual[k] for k in [*plan.convert_builds, *plan.config_builds])

    def ready(lb: LibBuild) -> float:
        return min(max(actual[s.convert], actual[s.config]) for s in lb.sources)

    path = max(path, *(ready(lb) + actual[lb.key] for lb in plan.lib_builds.values()))
    checked = {cb.library: actual[cb.key] for cb in plan.check_builds.values()}  # a check follows its library
    path = max(path, *(ready(lb) + actual[lb.key] + checked.get(lb.key, 0.0) for lb in plan.lib_builds.values()))
    work: dict[str, float] = {}
    for key, pool in pools.items():
        work[pool] = work.get(pool, 0.0) + actual[key]
    per_slot = max(w / SLOTS[p] for p, w in work.items())
    return max(path, per_slot), path, per_slot


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--weights-slots", type=int, default=SLOTS["weights"], help="conversions at once")
    args = parser.parse_args()
    SLOTS["weights"] = args.weights_slots
    plan, expected, pools = catalog()
    print(f"{len(plan.cells)} cells: {len(plan.convert_builds)} conversions, {len(plan.config_builds)} configs, "
          f"{len(plan.lib_builds)} libraries; slots {SLOTS}")  # fmt: skip
    print(
        f"{'seed':>4} {'bound min':>10} {'path':>8} {'work/slot':>10} {'FIFO':>8} {'÷bound':>7} {'crit.path':>10} {'÷bound':>7}"
    )
    ratios: dict[str, list[float]] = {"fifo": [], "critical-path": []}
    for seed in range(args.seeds):
        rng = random.Random(seed)
        actual = {k: v * rng.uniform(0.75, 1.25) for k, v in expected.items()}
        low, path, per_slot = bound(plan, actual, pools)
        spans = {order: simulate(plan, expected, actual, pools, order) for order in ratios}
        for order, span in spans.items():
            ratios[order].append(span / low)
        print(f"{seed:>4} {low:>10.0f} {path:>8.0f} {per_slot:>10.0f} {spans['fifo']:>8.0f} {spans['fifo'] / low:>7.2f} "
              f"{spans['critical-path']:>10.0f} {spans['critical-path'] / low:>7.2f}")  # fmt: skip
    for order, found in ratios.items():
        print(f"{order:>14}: makespan / bound: mean {statistics.mean(found):.3f}, worst {max(found):.3f}")


if __name__ == "__main__":
    main()
