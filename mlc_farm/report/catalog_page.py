"""The catalog as a static page: `index.html` and `catalog.json` at the store's root, written after every
nightly, readable without a server or a Prefect login (a public bucket, static hosting, or file:// offline).

One row per model x quantization x device: status, validation, tokens/s, sizes (the weight files as
stored, the library, the memory it needs to run), build time, toolchain, source commit, the last failure of
a cell that is missing or kept at an older build (its error, its log and the `mlc-farm log` command), and
download links (the Hub repo when published with these builds, else the
store's blobs, relative to the page). Filters by model, quantization and device (also as `?model=`,
`?quantization=`, `?device=` in the address, so a filtered view is a link), and the matrix picture.
The data is inside the page too: a browser reads nothing else from file://.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterable
from typing import Any, TypedDict

from mlc_farm.catalog.history import Point, regressions, series, speed_rule, speed_series
from mlc_farm.catalog.published import Published, published
from mlc_farm.checks.speed import of_phase
from mlc_farm.huggingface.endpoint import repo_url
from mlc_farm.parallel import each
from mlc_farm.records.folder import lib_path
from mlc_farm.records.reads import all_failures, all_records, entries, load_record
from mlc_farm.records.schema import BuildRecord, CatalogEntry, FailureRecord
from mlc_farm.settings import load_settings
from mlc_farm.store import ArtifactStore
from mlc_farm.store.layout import blob_path
from mlc_farm.trust import provenance
from mlc_farm.trust.dsse import SignatureRefused
from mlc_farm.trust.entry_signatures import signed
from mlc_farm.trust.keys import trusted_keys
from mlc_farm.trust.signatures import SIGNATURE

PAGE, DATA = "index.html", "catalog.json"


Failures = dict[tuple[str, str, str | None], FailureRecord]


# catalog.json, which the page and scripts read: its rows typed, so a field the page reads is one the farm writes.
class PagePoint(TypedDict):
    toolchain: str
    at: str
    tokens_per_s: float | None  # None: another speed method than the newest's
    tokens_per_s_runs: list[float]
    kl: float | None
    memory_bytes: int | None


class PageRegression(TypedDict):
    what: str
    describe: str


class PageHistory(TypedDict):
    points: list[PagePoint]
    speed_method: str | None
    regressions: list[PageRegression]


class PageLibrary(TypedDict):
    """A row's fields from its device's library (a device without one: what it lacks, figures None)."""

    status: str  # "served" or "missing"
    ran: bool
    validation: str
    fidelity: str
    tokens_per_s: float | None
    prefill_tokens_per_s: float | None
    speed_method: str | None
    library_bytes: int | None
    memory_bytes: int | None
    toolchain: str | None
    library: str | None  # its download link


class PageFailure(TypedDict, total=False):
    """What last failed for a cell, when something did."""

    failure: str
    failure_log: str | None
    failure_command: str


class PageRow(PageLibrary, PageFailure):
    model: str
    quantization: str
    device: str
    weights_bytes: int | None
    built_at: str | None
    source: str | None
    source_commit: str | None
    signed_by: str | None
    hub: str | None
    files: dict[str, str]
    history: PageHistory


def _failures(store: ArtifactStore) -> Failures:
    """The newest failure of each cell (device None: the weights or config of every device of the cell)."""
    found: Failures = {}
    for _, failure in all_failures(store):
        for c in failure.cells:
            at = (c.model, c.quantization, c.device)
            if at not in found or found[at].failed_at < failure.failed_at:
                found[at] = failure
    return found


def _failure(entry: CatalogEntry, device: str, failures: Failures, served: bool) -> PageFailure:
    """What last failed for this cell since its entry moved (a served library may be kept at older builds)."""
    cell = [failures.get((entry.model, entry.quantization, d)) for d in (device, None)]
    failed = [f for f in cell if f and (not served or f.failed_at > entry.updated_at)]
    if not failed:
        return PageFailure()
    last = max(failed, key=lambda f: f.failed_at)
    return {
        "failure": last.error.strip().splitlines()[0][:300] if last.error.strip() else "failed",
        "failure_log": blob_path(last.log.sha256) if last.log else None,
        "failure_command": f"mlc-farm log {entry.model} {entry.quantization} {device}",
    }


def _history(points: list[Point], floor: float) -> PageHistory:
    """A cell's series for the page's charts (tokens/s of the newest speed method only: another method's figures
    are another series), and what the newest toolchain lost."""
    speeds = speed_series(points)
    return {
        "points": [
            {
                "toolchain": p.toolchain,
                "at": p.at.isoformat(timespec="seconds"),
                "tokens_per_s": p.tokens_per_s if p in speeds else None,
                "tokens_per_s_runs": p.tokens_per_s_runs if p in speeds else [],
                "kl": p.kl_mean,
                "memory_bytes": p.peak_memory_bytes,
            }
            for p in points
        ],
        "speed_method": points[-1].method if points else None,
        "regressions": [{"what": r.what, "describe": r.describe()} for r in regressions(points, floor)],
    }


def _row(
    store: ArtifactStore,
    entry: CatalogEntry,
    device: str,
    hub: Published | None,
    failures: Failures,
    history: PageHistory,
    signer: str | None,
    records: dict[str, BuildRecord],
) -> PageRow:
    weights, config = (records.get(k) or load_record(store, k) for k in (entry.convert, entry.config))
    files = [f for r in (weights, config) if r for f in r.files]
    root = hub.root() if hub else None  # pinned to the commit that published these builds
    links = {f.path: (f"{root}{f.path}" if root else blob_path(f.sha256)) for f in files}
    if root:  # a published folder carries its signature and its signed provenance
        links |= {"model.sig": f"{root}{SIGNATURE}", "provenance": f"{root}{provenance.FILE}"}
    return {
        "model": entry.model,
        "quantization": entry.quantization,
        "device": device,
        **_library(entry, device, root),
        "weights_bytes": sum(f.size for f in weights.files) if weights else None,
        "built_at": weights.finished_at.isoformat(timespec="seconds") if weights else None,
        "source": entry.source.get("ref") or entry.source.get("kind"),
        "source_commit": entry.source.get("identity"),
        "signed_by": signer,
        "hub": repo_url(hub.repo) if hub else None,
        "files": links,
        **_failure(entry, device, failures, served=device in entry.libs),
        "history": history,
    }


def _library(entry: CatalogEntry, device: str, root: str | None) -> PageLibrary:
    """The fields of a row that its device's library gives (a device without one: what it lacks)."""
    ref = entry.libs.get(device)
    if ref is None:
        return PageLibrary(status="missing", ran=False, validation="no validated library yet", fidelity="",
                           tokens_per_s=None, prefill_tokens_per_s=None, speed_method=None, library_bytes=None,
                           memory_bytes=None, toolchain=None, library=None)  # fmt: skip
    run, prefill = ref.validation.run, of_phase(ref.validation.run.speeds, "prefill")
    return {
        "status": "served",
        "ran": run.status == "passed",  # served but never run on its device: not the same mark as a validated one
        "validation": ref.validation.describe(),
        "tokens_per_s": run.tokens_per_s,
        "prefill_tokens_per_s": prefill.tokens_per_s if prefill else None,
        "speed_method": run.method,
        "fidelity": ref.fidelity.describe() if ref.fidelity else "fidelity not measured (built before fidelity)",
        "library_bytes": ref.file.size,
        "memory_bytes": ref.memory.total_bytes if ref.memory else None,
        "toolchain": ref.runtime.describe_all() if ref.runtime else None,
        "library": f"{root}{lib_path(entry, device)}" if root else blob_path(ref.file.sha256),
    }


def catalog_rows(
    store: ArtifactStore, records: list[BuildRecord] | None, floor: float, known: Iterable[CatalogEntry]
) -> list[PageRow]:
    """A row per entry and device; `records`: every build record of the store, when the caller read them; `floor`:
    MLC_FARM_SPEED_REGRESSION; `known`: entries the caller read and left as they are (each signature is still
    verified here: the page says who signed what it shows)."""
    rows, failures, trusted = [], _failures(store), trusted_keys()
    records = records if records is not None else [r for _, r in all_records(store)]
    cells, by_key = series(records), {r.key: r for r in records}
    listed = sorted(entries(store, known), key=lambda e: (e.model, e.quantization))
    about = each(lambda e: (published(store, e), _signer(e, trusted)), listed, store.readers)  # on S3 a GET each
    for entry, (found, signer) in zip(listed, about, strict=True):  # once per entry, for each device's row
        for device in sorted({*entry.libs, *entry.missing}):
            history = _history(cells.get((entry.model, entry.quantization, device), []), floor)
            rows.append(_row(store, entry, device, found, failures, history, signer, by_key))
    return rows


def _signer(entry: CatalogEntry, trusted: list[bytes]) -> str | None:
    """The fingerprint of the trusted key whose signature of this entry verifies (None: none does): what the page
    shows comes from a verified signature, never from the key hint a bundle in the store claims."""
    try:
        return signed(entry, entry.model, entry.quantization, trusted).key
    except SignatureRefused:
        return None


def verify_note(keys: set[str]) -> str:
    """How a reader of the page checks what they download, with the fingerprints of the keys that signed it."""
    if not keys:
        return "No entry of this store is signed: mlc-farm pull and install refuse it unless --allow-unsigned."
    return (
        f"Every entry and published folder is signed by the farm's key {', '.join(sorted(keys))} (OpenSSF "
        f"model-signing, model.sig; a published folder also carries its signed provenance, {provenance.FILE}). "
        "Verify a download with the farm's public key: model_signing verify key --signature DIR/model.sig "
        "--public_key farm.pub DIR (or mlc-farm verify-signature DIR); mlc-farm pull and install verify before "
        "they write."
    )


def write_page(
    store: ArtifactStore, records: list[BuildRecord] | None = None, known: Iterable[CatalogEntry] = ()
) -> str:
    """Write index.html and catalog.json at the store's root (`records`: every build record of the store, `known`:
    entries left as they were, when the caller read them already); what they hold, in the page's own words."""
    floor = load_settings().speed_regression
    rows = catalog_rows(store, records, floor, known)
    data = {
        "store": store.url,
        "rows": rows,
        "verify": verify_note({r["signed_by"] for r in rows if r["signed_by"]}),
        "regression_rule": f"A speed regression: {speed_rule(floor)}.",
    }
    # Compact: json's C encoder (an indented dump is Python's, ~0.5 s at 5,000 rows); read by the page and scripts.
    store.write_text(DATA, json.dumps(data, separators=(",", ":"), sort_keys=True, default=str), "application/json")
    store.write_text(PAGE, render(data), "text/html; charset=utf-8")
    served = sum(r["status"] == "served" for r in rows)
    return f"{len(rows)} rows: {served} libraries served, {len(rows) - served} missing"


def render(data: dict[str, Any]) -> str:
    """The page, filled in one pass (a value that holds a placeholder is never filled again). The JSON has `<`,
    `>` and `&` escaped, so nothing in it can end the script element or become markup; the page sets every
    value as text, and links only to http(s), file and relative addresses."""
    embedded = json.dumps(data, sort_keys=True)
    for char in "<>&":
        embedded = embedded.replace(char, f"\\u{ord(char):04x}")
    values = {"__STORE__": html.escape(str(data["store"])), "__DATA__": embedded}
    return re.sub("__STORE__|__DATA__", lambda m: values[m.group()], _TEMPLATE)


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>mlc-farm catalog</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.8em 0}th,td{border:1px solid #ccc;padding:.25em .5em;text-align:left}
th{background:#f3f3f3}.served{color:#15692c}.missing{color:#a11}.not-run{color:#8a6d00}.num{text-align:right}
#grid td{text-align:center}label{margin-right:1em}
</style></head><body>
<h1>mlc-farm catalog</h1><p>Store: <code>__STORE__</code>. <span id="count"></span></p><p id="verify"></p>
<p id="regression-rule"></p>
<div><label>model <select id="model"></select></label><label>quantization <select id="quantization"></select></label>
<label>device <select id="device"></select></label></div>
<h2>Matrix</h2><table id="grid"></table>
<p>&#10004; served, and ran on its device &middot; &#9675; served, never run on its device (none where it was
checked; hover for why) &middot; &#10008; missing</p>
<h2>Libraries</h2>
<table id="rows"><thead><tr><th>model</th><th>quantization</th><th>device</th><th>status</th><th>validation</th>
<th>fidelity</th><th>history (decode tokens/s, KL)</th><th>decode tokens/s</th><th>prefill tokens/s</th><th>weight files</th><th>library</th><th>memory to run</th><th>built</th><th>toolchain</th>
<th>source</th><th>last failure</th><th>download</th></tr></thead><tbody></tbody></table>
<script id="catalog" type="application/json">__DATA__</script>
<script>
const data = JSON.parse(document.getElementById("catalog").textContent);
document.getElementById("verify").textContent = data.verify || "";
document.getElementById("regression-rule").textContent = data.regression_rule || "";
const keys = ["model", "quantization", "device"];
const params = new URLSearchParams(location.search);
const size = n => n == null ? "-" : n < 1048576 ? (n / 1024).toFixed(1) + " KB" : (n / 1048576).toFixed(1) + " MB";
const SVG = "http://www.w3.org/2000/svg";
function chart(history, key, label) {
  // A small line per cell, one point per toolchain; the newest point red when it is a regression.
  const w = 120, h = 28, pts = history.points.map(p => p[key]).filter(v => v != null);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("width", w); svg.setAttribute("height", h); svg.setAttribute("class", "chart " + key);
  const title = document.createElementNS(SVG, "title");
  title.textContent = label + ": " + (pts.length ? pts.map(v => +v.toPrecision(3)).join(" -> ") : "not measured");
  svg.append(title);
  if (!pts.length) return svg;
  const lo = Math.min(...pts), hi = Math.max(...pts), x = i => 4 + i * (w - 8) / Math.max(pts.length - 1, 1);
  const y = v => hi === lo ? h / 2 : h - 4 - (v - lo) * (h - 8) / (hi - lo);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", pts.map((v, i) => x(i) + "," + y(v)).join(" "));
  line.setAttribute("fill", "none"); line.setAttribute("stroke", "#36c");
  svg.append(line);
  const bad = history.regressions.some(r => (key === "kl" ? "KL" : "tokens/s") === r.what);
  pts.forEach((v, i) => {
    const dot = document.createElementNS(SVG, "circle");
    dot.setAttribute("cx", x(i)); dot.setAttribute("cy", y(v)); dot.setAttribute("r", 2.5);
    const regressed = bad && i === pts.length - 1;
    dot.setAttribute("fill", regressed ? "#c00" : "#36c");
    if (regressed) dot.setAttribute("class", "regression");
    svg.append(dot);
  });
  return svg;
}
const cell = (tr, text, cls) => { const td = tr.insertCell(); td.textContent = text; if (cls) td.className = cls; return td; };
for (const k of keys) {
  const sel = document.getElementById(k);
  for (const v of ["", ...new Set(data.rows.map(r => r[k]))]) sel.add(new Option(v || "all", v));
  sel.value = params.get(k) || "";
  sel.onchange = show;
}
function show() {
  const want = Object.fromEntries(keys.map(k => [k, document.getElementById(k).value]));
  const rows = data.rows.filter(r => keys.every(k => !want[k] || r[k] === want[k]));
  const body = document.querySelector("#rows tbody");
  body.replaceChildren();
  for (const r of rows) {
    const tr = body.insertRow();
    tr.className = "row";
    for (const k of keys) cell(tr, r[k]);
    cell(tr, r.status, r.status);
    cell(tr, r.validation);
    cell(tr, r.fidelity);
    cell(tr, "").append(chart(r.history, "tokens_per_s", "tokens/s"), chart(r.history, "kl", "KL"));
    cell(tr, r.tokens_per_s == null ? "-" : r.tokens_per_s.toFixed(1), "num").title = r.speed_method || "";
    cell(tr, r.prefill_tokens_per_s == null ? "-" : r.prefill_tokens_per_s.toFixed(1), "num");
    cell(tr, size(r.weights_bytes), "num"); cell(tr, size(r.library_bytes), "num"); cell(tr, size(r.memory_bytes), "num");
    cell(tr, r.built_at || "-"); cell(tr, r.toolchain || "-");
    cell(tr, (r.source || "") + (r.source_commit ? " @ " + r.source_commit.slice(0, 12) : ""));
    const failed = cell(tr, r.failure ? r.failure + " (" + r.failure_command + ") " : "", r.failure ? "failure" : "");
    const links = cell(tr, "");
    if (r.failure_log) { const a = document.createElement("a"); a.href = r.failure_log; a.textContent = "log"; failed.append(a); }
    for (const [name, href] of [["repo", r.hub], ["library", r.library], ...Object.entries(r.files)]) {
      if (!href || !["http:", "https:", "file:"].includes(new URL(href, location.href).protocol)) continue;
      const a = document.createElement("a"); a.href = href; a.textContent = name; links.append(a, " ");
    }
  }
  const served = rows.filter(r => r.status === "served").length;
  document.getElementById("count").textContent = rows.length + " of " + data.rows.length + " rows shown: " +
    served + " libraries served, " + (rows.length - served) + " missing.";
  const devices = [...new Set(rows.map(r => r.device))];
  const grid = document.getElementById("grid");
  grid.replaceChildren();
  const head = grid.insertRow();
  for (const h of ["model", "quantization", ...devices]) { const th = document.createElement("th"); th.textContent = h; head.append(th); }
  for (const unit of [...new Set(rows.map(r => r.model + "\\u0000" + r.quantization))]) {
    const [m, q] = unit.split("\\u0000");
    const tr = grid.insertRow(); cell(tr, m); cell(tr, q);
    for (const d of devices) {
      const r = rows.find(x => x.model === m && x.quantization === q && x.device === d);
      const mark = !r ? "" : r.status !== "served" ? "\\u2718" : r.ran ? "\\u2714" : "\\u25cb";
      const td = cell(tr, mark, r ? (r.status === "served" && !r.ran ? "not-run" : r.status) : "");
      if (r) td.title = r.validation;
    }
  }
}
show();
</script></body></html>
"""
