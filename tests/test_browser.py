"""The app in a real browser: headless Chromium (Debian's, through Playwright) uploads a photo and segments it.

Screenshots of every tab are written under the test's tmp_path (named in the test output) for a human to look at.
"""

import shutil
import socket
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "wall_03_crack_taping.jpg"

pytestmark = pytest.mark.slow  # a real browser and a training run: tens of seconds


@pytest.fixture(scope="module")
def url(tmp_path_factory, shared_data):
    import app
    from engine.models import make_random_model_folder

    root = tmp_path_factory.mktemp("browser")
    tiny = make_random_model_folder(root / "checkpoints" / "tiny", meta={"threshold": 0.5})
    demo = app.build_app(checkpoints_dir=root / "checkpoints", export_dir=root / "export", data_root=shared_data,
                         work_dir=root / "work", default_model=str(tiny),
                         train_overrides={"feature_cache": False, "warmup_epochs": 0, "threads": 1})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, local_url, _ = demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **app.launch_options())
    try:
        yield local_url
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page(url):
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: install Debian's (apt-get install chromium), not "
                    "`playwright install`.")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(url)
        page.wait_for_selector("#segment-btn")
        yield page
        browser.close()


def test_upload_segment_and_see_the_overlay(page, tmp_path):
    page.locator("#seg-image input[type=file]").set_input_files(str(EXAMPLE))
    page.wait_for_selector("#seg-image img")
    page.locator("#seg-prompts textarea").fill("segment crack\nsegment taping area")
    page.locator("#segment-btn").click()
    overlay = page.locator("#seg-overlay img")
    overlay.wait_for(state="visible")
    assert overlay.evaluate("img => img.complete && img.naturalWidth") > 100
    from playwright.sync_api import expect

    expect(page.locator("#seg-table")).to_contain_text("segment taping area")
    expect(page.locator("#seg-masks")).to_contain_text("wall_03_crack_taping__segment_crack")
    page.screenshot(path=tmp_path / "segment.png", full_page=True)
    print(f"screenshots in {tmp_path}")


def test_correct_a_mask_with_brush_strokes_and_keep_it(page, tmp_path):
    """After a Segment: open the crack mask in the editor, paint a stroke, save it to a set, then mark taping
    absent; the set's table counts each."""
    from playwright.sync_api import expect

    if not page.locator("#seg-overlay img").count():  # run alone: segment first
        test_upload_segment_and_see_the_overlay(page, tmp_path)
    page.get_by_text("Correct and keep").click()
    page.locator("#label-prompt input").fill("segment crack")
    page.locator("#label-prompt input").press("Enter")
    page.locator("#label-open").click()
    canvas = page.locator("#label-editor canvas").first
    canvas.wait_for(state="visible")
    page.wait_for_timeout(1000)  # the background and the mask layer load
    page.locator("#label-editor button[aria-label='Brush']").first.click()
    box = canvas.bounding_box()
    x, y = box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.4
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(15):
        page.mouse.move(x + 10 * k, y + 4 * k)
    page.mouse.up()
    page.locator("#label-set input").fill("browser-set")
    page.locator("#label-set input").press("Enter")
    page.locator("#label-keep").click()
    expect(page.locator("#label-note")).to_contain_text("Kept the corrected mask for segment crack")
    expect(page.locator("#label-sets")).to_contain_text("segment crack: 1")
    page.locator("#label-prompt input").fill("segment taping area")
    page.locator("#label-prompt input").press("Enter")
    page.locator("#label-open").click()  # the taping answer of the same photo
    page.wait_for_timeout(500)
    page.locator("#label-absent").click()
    expect(page.locator("#label-note")).to_contain_text("Kept the absent mark for segment taping area")
    expect(page.locator("#label-sets")).to_contain_text("segment taping area: 1 (1 absent)")
    page.locator("#label-section").screenshot(path=tmp_path / "label.png")
    print(f"screenshots in {tmp_path}")


def _set_slider(page, elem_id: str, value) -> None:
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_train_from_the_browser_and_see_the_run_in_the_pickers(page):
    """Train starts the background job, the timer shows live progress, and the finished run joins the pickers."""
    from playwright.sync_api import expect

    page.get_by_role("tab", name="Train", exact=True).click()
    page.locator("#run-name input, #run-name textarea").first.fill("browser-run")
    for elem_id, value in [("train-epochs", 2), ("train-batch", 2), ("train-size", 64), ("train-images", 6)]:
        _set_slider(page, elem_id, value)
    page.locator("#train-btn").click()
    expect(page.locator("#train-progress")).to_contain_text("Finished", timeout=150_000)
    expect(page.locator("#train-progress")).to_contain_text("epoch 2/2")
    page.get_by_role("tab", name="Segment", exact=True).click()
    page.locator("#seg-model input").click()
    expect(page.get_by_role("option", name="run: browser-run")).to_be_visible()
    page.keyboard.press("Escape")


@pytest.mark.parametrize("tab", ["Train", "Compare", "Export"])
def test_every_tab_renders(page, tab, tmp_path):
    page.get_by_role("tab", name=tab, exact=True).click()
    heading = {"Train": "Settings", "Compare": "Models or runs", "Export": "Model to export"}[tab]
    page.get_by_text(heading).first.wait_for(state="visible")
    page.wait_for_timeout(300)  # let the tab's plots finish laying out
    page.screenshot(path=tmp_path / f"{tab.lower()}.png", full_page=True)
    assert "Error" not in page.locator("body").inner_text()  # no error toast on any tab


def test_a_closed_tab_takes_its_anonymous_visitors_folder_with_it(page, tmp_path, shared_data):
    """Public mode: the page's unload event (Gradio's heartbeat ends when the tab closes) deletes the anonymous
    session's own folder; another visitor's stays. Two new tabs of the module's browser (one Playwright per
    process)."""
    import time

    import app
    from engine.app.public import PublicSettings
    from engine.app.visitors import VISITORS_DIR
    from engine.models import make_random_model_folder

    tiny = make_random_model_folder(tmp_path / "checkpoints" / "tiny", meta={"threshold": 0.5})
    settings = PublicSettings(enabled=True)
    demo = app.build_app(checkpoints_dir=tmp_path / "checkpoints", export_dir=tmp_path / "export",
                         data_root=shared_data, work_dir=tmp_path / "work", default_model=str(tiny), public=settings)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, url, _ = demo.launch(prevent_thread_lock=True, server_port=port, quiet=True, **app.launch_options(settings))
    visitors = tmp_path / "work" / VISITORS_DIR
    browser = page.context.browser
    try:
        first, second = browser.new_page(), browser.new_page()
        for tab in (first, second):
            tab.goto(url)
            tab.wait_for_selector("#segment-btn")
        deadline = time.monotonic() + 30
        while len(list(visitors.glob("*"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # the page's load events mark each visitor as seen
        assert len(list(visitors.glob("*"))) == 2
        first.close()
        while len(list(visitors.glob("*"))) > 1 and time.monotonic() < deadline + 30:
            time.sleep(0.2)
        assert len(list(visitors.glob("*"))) == 1  # the open tab's folder stays
        second.close()
    finally:
        demo.close()
