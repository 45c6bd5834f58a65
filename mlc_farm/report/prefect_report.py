"""What a run under Prefect says besides the terminal: its artifacts (the matrix picture, every cell's row, the
night's report, the regressions, what it published) and, for a nightly, the outcome event its automations turn
into a notification. The run hands it the same events as the terminal's report and it keeps them when the run
closes; it decides nothing."""

from __future__ import annotations

from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run as runtime_flow_run

from mlc_farm.report import alerts
from mlc_farm.report.night import NightReport
from mlc_farm.report.run_report import TerminalReport
from mlc_farm.report.summary import Summary

GRID_CELLS = 500  # a bigger matrix's picture shows its cells that are not OK; the summary table has every cell


class PrefectReport(TerminalReport):
    """The terminal's report, and the run's artifacts and alert (`alert`: a nightly's; a pool check pages
    nobody). `summary` is the run's, once it ended."""

    def __init__(self, alert: bool = True) -> None:
        super().__init__()
        self.alert = alert
        self.summary: Summary | None = None
        self.night: NightReport | None = None
        self.rows: list[dict[str, str]] = []

    def ended(self, summary: Summary, night: NightReport) -> None:
        super().ended(summary, night)
        self.summary, self.night = summary, night

    def published(self, row: dict[str, str]) -> None:
        super().published(row)
        self.rows.append(row)

    def closed(self) -> None:
        if self.summary is None or self.night is None:  # the run stopped before it ended: nothing to keep
            return
        table = artifacts(self.summary, self.night, self.rows)
        if self.alert:
            alerts.emit(alerts.outcome(self.summary, _artifact_link(table)), runtime_flow_run.id)


def artifacts(summary: Summary, night: NightReport, published: list[dict[str, str]]) -> Any:
    """The run's artifacts; the id of the summary table (the alert links to it)."""
    big = summary.for_console(GRID_CELLS) is not summary.rows
    create_markdown_artifact(
        key="mlc-farm-matrix",
        markdown=summary.grid(summary.failed if big else None),
        description=f"The {'cells that are not OK' if big else 'matrix'} of this run (every cell: "
        "mlc-farm-build-summary).",
    )
    table = create_table_artifact(
        key="mlc-farm-build-summary",
        table=[r.model_dump() for r in summary.rows],
        description="Every cell of the matrix: built, reused or failed, and where its log is.\n\n" + night.markdown(),
    )
    create_markdown_artifact(key="mlc-farm-night", markdown=night.markdown(), description="How the night went.")
    if summary.regressions:
        create_markdown_artifact(
            key="mlc-farm-regressions",
            markdown="\n".join(f"- {line}" for line in summary.regressions),
            description="Cells slower, further from their source or bigger than under the previous toolchain.",
        )
    if published:
        create_table_artifact(key="mlc-farm-publish", table=published, description="Hugging Face repos of this run.")
    return table


def _artifact_link(artifact: Any) -> str:
    """Where a person opens an artifact: the UI's page when PREFECT_UI_URL is set, else its id and key."""
    from prefect.settings import PREFECT_UI_URL

    ui = PREFECT_UI_URL.value()
    return f"{ui}/artifacts/artifact/{artifact}" if ui else f"artifact {artifact} (mlc-farm-build-summary)"
