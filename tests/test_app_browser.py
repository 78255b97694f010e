"""End to end in a real browser: headless Chromium opens the page served by real uvicorn, uploads a chest X-ray,
and reads the prediction, the heat-map and the model card from the page."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from conftest import CHEST_XRAY_SMALL

CHROMIUM = Path("/usr/bin/chromium")
XRAY = sorted((CHEST_XRAY_SMALL / "test" / "NORMAL").iterdir())[0]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = [pytest.mark.slow,  # a browser on the live server, which serves the session's trained app run
              pytest.mark.skipif(not CHROMIUM.exists(),
                                 reason="Chromium is not installed at /usr/bin/chromium "
                                        "(apt-get install chromium; .ci/run installs it)")]


@pytest.fixture(scope="module")
def page():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install '.[test]')")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_upload_an_xray_and_read_the_prediction_and_heatmap(live_server, page):
    expected = httpx.post(live_server + "/api/predict", files={"file": (XRAY.name, XRAY.read_bytes())}).json()
    page.goto(live_server + "/")
    page.wait_for_function("document.querySelector('#metrics').rows.length > 1")
    assert "not a medical device" in page.inner_text("#notice").lower()
    card = page.inner_text("#card")
    assert "real" in card and "pneumoniamnist" in card and "auc" in card

    page.set_input_files("#file", str(XRAY))
    page.wait_for_selector("#result:not([hidden])", timeout=30_000)
    assert page.inner_text("#label") == expected["label"]
    assert page.inner_text("#probability") == f"({100 * expected['probability']:.1f}%)"
    assert page.get_attribute("#heatmap", "src") == expected["heatmap_png"]
    size = page.evaluate("[document.querySelector('#heatmap').naturalWidth, document.querySelector('#heatmap').complete]")
    assert size == [320, True]
    assert XRAY.name in page.inner_text("#status")


def test_a_bad_upload_shows_the_servers_message(live_server, page, tmp_path):
    fake = tmp_path / "not-an-xray.png"
    fake.write_text("hello")
    page.goto(live_server + "/")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector("#status.error", timeout=30_000)
    assert "not a PNG, JPEG or DICOM image" in page.inner_text("#status")
    assert page.is_hidden("#result")
