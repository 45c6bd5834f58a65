"""The console summary: fits the terminal, never cuts a value, and stays short for a big matrix."""

from __future__ import annotations

from rich.console import Console

from mlc_farm.formatting import clock
from mlc_farm.report import activity
from mlc_farm.report.status import RunStatus
from mlc_farm.report.summary import CellRow, Summary


def row(i: int, ok: bool = True) -> CellRow:
    return CellRow(
        model=f"Llama-3.2-1B-Instruct-fine-tune-{i}", quantization="q4f16_1", device="cuda-sm90",
        convert="built" if ok else "failed", config="built", library="built" if ok else "not run",
        validation="fits; ran on cuda, 181 tok/s" if ok else "", status="ok" if ok else "failed",
        log="" if ok else f"s3://bucket/artifacts/blobs/sha256/{i:064x}",
        detail="" if ok else "convert_weight failed: exit code 1: ValueError: Unknown quantization q4f16_l",
    )  # fmt: skip


def test_the_table_wraps_to_the_width_and_cuts_nothing() -> None:
    summary = Summary(rows=[row(1), row(2, ok=False)], steps={})
    texts = {}
    for width in (80, 200):  # 80: the names whole leave too little room for a table: one block per cell
        console = Console(width=width, record=True)
        console.print(summary.table(width=width))
        texts[width] = text = console.export_text()
        assert max(len(line) for line in text.splitlines()) <= width
        assert "…" not in text and "Llama-3.2-1B-Instruct-fine-tune-2" in text and "cuda-sm90" in text
        assert "q4f16_l" in text.replace("│", "").replace(" ", "")
    assert "Llama-3.2-1B-Instruct-fine-tune-2 q4f16_1 cuda-sm90: convert failed, config" in texts[80]
    assert "┃ model" in texts[200]


def test_a_big_matrix_shows_only_the_cells_that_are_not_ok() -> None:
    small = Summary(rows=[row(i, ok=i != 3) for i in range(10)], steps={})
    assert len(small.for_console()) == 10
    big = Summary(rows=[row(i, ok=i % 100 != 7) for i in range(1000)], steps={})
    shown = big.for_console()
    assert [r.model for r in shown] == [f"Llama-3.2-1B-Instruct-fine-tune-{i}" for i in range(7, 1000, 100)]


def test_the_status_names_the_phase_and_the_time() -> None:
    now = [100.0]
    status = RunStatus({"k1": "convert a/q4f16_1", "k2": "library cpu/q4f16_1 (abc)"}, total=5, now=lambda: now[0])
    status.start("k1")
    now[0] += 65
    status.start("k2")
    status.finish("k2", ok=False)
    assert status.lines() == [
        "[1:05] 1/5 builds done (1 failed), 1 running, 3 waiting",
        "  convert a/q4f16_1: running 1:05",
    ]
    with activity.phase("k1", "convert_weight"):
        assert status.lines()[1] == "  convert a/q4f16_1: convert_weight 0:00, running 1:05"
    with activity.phase("k1", "uploading"):
        activity.rename("k1", "uploading 1.0 MB of 4.0 MB")
        assert status.lines()[1] == "  convert a/q4f16_1: uploading 1.0 MB of 4.0 MB 0:00, running 1:05"
    assert status.lines()[1] == "  convert a/q4f16_1: running 1:05"  # the phase ends with its block
    assert clock(3725) == "1:02:05"


def test_a_nightlys_outcome_is_its_worst_news_and_names_what_to_run() -> None:
    from mlc_farm.records.outcomes import UnitResult
    from mlc_farm.report.alerts import outcome
    from mlc_farm.report.summary import CellRow, Summary

    def row(device: str, status: str, detail: str = "") -> CellRow:
        return CellRow(model="m", quantization="q4f16_1", device=device, convert="built", config="built",
                       library="built", validation="", status=status, log="", detail=detail)  # type: ignore[arg-type]  # fmt: skip

    ok = Summary(rows=[row("cpu", "ok")], steps={})
    assert outcome(ok, None).outcome == "ok"
    kept = ok.model_copy(update={"units": [UnitResult(model="m", quantization="q4f16_1", status="kept previous",
                                                       detail="the new builds lack vulkan")]})  # fmt: skip
    found = outcome(kept, "http://ui/artifacts/artifact/1")
    assert found.outcome == "kept-previous" and "(mlc-farm log m q4f16_1)" in found.message
    assert found.message.endswith("summary: http://ui/artifacts/artifact/1")
    regressed = ok.model_copy(update={"regressions": ["m q4f16_1 cpu: tokens/s down: 40 -> 20"]})
    assert outcome(regressed, None).outcome == "regressed"
    failed = Summary(rows=[row("cpu", "failed", "compile failed: exit code 1"), row("gpu", "ok")], steps={},
                     regressions=["x"])  # fmt: skip
    worst = outcome(failed, None)
    assert worst.outcome == "failed" and worst.cells_ok == 1
    assert worst.failed == ["m q4f16_1 cpu: compile failed: exit code 1 (mlc-farm log m q4f16_1 cpu)"]
