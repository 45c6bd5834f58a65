"""A month of nightlies on a simulated catalog (run by hand): conversion hours with convert keys that hold the
toolchain version against keys that hold its conversion fingerprint, and what the twins themselves cost.

The catalog: --models models (a few architectures, sizes from 0.5B to 70B: 5 to 90 minutes of conversion per
quantization) x 4 quantizations. Every night brings a new MLC nightly; on a few nights its conversion code
changed for one architecture (re-converting that architecture's sources); a few new models arrive each week.
The twins cost --twin-seconds per conversion class per toolchain, on a CPU. The baseline, in the same run, is
the version-keyed month: every night converts everything.

    .venv/bin/python benchmarks/fingerprints.py [--models 100] [--nights 30] [--seed 0]
"""

from __future__ import annotations

import argparse
import random

ARCHITECTURES = ["llama", "qwen2", "qwen3", "mistral", "gemma2", "phi3"]
QUANTIZATIONS = ["q4f16_1", "q4f32_1", "q0f16", "q3f16_1"]
SIZES_B = [0.5, 1, 1.5, 3, 7, 8, 14, 32, 70]


def minutes(size_b: float) -> float:
    """convert_weight of one quantization: 5 minutes at 0.5B to 90 at 70B (roughly linear in size)."""
    return 5 + 85 * (size_b - 0.5) / 69.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=100)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--changes", type=int, default=3, help="nights whose conversion code changed")
    parser.add_argument("--new-per-week", type=int, default=3)
    parser.add_argument("--twin-seconds", type=float, default=15.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    models = [(rng.choice(ARCHITECTURES), rng.choice(SIZES_B)) for _ in range(args.models)]
    changed = dict(
        zip(rng.sample(range(1, args.nights), args.changes), rng.choices(ARCHITECTURES, k=args.changes), strict=True)
    )
    version_hours = fingerprint_hours = twin_hours = 0.0
    reconverted = 0
    for night in range(args.nights):
        if night and night % 7 == 0:
            models += [(rng.choice(ARCHITECTURES), rng.choice(SIZES_B)) for _ in range(args.new_per_week)]
            new = models[-args.new_per_week :]
        else:
            new = [] if night else models
        every = sum(minutes(size) for _, size in models) * len(QUANTIZATIONS) / 60
        version_hours += every
        arch = changed.get(night)
        redo = [m for m in models if m[0] == arch and m not in new] if arch else []
        reconverted += len(redo)
        fingerprint_hours += sum(minutes(size) for _, size in [*new, *redo]) * len(QUANTIZATIONS) / 60
        classes = len({a for a, _ in models}) * len(QUANTIZATIONS)
        twin_hours += classes * args.twin_seconds / 3600
    print(f"{args.nights} nightlies, {len(models)} models at the end x {len(QUANTIZATIONS)} quantizations, "
          f"a new toolchain every night, conversion code changed on {args.changes} nights "
          f"({', '.join(f'night {n}: {a}' for n, a in sorted(changed.items()))})")  # fmt: skip
    print(f"version keys (baseline):  {version_hours:9.1f} conversion hours")
    print(f"fingerprint keys:         {fingerprint_hours:9.1f} conversion hours ({reconverted} sources re-converted "
          f"on change nights), {fingerprint_hours / version_hours:.3f}x the baseline")  # fmt: skip
    print(f"  twins:                  {twin_hours:9.2f} CPU hours ({twin_hours / version_hours:.4f}x the baseline)")


if __name__ == "__main__":
    main()
