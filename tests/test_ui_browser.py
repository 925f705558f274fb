"""The web UI in a real browser: Playwright driving Debian's Chromium headless.

Each test types a prompt, picks a preset, clicks, waits for the result, checks that the video
loads in the page and has the expected frame count, and saves a screenshot (into
$GENACCEL_SCREENSHOTS, else the test's temporary folder; the README's images are made with
GENACCEL_SCREENSHOTS=docs/images). Skipped when Chromium or Playwright is missing, unless
GENACCEL_REQUIRE_BROWSER=1 (set by CI, which installs Chromium), where that is a failure.
"""

import os
import shutil
import threading
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port

from genaccel.io.video import read_video

CHROMIUM = os.environ.get("GENACCEL_CHROMIUM", "/usr/bin/chromium")
TIMEOUT_MS = 240_000
PROMPT = "a blue square moving right on a black background"


def _browser_missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e .[test])"
    if not shutil.which(CHROMIUM) and not Path(CHROMIUM).is_file():
        return f"no Chromium at {CHROMIUM}"
    return None


missing = _browser_missing()
if missing and os.environ.get("GENACCEL_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"browser tests required but {missing}")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(missing is not None, reason=missing or "")]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The UI on the default model (the embedded model, which ships its trained light decoder)."""
    from genaccel.ui.app import launch

    root = tmp_path_factory.mktemp("ui-browser")
    app = launch(port=free_port(), device="cpu", output_dir=str(root / "out"), block=False)
    yield app
    app.close()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        yield b
        b.close()


@pytest.fixture
def page(browser, server):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.local_url)
    page.wait_for_selector("#generate-button")
    yield page
    page.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("GENACCEL_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _pick_preset(page, name: str) -> None:
    page.click("#preset input")
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(
        "(n) => !document.querySelector('#spec textarea, #spec input').value.startsWith('none')", arg=name
    )


def _loaded_video(page, selector: str, tmp_path: Path, name: str):
    """Wait until the <video> under `selector` has decoded data; return its frames, read back from the page's URL."""
    page.wait_for_selector(f"{selector} video[src]")
    page.wait_for_function(f"document.querySelector('{selector} video').readyState >= 2")
    duration = page.eval_on_selector(f"{selector} video", "v => v.duration")
    src = page.eval_on_selector(f"{selector} video", "v => v.currentSrc")
    target = tmp_path / name
    with urllib.request.urlopen(src) as response:
        target.write_bytes(response.read())
    return read_video(target), duration


def test_generate_in_the_browser(page, shots, tmp_path):
    """The page starts on the balanced preset, its accelerators checked in their groups; the video comes."""
    assert page.locator("#preset input").input_value() == "balanced"
    spec = page.locator("#spec textarea, #spec input").first.input_value()
    assert spec != "none" and any(page.locator(f"#accel-{r} input").is_checked() for r in _names(spec))
    page.get_by_text("Skip passes", exact=True).first.wait_for()
    page.get_by_text("Sparse attention", exact=True).first.wait_for()
    page.locator("#decoder").wait_for()
    page.fill("#prompt textarea", PROMPT)
    frames = int(page.get_by_label("Frames", exact=True).input_value())
    page.click("#generate-button")
    video, duration = _loaded_video(page, "#video", tmp_path, "generated.mp4")
    assert video.shape[0] == frames and duration > 0
    figures = page.locator("#figures").inner_text()
    assert "skipped_calls" in figures
    page.screenshot(path=str(shots / "ui-generate.png"), full_page=True)


def _names(spec: str) -> list[str]:
    from genaccel.generation.spec import parse_spec_string

    return [r.name for r in parse_spec_string(spec)]


# Notes every preview image the page shows (by src), and whether the final video was there yet.
WATCH_PREVIEWS = """() => {
    window.previews = [];
    const note = () => {
        const img = document.querySelector('#preview img');
        if (img && img.src && !window.previews.some((p) => p.src === img.src)) {
            window.previews.push({src: img.src, video: !!document.querySelector('#video video[src]')});
        }
    };
    new MutationObserver(note).observe(document.body, {subtree: true, childList: true, attributes: true});
}"""


def test_live_previews_in_the_browser(page, shots, tmp_path, monkeypatch):
    """While the video denoises, the preview image changes every K steps (the default 5); then the video comes
    and the preview goes."""
    import genaccel.ui.service as service

    # The run waits at its third preview until the page has shown two and the screenshot is taken: the
    # screenshot is mid-run on any machine, however fast.
    real, made, release = service.preview_strip, [], threading.Event()

    def held(frames, *args, **kwargs):
        made.append(True)
        if len(made) == 3:
            release.wait(TIMEOUT_MS / 1000)
        return real(frames, *args, **kwargs)

    monkeypatch.setattr(service, "preview_strip", held)
    assert page.locator("#preview-every input").input_value() == "5"
    frames = int(page.get_by_label("Frames", exact=True).input_value())
    page.fill("#prompt textarea", PROMPT)
    page.evaluate(WATCH_PREVIEWS)
    page.click("#generate-button")
    try:
        page.wait_for_function("window.previews.length >= 2")
        page.screenshot(path=str(shots / "ui-preview.png"), full_page=True)
    finally:
        release.set()
    video, _ = _loaded_video(page, "#video", tmp_path, "previewed.mp4")
    assert video.shape[0] == frames
    previews = page.evaluate("window.previews")
    assert len([p for p in previews if not p["video"]]) >= 2  # two different previews before the video
    page.locator("#preview").wait_for(state="hidden")


def test_compare_in_the_browser(page, shots, tmp_path):
    page.get_by_role("tab", name="Compare").click()
    page.fill("#compare-prompt textarea", PROMPT)
    _pick_preset(page, "fast")
    frames = int(page.get_by_label("Frames", exact=True).input_value())
    page.click("#compare-button")
    for selector in ("#compare-baseline", "#compare-accelerated", "#compare-difference"):
        video, _ = _loaded_video(page, selector, tmp_path, selector.strip("#") + ".mp4")
        assert video.shape[0] == frames
    table = page.locator("#compare-table").inner_text()
    assert "baseline" in table and "accelerated" in table
    page.screenshot(path=str(shots / "ui-compare.png"), full_page=True)


def test_batch_in_the_browser(page, shots):
    page.get_by_role("tab", name="Batch").click()
    page.wait_for_selector("#batch-button", state="visible")  # the tab has rendered: its box keeps what is typed
    prompts = page.locator("#batch-prompts textarea")
    text = f"{PROMPT}\na yellow circle moving up on a gray background"
    _pick_preset(page, "quality")
    prompts.fill(text)
    prompts.blur()  # the box's change reaches the page's state before the click, as a user's would
    page.wait_for_function("(t) => document.querySelector('#batch-prompts textarea').value === t", arg=text)
    page.click("#batch-button")
    page.wait_for_function(
        "document.querySelector('#batch-status') && document.querySelector('#batch-status').innerText.includes('2 videos done')"
    )
    assert page.locator("#batch-gallery video, #batch-gallery img").count() >= 2
    page.screenshot(path=str(shots / "ui-batch.png"), full_page=True)


def test_bad_input_shows_a_message_in_the_page(page):
    page.fill("#prompt textarea", "")
    page.click("#generate-button")
    page.get_by_text("the prompt is empty").first.wait_for()


def test_stream_in_the_browser(page, shots, tmp_path):
    """The Stream tab: chunks arrive in the live player, the prompt changes mid-stream, Stop keeps the video."""
    page.get_by_role("tab", name="Stream").click()
    page.fill("#stream-prompt textarea", PROMPT)
    page.fill("#stream-chunks input", "0")  # until stopped
    page.click("#stream-button")
    page.wait_for_function("document.querySelector('#stream-status').innerText.includes('chunk 2:')")
    page.wait_for_selector("#stream-live img")
    page.fill("#stream-next-prompt textarea", "a yellow circle moving up on a gray background")
    page.click("#stream-switch")
    page.wait_for_function("document.querySelector('#stream-status').innerText.includes('prompt changed')")
    assert "yellow circle" in page.locator("#stream-status").inner_text()
    page.screenshot(path=str(shots / "ui-stream.png"), full_page=True)
    page.click("#stream-stop")
    page.wait_for_function("document.querySelector('#stream-status').innerText.includes('Stream stopped')")
    video, duration = _loaded_video(page, "#stream-video", tmp_path, "stream.mp4")
    status = page.locator("#stream-status").inner_text()
    assert video.shape[0] == int(status.split("chunks, ")[1].split(" frames")[0]) and duration > 0


def test_the_model_list_is_the_servers(page, server):
    """The dropdown lists the offered models and takes no other name."""
    page.click("#model input")
    options = [o.replace("✓", "").strip() for o in page.get_by_role("option").all_inner_texts()]  # ✓: the chosen one
    assert options == server.studio.models
    page.fill("#model input", "/etc")
    page.keyboard.press("Enter")
    page.locator("#prompt textarea").click()  # leaving the box: an unlisted name does not stay
    page.wait_for_function(
        "(names) => names.includes(document.querySelector('#model input').value)", arg=server.studio.models
    )
    page.click("#model input")
    page.get_by_role("option", name="tiny-wan", exact=True).click()  # an offered one loads and shows its facts
    page.wait_for_function("document.querySelector('#model-info').innerText.startsWith('tiny-wan')")


def test_a_full_queue_in_the_browser(browser, tmp_path):
    """With the device busy, a second page waits at its place in the queue and a third is told the app is busy;
    the waiting page gets its video once the device is free."""
    import threading

    from genaccel.ui.app import launch

    app = launch(
        port=free_port(), model="tiny-wan", device="cpu", output_dir=str(tmp_path / "out"), block=False, queue_size=1
    )
    studio, entered = app.studio, threading.Event()
    run = studio.jobs.run

    def noting(*args, **kwargs):  # tells the test when a generation has reached the device
        entered.set()
        return run(*args, **kwargs)

    studio.jobs.run = noting
    pages = [browser.new_page(viewport={"width": 1400, "height": 1100}) for _ in range(3)]
    try:
        for p in pages:
            p.set_default_timeout(TIMEOUT_MS)
            p.goto(app.local_url)
            p.wait_for_selector("#generate-button")
        running, waiting, turned_away = pages
        with studio.jobs.hold(studio.device):
            running.click("#generate-button")
            assert entered.wait(TIMEOUT_MS / 1000)
            waiting.click("#generate-button")
            waiting.get_by_text("queue: 1/1").first.wait_for()
            turned_away.click("#generate-button")
            turned_away.get_by_text("This application is currently busy").first.wait_for()
        for p in (running, waiting):
            p.wait_for_selector("#video video[src]")
    finally:
        for p in pages:
            p.close()
        app.close()
