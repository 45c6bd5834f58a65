"""The catalog page a nightly writes into the store, checked in a real browser (Debian's headless chromium):
rows, filters, the matrix picture, offline from a file:// store; a screenshot is kept in test-artifacts/."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.helpers import ROOT, cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_api")]
SCREENSHOT = ROOT / "test-artifacts" / "catalog-page.png"


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (scripts/test.sh --all installs it)")
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    return found


def browse(page: Path, query: str = "", *flags: str) -> str:
    done = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", *flags, f"{page.as_uri()}{query}"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_the_nightly_writes_a_page_people_can_browse(tiny_matrix: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    built = cli("build", "--matrix", str(tiny_matrix), "--store", str(store))
    assert built.returncode == 0, built.stdout + built.stderr
    data = json.loads((store / "catalog.json").read_text())
    assert len(data["rows"]) == 8
    row = next(
        r for r in data["rows"] if (r["model"], r["quantization"], r["device"]) == ("tiny-llama-b", "q0f16", "cpu")
    )
    assert row["status"] == "served" and row["tokens_per_s"] > 0 and row["memory_bytes"] > 0
    assert row["source_commit"] and row["toolchain"].startswith("mlc_llm 0.20.0.dev0 (") and row["built_at"]
    for link in [row["library"], *row["files"].values()]:
        assert (store / link).is_file()  # relative to the page: works offline and from a public bucket

    page = store / "index.html"
    everything = browse(page, "", "--dump-dom")
    assert everything.count('class="row"') == 8 and "8 of 8 rows shown: 8 libraries served, 0 missing." in everything
    assert "<td>tiny-llama-b</td>" in everything and "<td>q4f16_1</td>" in everything
    cpu = browse(page, "?device=cpu", "--dump-dom")
    assert cpu.count('class="row"') == 4 and "4 of 8 rows shown: 4 libraries served, 0 missing." in cpu
    one = browse(page, "?model=tiny-llama-b&quantization=q0f16", "--dump-dom")
    assert one.count('class="row"') == 2 and "fits; ran on cpu" in one and "not run: no vulkan device" in one
    # The matrix picture: one model x quantization, two devices served; the one never run is not marked as
    # validated (issue 39, item 7).
    assert one.count("\u2714") == 2 and one.count("\u25cb") == 2  # each: one in the grid, one in the legend

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    browse(page, "", "--window-size=1400,1000", f"--screenshot={SCREENSHOT}")
    assert SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and SCREENSHOT.stat().st_size > 20_000


def test_no_value_can_become_markup_or_script(tmp_path: Path) -> None:
    """A store URL or a field holding the data placeholder, a closing script tag or a handler stays text."""
    from mlc_farm.report.catalog_page import render

    evil = '__DATA__</script><img src=x onerror="document.body.dataset.pwned=1">&amp;__STORE__'
    row = {"model": evil, "quantization": "q0f16", "device": "cpu", "status": "served", "files": {},
           "library": "javascript:document.body.dataset.pwned=2", "hub": None}  # fmt: skip
    page = tmp_path / "index.html"
    page.write_text(render({"store": evil, "rows": [row]}))
    html = page.read_text()
    assert "<img" not in html and html.count("</script>") == 2  # the data's own and the page's script
    dom = browse(page, "", "--dump-dom")
    assert "data-pwned" not in dom and "&lt;img src=x" in dom  # shown as text, never run
    assert 'href="javascript:' not in dom  # a link that is not http(s), file or relative is not made


def test_a_failed_cell_shows_its_reason_and_log(tiny_matrix: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    failing = cli("build", "--matrix", str(tiny_matrix), "--store", str(store), "--model", "tiny-llama-a",
                  env={"MLC_DOUBLE_FAIL": "compile:vulkan:generic"})  # fmt: skip
    assert failing.returncode == 1
    data = json.loads((store / "catalog.json").read_text())
    missing = [r for r in data["rows"] if r["status"] == "missing"]
    assert {r["device"] for r in missing} == {"vulkan"} and len(missing) == 2
    for r in missing:
        assert "compile failed" in r["failure"] and (store / r["failure_log"]).is_file()
        assert r["failure_command"] == f"mlc-farm log tiny-llama-a {r['quantization']} vulkan"
    dom = browse(store / "index.html", "?device=vulkan", "--dump-dom")
    assert "2 of 4 rows shown: 0 libraries served, 2 missing." in dom
    assert "(mlc-farm log tiny-llama-a q0f16 vulkan)" in dom and ">log</a>" in dom
    page = cli("page", "--store", str(store))
    assert "4 rows: 2 libraries served, 2 missing" in page.stdout  # the same counts as the page


HISTORY_SCREENSHOT = ROOT / "test-artifacts" / "catalog-history.png"


@pytest.mark.usefixtures("product_speed_timing")
def test_each_cell_draws_its_history_with_regressions_marked(
    tiny_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three nightlies of one cell, the last with a slower kernel and a library further from its source."""
    from mlc_farm.report import catalog_page
    from mlc_farm.store import open_store
    from tests.test_fidelity import run, write_matrix

    loose = "fidelity: {max_kl: 10, min_top1: 0, gate: false}"  # recorded, not gated: the new libraries serve
    matrix, store = write_matrix(tiny_models, tmp_path, "[q4f16_1]", loose), tmp_path / "store"
    for version, env in (("0.20.0.dev0", {}), ("0.21.0.dev1", {}),
                         ("0.21.0.dev2", {"MLC_DOUBLE_DECODE_SLEEP": "0.01", "MLC_DOUBLE_ROPE_BASE": "1"})):  # fmt: skip
        monkeypatch.setenv("MLC_DOUBLE_VERSION", version)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert run(matrix, store)[0].ok
    catalog_page.write_page(open_store(str(store)))
    data = json.loads((store / "catalog.json").read_text())
    cpu = next(r for r in data["rows"] if r["device"] == "cpu")
    assert len(cpu["history"]["points"]) == 3
    assert {r["what"] for r in cpu["history"]["regressions"]} == {"tokens/s", "KL"}
    dom = browse(store / "index.html", "?device=cpu", "--dump-dom")
    assert dom.count('class="chart tokens_per_s"') == 1 and dom.count('class="chart kl"') == 1
    assert dom.count('class="regression"') == 2  # the newest point of both charts
    assert "A speed regression: tokens/s down by more than 10%" in dom  # the page says its threshold
    assert "<title>KL: " in dom and "not measured" not in dom.split('class="chart kl"')[1].split("</svg>")[0]
    HISTORY_SCREENSHOT.parent.mkdir(exist_ok=True)
    HISTORY_SCREENSHOT.unlink(missing_ok=True)
    browse(store / "index.html", "?device=cpu", "--window-size=1800,500", f"--screenshot={HISTORY_SCREENSHOT}")
    assert HISTORY_SCREENSHOT.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
