"""The HTML report, opened from disk in a real browser, draws its SVG charts."""
from __future__ import annotations

import importlib.util

import pytest

pytestmark = [pytest.mark.ui, pytest.mark.timeout(300)]


def _has_report_module() -> bool:
    try:
        return importlib.util.find_spec("webinstruct.report") is not None
    except ModuleNotFoundError:
        return False


@pytest.mark.skipif(not _has_report_module(), reason="webinstruct.report not there yet")
def test_report_renders_svg_charts(ingested_sample, tmp_path, browser_page, screenshots):
    from webinstruct.report import write_report

    written = write_report(ingested_sample, tmp_path / "report.html")
    path = written if written is not None else tmp_path / "report.html"
    assert path.is_file(), f"write_report left no file at {path}"

    page = browser_page
    page.goto(path.resolve().as_uri(), wait_until="load")
    svgs = page.locator("svg")
    svgs.first.wait_for(state="attached", timeout=10_000)
    assert svgs.count() >= 1
    box = svgs.first.bounding_box()
    assert box is not None and box["width"] > 0 and box["height"] > 0, f"first SVG not laid out: {box}"
    # Every drawn chart, not just the first, has a size (a broken viewBox or width collapses it to 0);
    # charts that are not rendered at all (a closed <details>, display:none) have no client rects and pass.
    collapsed = svgs.evaluate_all(
        "els => els.map((e, i) => [i, e.getClientRects().length, e.getBoundingClientRect()])"
        "          .filter(([i, n, r]) => n > 0 && (r.width <= 0 || r.height <= 0)).map(([i]) => i)")
    screenshots.take(page, "report", full_page=True)
    assert not collapsed, f"SVG elements {collapsed} of {svgs.count()} have no size"
