"""Drive the rating app in Debian's Chromium (Playwright, system browser): training block,
keyboard rating, break reminder, reload/resume, undo, server restart; then check the database."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import create_app

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def start_server(dataset: Path, scale: Path):
    import waitress

    study = open_study(dataset, scale=scale, seed=9)
    (alice,) = study.store.add_raters(["alice"])
    app = create_app(dataset, study.store, study.scale, study.images)
    server = waitress.create_server(app, host="127.0.0.1", port=0, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    return server, thread, f"http://127.0.0.1:{server.effective_port}/r/{alice.token}", study


def stop_server(server, thread, study):
    server.close()
    thread.join(timeout=5)
    study.store.close()


@pytest.fixture
def scale_file(tmp_path: Path) -> Path:
    text = (Path(__file__).resolve().parents[2] / "protocols" / "likert-0-4.toml").read_text()
    path = tmp_path / "scale.toml"
    path.write_text(text.replace("break_every = 100", "break_every = 3"))
    return path


def test_rate_by_keyboard_reload_resume_undo_in_chromium(tiny_dataset, scale_file):
    if shutil.which("chromium") is None and not Path(CHROMIUM).exists():
        pytest.fail("Debian chromium is required for the browser test (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    server, thread, link, study = start_server(tiny_dataset, scale_file)
    db = tiny_dataset / "ratings.sqlite"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(link)
            # training block: 4 anchors, not recorded
            page.wait_for_selector("#training:not([hidden])")
            for _ in range(4):
                page.keyboard.press("Enter")
            page.wait_for_selector("#training", state="hidden")
            page.wait_for_function("document.getElementById('stimulus').dataset.image")
            seen = []

            def rate(key: str, expected_done: int) -> None:
                page.wait_for_function("document.body.dataset.ready === '1'")
                seen.append(page.eval_on_selector("#stimulus", "e => e.dataset.image"))
                page.keyboard.press(key)
                page.wait_for_function(f"document.body.dataset.done === '{expected_done}'")

            rate("3", 1)
            # score keys are ignored until the next image has loaded (its request held here)
            page.wait_for_function("document.body.dataset.ready === '1'")
            seen.append(page.eval_on_selector("#stimulus", "e => e.dataset.image"))
            held = []

            def hold(route) -> None:
                held.append(route)

            page.route("**/image/**", hold)
            page.keyboard.press("0")
            page.wait_for_function("document.body.dataset.done === '2'")
            page.wait_for_function("document.body.dataset.ready === '0'")
            page.keyboard.press("1")
            page.wait_for_timeout(300)
            assert page.eval_on_selector("body", "e => e.dataset.done") == "2"
            assert page.inner_text("#message") == "Wait until the image is shown."
            assert len(held) == 1
            held[0].continue_()
            page.wait_for_function("document.body.dataset.ready === '1'")
            page.unroute("**/image/**")
            assert page.inner_text("#message") == ""
            # full size, unscaled: natural size == displayed size == 24x20 (device pixel ratio 1)
            page.wait_for_function("document.getElementById('stimulus').complete")
            dims = page.eval_on_selector(
                "#stimulus",
                "e => [e.naturalWidth, e.naturalHeight, e.clientWidth, e.clientHeight,"
                " getComputedStyle(e).imageRendering]",
            )
            assert dims[:4] == [24, 20, 24, 20]
            assert dims[4] in ("pixelated", "crisp-edges")  # no smoothing
            rate("4", 3)
            # break reminder after 3: keys are ignored until Enter
            page.wait_for_selector("#break:not([hidden])")
            page.keyboard.press("2")
            page.wait_for_timeout(200)
            assert page.eval_on_selector("body", "e => e.dataset.done") == "3"
            page.keyboard.press("Enter")
            page.wait_for_selector("#break", state="hidden")
            # reload: resumes at the 4th image, no training again
            page.reload()
            page.wait_for_function("document.body.dataset.done === '3'")
            assert page.locator("#training").is_hidden()
            assert page.inner_text("#count") == "3 / 108"
            fourth = page.eval_on_selector("#stimulus", "e => e.dataset.image")
            assert fourth == study.store.next_item("alice")[1]
            # undo the last rating with Backspace: image 3 comes back
            page.keyboard.press("Backspace")
            page.wait_for_function("document.body.dataset.done === '2'")
            assert page.eval_on_selector("#stimulus", "e => e.dataset.image") == seen[2]
            # a HiDPI screen (2 device pixels per CSS pixel): still one image pixel per device
            # pixel, i.e. 12x10 CSS pixels for the 24x20 image
            hidpi = browser.new_page(device_scale_factor=2)
            hidpi.goto(link)
            hidpi.wait_for_function("document.body.dataset.ready === '1'")
            dims = hidpi.eval_on_selector(
                "#stimulus",
                "e => [window.devicePixelRatio, e.naturalWidth, e.naturalHeight,"
                " e.getBoundingClientRect().width, e.getBoundingClientRect().height]",
            )
            assert dims == [2, 24, 20, 12, 10]
            browser.close()
        # restart the server: the session resumes exactly where it stopped
        stop_server(server, thread, study)
        server, thread, link2, study = start_server(tiny_dataset, scale_file)
        # the same private token on the new port (the database keeps only its hash, #18.10)
        link2 = link2.rsplit("/", 1)[0] + "/" + link.rsplit("/", 1)[1]
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(link2)
            page.wait_for_function("document.body.dataset.done === '2'")
            assert page.eval_on_selector("#stimulus", "e => e.dataset.image") == seen[2]
            page.keyboard.press("1")
            page.wait_for_function("document.body.dataset.done === '3'")
            browser.close()
    finally:
        stop_server(server, thread, study)
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT image, score, position, source FROM ratings WHERE rater='alice' ORDER BY position"
    ).fetchall()
    assert rows == [(seen[0], 3, 0, "web"), (seen[1], 0, 1, "web"), (seen[2], 1, 2, "web")]
    assert conn.execute("SELECT image, score FROM retracted").fetchall() == [(seen[2], 4)]
