"""The analyst's path through the Dagster UI, in a real browser: ``dagster dev`` on 127.0.0.1 (``tiny`` environment,
temporary instance and data folder), Debian's Chromium driven by Playwright opens the asset graph, clicks
"Materialize all", the run succeeds, and ``eval_report``'s page shows accuracy, macro-F1, the confusion plot and the
per-intent table. Screenshots go to ``$INTENT_ASSETS_SCREENSHOTS_DIR`` (default: the test's temporary folder);
``docs/screenshots/`` in the README holds copies from a passing run.
"""

import os
import re
import shutil
import time
from pathlib import Path

import pytest

from intent_assets_tests.dagster_ui import dagster_dev

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
RUN_TIMEOUT_S = float(os.environ.get("INTENT_ASSETS_UI_RUN_TIMEOUT_S", 2400))  # a loaded 2-core machine is slow
VIEWPORT = {"width": 1600, "height": 1000}
WIDE_VIEWPORT = {"width": 2100, "height": 1000}


def _require_browser():
    """Playwright and Debian's chromium; CI (``INTENT_ASSETS_REQUIRE_BROWSER=1``, set by .ci/run) fails without."""
    missing = []
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("the playwright package (requirements.lock)")
    if not CHROMIUM.is_file():
        missing.append(f"{CHROMIUM} (apt-get install chromium)")
    if missing:
        message = "browser test needs " + " and ".join(missing)
        if os.environ.get("INTENT_ASSETS_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture
def screenshots(tmp_path) -> Path:
    folder = Path(os.environ.get("INTENT_ASSETS_SCREENSHOTS_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _dismiss_first_visit_dialog(page) -> None:
    """Dagster's "Join the Dagster community" dialog on a first visit: Skip it (it may not show, e.g. when the
    browser profile has seen it)."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=15_000)
    except Exception:  # noqa: BLE001 - Playwright's TimeoutError: no dialog this time
        return
    skip.click()
    skip.wait_for(state="hidden", timeout=10_000)


def _graph_ready(page) -> None:
    page.get_by_role("button", name="Materialize all").wait_for(state="visible", timeout=60_000)
    page.wait_for_timeout(3_000)  # layout and fit-to-view animation


def _open_graph(page, url: str) -> None:
    """The global asset lineage with every group expanded and fitted to the view: the groups start collapsed, the
    graph's own shortcut (Alt+E, "Expand all groups" in its settings menu) opens them, and a reload fits the view."""
    page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
    _graph_ready(page)
    _dismiss_first_visit_dialog(page)
    collapsed = page.locator("[aria-label=unfold_more]")
    if collapsed.count():
        page.locator("body").press("Alt+e")
        page.wait_for_timeout(2_000)
        page.reload(wait_until="domcontentloaded")
        _graph_ready(page)
    assert collapsed.count() == 0, "some asset groups are still collapsed"


# the tiny environment reads the first 900 records of those it is given: the sample's first ten days hold ~800
FIRST_DAY, LAST_DAY, DAYS = "2025-01-01", "2025-01-10", 10


def _launch_backfill(page, first: str, last: str, screenshots: Path) -> None:
    """"Materialize all" on a graph with daily partitions: the partition dialog, a typed range, *Launch backfill*."""
    from playwright.sync_api import expect

    page.get_by_role("button", name="Materialize all").click()
    dialog = page.locator("[role=dialog]").first
    dialog.get_by_role("button", name="Show all partitions").click()  # the dialog starts on the last 90 days
    selection = dialog.locator("input").first
    selection.fill(f"[{first}...{last}]")
    selection.press("Enter")
    expect(dialog.get_by_text(f"{DAYS} partitions", exact=True)).to_be_visible(timeout=30_000)
    page.screenshot(path=str(screenshots / "backfill_dialog.png"))
    dialog.get_by_role("button", name="Launch backfill").click()
    expect(dialog).to_be_hidden(timeout=60_000)


def _check_partitions(page, url: str, screenshots: Path) -> None:
    """raw_chat_logs' Partitions tab: the materialized days out of every day of the calendar, and one day's own
    metadata (its counts reconcile for that day alone)."""
    from playwright.sync_api import expect

    page.goto(f"{url}/assets/raw_chat_logs?view=partitions", wait_until="domcontentloaded")
    expect(page.get_by_text(f"Materialized ({DAYS})", exact=True)).to_be_visible(timeout=60_000)
    page.get_by_placeholder("Filter by name").fill("2025-01-0")
    page.get_by_text("2025-01-03", exact=True).first.click()
    for key in ("rows_in", "rows_out", "rows_quarantined", "by_day"):
        expect(_metadata_row(page, key)).to_be_visible(timeout=30_000)
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(screenshots / "raw_chat_logs_partitions.png"))


def _metadata_row(page, key: str):
    return page.locator("tr", has=page.get_by_text(key, exact=True)).first


def _check_eval_report(page, url: str, screenshots: Path) -> None:
    """eval_report's page: accuracy and macro-F1 as numbers, the per-intent table inline, the confusion plot decoded."""
    from playwright.sync_api import expect

    page.goto(f"{url}/assets/eval_report", wait_until="domcontentloaded")
    for key in ("test_examples", "accuracy", "macro_f1", "confusion_matrix", "per_intent", "report_markdown"):
        expect(_metadata_row(page, key)).to_be_visible(timeout=60_000)
    for key in ("accuracy", "macro_f1"):  # a number in [0, 1] next to the key
        value = _metadata_row(page, key).locator("td").last.inner_text().strip()
        assert 0.0 <= float(value) <= 1.0, (key, value)
    _metadata_row(page, "accuracy").scroll_into_view_if_needed()
    page.screenshot(path=str(screenshots / "eval_report.png"))

    # the per-intent table renders inline: its columns, and one row per intent with support in the test split
    table = _metadata_row(page, "per_intent")
    page.set_viewport_size(WIDE_VIEWPORT)  # room for all five columns of the table in the screenshot
    page.get_by_text("per_intent", exact=True).first.scroll_into_view_if_needed()
    for column in ("intent", "precision", "recall", "f1", "support"):
        expect(table.get_by_text(column, exact=True).first).to_be_visible()
    assert table.locator("tr").count() >= 2
    page.screenshot(path=str(screenshots / "eval_report_per_intent.png"))
    page.set_viewport_size(VIEWPORT)

    # the confusion plot is a PNG in Markdown metadata, opened from its row: the browser must decode it
    _metadata_row(page, "confusion_matrix").get_by_text("Show Markdown").click()
    plot = page.locator("img[alt='confusion matrix']").first
    expect(plot).to_be_visible(timeout=30_000)
    assert plot.evaluate("img => img.complete && img.naturalWidth") > 100
    page.add_style_tag(content="img[alt='confusion matrix'] { max-width: 100%; height: auto; }")  # fit it
    page.wait_for_timeout(500)
    page.screenshot(path=str(screenshots / "eval_report_confusion.png"))
    page.keyboard.press("Escape")

    # the model-quality checks, evaluated by the same run, on the asset's Checks tab
    page.goto(f"{url}/assets/eval_report?view=checks", wait_until="domcontentloaded")
    for check in ("fine_tuned_beats_zero_shot", "fine_tuned_beats_classical_baselines"):
        expect(page.locator(f"[title='{check}']").first).to_be_visible(timeout=60_000)  # long names are truncated
    page.wait_for_timeout(1_000)
    page.screenshot(path=str(screenshots / "eval_report_checks.png"))


def test_an_analyst_materializes_everything_and_reads_the_eval_report(tmp_path, tokenizer_dir, seed_base_model,
                                                                      screenshots):
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    started = time.monotonic()
    with dagster_dev(tmp_path / "ui") as dev:
        # the tokenizer and base model conversions (~10 s and ~20 s) are not what this test is about: seed them as
        # the other graph tests do (base_model reuses a conversion whose manifest matches)
        shutil.copytree(tokenizer_dir, dev.data_dir / "artifacts" / "base_model" / "tokenizer")
        seed_base_model(dev.data_dir)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                _open_graph(page, dev.url)
                page.screenshot(path=str(screenshots / "asset_graph_before.png"))

                assert dev.runs() == []
                _launch_backfill(page, FIRST_DAY, LAST_DAY, screenshots)
                (backfill,) = dev.backfills()
                assert backfill["numPartitions"] == DAYS
                status = dev.wait_for_backfill(backfill["id"], RUN_TIMEOUT_S)
                runs = dev.runs()
                failed = {r["runId"]: dev.failed_steps(r["runId"]) for r in runs if r["status"] != "SUCCESS"}
                assert status == "COMPLETED_SUCCESS" and not failed, (status, failed, dev.log_tail())
                # the days in one run (single-run backfill policy), then the unpartitioned assets downstream
                assert 2 <= len(runs) <= 6, runs
                run_wall = time.monotonic() - started

                _open_graph(page, dev.url)
                page.screenshot(path=str(screenshots / "asset_graph.png"))
                _check_partitions(page, dev.url, screenshots)

                _check_eval_report(page, dev.url, screenshots)
            finally:
                browser.close()
    print(f"browser test: run {run_wall:.0f} s, whole test {time.monotonic() - started:.0f} s")
