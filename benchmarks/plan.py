"""Plan time, store look-ups and a no-op nightly over a generated 1,000-cell matrix (run by hand).

50 tiny local models x 5 quantizations x 4 devices. The store is filled with a build record for every key
of the plan (as if everything had been built), then the real nightly flow runs in this process with
Prefect's temporary server and the toolchain double (tests/double), and must build nothing.
Baselines, measured in the same run: the bare look-ups (one os.stat per record) the no-op run cannot
avoid, and an empty flow run (Prefect's temporary server start and one flow run that does nothing).

    PYTHONPATH=tests/double:. .venv/bin/python benchmarks/plan.py [--models 50]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
QUANTS = ["q4f16_1", "q0f16", "q4f32_1", "q3f16_1", "q0f32"]
DEVICES = [
    {"name": "cpu", "family": "cpu", "target": "llvm"},
    {"name": "vulkan", "family": "vulkan", "target": "vulkan:generic"},
    {"name": "cuda-sm90", "family": "cuda", "target": '{"kind":"cuda","arch":"sm_90a"}'},
    {"name": "rocm-gfx942", "family": "rocm", "target": '{"kind":"rocm","mcpu":"gfx942"}'},
]


def timed(label: str, results: dict[str, float]):
    class _T:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *exc):
            results[label] = time.perf_counter() - self.t

    return _T()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=50)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mlc-farm-bench-"))
    os.environ.setdefault("PREFECT_HOME", str(work / "prefect"))
    os.environ.update(DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false", PREFECT_LOGGING_LEVEL="WARNING")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests" / "double"), str(ROOT)])
    sys.path.insert(0, str(ROOT))

    from flows.nightly import nightly_build
    from mlc_farm import sources, toolchain
    from mlc_farm.catalog import BuildRecord, FileEntry, FitCheck, RunCheck, Validation, load_record, now
    from mlc_farm.matrix import expand, load_matrix
    from mlc_farm.plan import make_plan
    from mlc_farm.store import open_store
    from mlc_farm.store.layout import record_path
    from mlc_farm.tiny_model import write_tiny_llama

    base = write_tiny_llama(work / "models" / "m000", seed=0)
    for i in range(1, args.models):  # same architecture, different weights: what a catalog of fine-tunes is
        d = work / "models" / f"m{i:03d}"
        d.mkdir(parents=True)
        for f in base.iterdir():
            (d / f.name).write_bytes(f.read_bytes() if f.name != "config.json" else f.read_bytes() + b" " * i)
    doc = {
        "quantizations": QUANTS,
        "devices": DEVICES,
        "models": [
            {"id": f"model-{i:03d}", "source": {"path": f"models/m{i:03d}"}, "conv_template": "LM"}
            for i in range(args.models)
        ],
    }
    matrix_path = work / "matrix.yaml"
    matrix_path.write_text(yaml.safe_dump(doc))
    store = open_store(str(work / "store"))

    t: dict[str, float] = {}
    with timed("load + validate", t):
        loaded = load_matrix(matrix_path)
    with timed("expand", t):
        cells = expand(loaded.matrix)
    with timed("probe toolchain", t):
        tc = toolchain.probe()
    with timed("resolve sources (hash files)", t):
        srcs = sources.resolve(loaded, loaded.matrix.models)
    with timed("plan (keys)", t):
        plan = make_plan(loaded.matrix, cells, srcs, tc)
    keys = plan.all_keys()
    with timed("store look-ups, empty store", t):
        missing = sum(load_record(store, k) is None for k in keys)

    blob = work / "blob"
    blob.write_bytes(b"x")
    entry = FileEntry(path="mlc-chat-config.json", size=1, sha256=__import__("hashlib").sha256(b"x").hexdigest())
    store.put_blob(blob, entry.sha256)
    not_run = Validation(fits=FitCheck(status="not checked"), run=RunCheck(status="not run"))
    builds = {**plan.convert_builds, **plan.config_builds, **plan.lib_builds}
    for key, b in builds.items():
        record = BuildRecord(key=key, kind=b.kind, files=[entry], inputs=b.inputs, toolchain=b.inputs["toolchain"],
                             started_at=now(), finished_at=now(), seconds={}, log=entry,
                             validation=not_run if b.kind == "library" else None)  # fmt: skip
        store.write_json(record_path(key), record.model_dump(mode="json"))
    with timed("store look-ups, full store", t):
        found = sum(load_record(store, k) is not None for k in keys)
    with timed("baseline: os.stat per record", t):
        for k in keys:
            os.stat(work / "store" / record_path(k))

    from prefect import flow

    @flow(name="empty")
    def empty() -> None:
        """Baseline: starting Prefect's temporary server and one flow run that does nothing."""

    with timed("baseline: empty flow run (server start)", t):
        empty()
    with timed("no-op nightly (flow, 1 process)", t):
        state = nightly_build(str(matrix_path), store=str(work / "store"), return_state=True)
    summary = state.result()

    print(
        f"\nmatrix: {len(cells)} cells, {len(plan.convert_builds)} convert + {len(plan.config_builds)} config builds, "
        f"{len(plan.lib_builds)} library builds"
    )
    print(f"empty store: {missing} builds missing; full store: {found} records found")
    print(f"no-op nightly: {state.name}, {summary.message()}\n")
    for label, seconds in t.items():
        print(f"{label:36s} {seconds * 1000:10.1f} ms")
    base_s = t["baseline: os.stat per record"]
    print(f"\nlook-ups vs bare os.stat: {t['store look-ups, full store'] / base_s:.1f}x")
    nightly = t["no-op nightly (flow, 1 process)"]
    print(f"no-op nightly per cell: {nightly / len(cells) * 1000:.1f} ms")
    print(f"no-op nightly vs an empty flow run: {nightly / t['baseline: empty flow run (server start)']:.1f}x")


if __name__ == "__main__":
    main()
