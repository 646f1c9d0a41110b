"""Drive the rating app in Debian's Chromium (Playwright, system browser): training block,
keyboard rating, break reminder, reload/resume, undo, server restart; then check the database."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from petctiqa.ratings.study import open_study
from petctiqa.ratings.web import create_app
from tests.ratings.conftest import write_tiny_dataset

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


def test_rate_by_keyboard_reload_resume_undo_in_chromium(tiny_dataset, scale_file, chromium):
    sync_api = pytest.importorskip("playwright.sync_api")
    server, thread, link, study = start_server(tiny_dataset, scale_file)
    db = tiny_dataset / "ratings.sqlite"
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(link)
            # training block: 4 anchors, not recorded
            page.wait_for_selector("#training:not([hidden])")
            for _ in range(4):
                page.keyboard.press("Enter")
            page.wait_for_selector("#training", state="hidden")
            page.wait_for_function("() => document.getElementById('stimulus').dataset.image")
            seen = []

            def rate(key: str, expected_done: int) -> None:
                page.wait_for_function("() => document.body.dataset.ready === '1'")
                seen.append(page.eval_on_selector("#stimulus", "e => e.dataset.image"))
                page.keyboard.press(key)
                page.wait_for_function(f"() => document.body.dataset.done === '{expected_done}'")

            rate("3", 1)
            # score keys are ignored until the next image has loaded (its request held here)
            page.wait_for_function("() => document.body.dataset.ready === '1'")
            seen.append(page.eval_on_selector("#stimulus", "e => e.dataset.image"))
            held = []

            def hold(route) -> None:
                held.append(route)

            page.route("**/image/**", hold)
            page.keyboard.press("0")
            page.wait_for_function("() => document.body.dataset.done === '2'")
            page.wait_for_function("() => document.body.dataset.ready === '0'")
            page.keyboard.press("1")
            page.wait_for_timeout(300)
            assert page.eval_on_selector("body", "e => e.dataset.done") == "2"
            assert page.inner_text("#message") == "Wait until the image is shown."
            assert len(held) == 1
            held[0].continue_()
            page.wait_for_function("() => document.body.dataset.ready === '1'")
            page.unroute("**/image/**")
            assert page.inner_text("#message") == ""
            # full size, unscaled: natural size == displayed size == 24x20 (device pixel ratio 1)
            page.wait_for_function("() => document.getElementById('stimulus').complete")
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
            page.wait_for_function("() => document.body.dataset.done === '3'")
            assert page.locator("#training").is_hidden()
            assert page.inner_text("#count") == "3 / 108"
            fourth = page.eval_on_selector("#stimulus", "e => e.dataset.image")
            assert fourth == study.store.next_item("alice")[1]
            # undo the last rating with Backspace: image 3 comes back
            page.keyboard.press("Backspace")
            page.wait_for_function("() => document.body.dataset.done === '2'")
            assert page.eval_on_selector("#stimulus", "e => e.dataset.image") == seen[2]
            # a HiDPI screen (2 device pixels per CSS pixel): still one image pixel per device
            # pixel, i.e. 12x10 CSS pixels for the 24x20 image
            hidpi = browser.new_page(device_scale_factor=2)
            hidpi.goto(link)
            hidpi.wait_for_function("() => document.body.dataset.ready === '1'")
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
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(link2)
            page.wait_for_function("() => document.body.dataset.done === '2'")
            assert page.eval_on_selector("#stimulus", "e => e.dataset.image") == seen[2]
            page.keyboard.press("1")
            page.wait_for_function("() => document.body.dataset.done === '3'")
            browser.close()
    finally:
        stop_server(server, thread, study)
    conn = sqlite3.connect(db)
    rows = conn.execute(
        "SELECT image, score, position, source FROM ratings WHERE rater='alice' ORDER BY position"
    ).fetchall()
    assert rows == [(seen[0], 3, 0, "web"), (seen[1], 0, 1, "web"), (seen[2], 1, 2, "web")]
    assert conn.execute("SELECT image, score FROM retracted").fetchall() == [(seen[2], 4)]


# ----------------------------------------------------------------------------- the viewer


def _screenshot_rgb(page, box: dict) -> np.ndarray:
    """The page's pixels inside ``box`` (CSS px; device pixel ratio 1)."""
    clip = {k: box[k] for k in ("x", "y", "width", "height")}
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=clip))).convert("RGB"))


def _box(page, selector: str) -> dict:
    return page.eval_on_selector(
        selector,
        "e => { const r = e.getBoundingClientRect();"
        " return {x: r.left, y: r.top, width: r.width, height: r.height}; }",
    )


def _nothing_covers(page, selector: str) -> bool:
    """True when the element itself is what the browser hits at its centre and four corners."""
    return page.eval_on_selector(
        selector,
        "e => { const r = e.getBoundingClientRect();"
        " const pts = [[0.5, 0.5], [0.05, 0.05], [0.95, 0.05], [0.05, 0.95], [0.95, 0.95]];"
        " return pts.every(([fx, fy]) => document.elementFromPoint("
        "   r.left + fx * r.width, r.top + fy * r.height) === e); }",
    )


def test_training_examples_are_shown_exactly_like_rated_images(tiny_dataset, scale_file, chromium):
    """No overlay, no caption over the image: the screen shows the reference PNG's own pixels."""
    sync_api = pytest.importorskip("playwright.sync_api")
    server, thread, link, study = start_server(tiny_dataset, scale_file)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1000, "height": 700})
            page.goto(link)
            page.wait_for_selector("#training:not([hidden])")
            page.wait_for_function("() => document.body.dataset.ready === '1'")
            src = page.eval_on_selector("#stimulus", "e => e.getAttribute('src')")
            assert "/image/references/" in src  # the first anchor is a reference render
            reference = np.asarray(Image.open(tiny_dataset / src.split("/image/", 1)[1]))
            assert _nothing_covers(page, "#stimulus")
            caption = _box(page, "#training")
            image = _box(page, "#stimulus")
            assert caption["y"] + caption["height"] <= image["y"]  # the caption sits above
            assert (image["width"], image["height"]) == (24, 20)
            np.testing.assert_array_equal(_screenshot_rgb(page, image), reference)
            page.screenshot(path=str(tiny_dataset / "training.png"))
            for _ in range(4):
                page.keyboard.press("Enter")
            page.wait_for_selector("#training", state="hidden")
            page.wait_for_function("() => document.body.dataset.ready === '1'")
            # the rated image: same viewer, same 1:1 geometry, nothing over it either
            assert _nothing_covers(page, "#stimulus")
            rated = _box(page, "#stimulus")
            assert (rated["width"], rated["height"]) == (24, 20)
            assert rated["x"] == image["x"]
            browser.close()
    finally:
        stop_server(server, thread, study)


def _blocks_are_uniform(pixels: np.ndarray, k: int) -> bool:
    """Every k x k block (from the top-left corner) holds one colour: nothing interpolated."""
    h, w = (pixels.shape[0] // k) * k, (pixels.shape[1] // k) * k
    blocks = pixels[:h, :w].reshape(h // k, k, w // k, k, 3)
    return bool((blocks == blocks[:, :1, :, :1]).all())


def test_zoom_fit_magnifier_pan_by_keyboard_are_logged_with_the_rating(
    tmp_path, scale_file, chromium
):
    sync_api = pytest.importorskip("playwright.sync_api")
    dataset = write_tiny_dataset(tmp_path / "big", patients=2, slices=1, size=(400, 300))
    server, thread, link, study = start_server(dataset, scale_file)
    try:
        with sync_api.sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 900, "height": 420})
            page.goto(link)
            page.wait_for_selector("#training:not([hidden])")
            for _ in range(4):
                page.keyboard.press("Enter")
            page.wait_for_selector("#training", state="hidden")
            page.wait_for_function("() => document.body.dataset.ready === '1'")
            zoom = lambda: page.eval_on_selector("body", "e => Number(e.dataset.zoom)")  # noqa: E731
            assert zoom() == 1 and _box(page, "#stimulus")["width"] == 400
            assert page.inner_text("#zoom-level").startswith("1:1")
            # + : whole steps, each image pixel an exact 2x2 block of screen pixels
            page.keyboard.press("+")
            page.wait_for_function("() => document.body.dataset.zoom === '2'")
            box = _box(page, "#stimulus")
            assert (box["width"], box["height"]) == (800, 600)
            style = page.eval_on_selector("#stimulus", "e => getComputedStyle(e).imageRendering")
            assert style in ("pixelated", "crisp-edges")
            view = _box(page, "#viewport")
            left, top = max(box["x"], view["x"]), max(box["y"], view["y"])
            left += (left - box["x"]) % 2  # start on a block boundary
            top += (top - box["y"]) % 2
            shot = _screenshot_rgb(page, {"x": left, "y": top, "width": 200, "height": 100})
            assert _blocks_are_uniform(shot, 2) and not _blocks_are_uniform(shot, 4)
            # arrows pan the zoomed image
            page.keyboard.press("ArrowDown")
            assert page.eval_on_selector("#viewport", "e => e.scrollTop") > 0
            # F: fit to the window; smaller than 1:1 here, so the page says it is resampled
            page.keyboard.press("f")
            page.wait_for_function("() => Number(document.body.dataset.zoom) < 1")
            assert "RESAMPLED" in page.inner_text("#zoom-level")
            box, view = _box(page, "#stimulus"), _box(page, "#viewport")
            assert box["height"] <= view["height"] and box["width"] <= view["width"]
            # O: back to 1:1
            page.keyboard.press("o")
            page.wait_for_function("() => document.body.dataset.zoom === '1'")
            # M: magnifier, 4 screen pixels per image pixel, drawn from the image's own pixels
            page.keyboard.press("m")
            page.wait_for_selector("#lens:not([hidden])")
            lens_vs_image = """() => {
                const img = document.getElementById('stimulus');
                const lens = document.getElementById('lens');
                const c = document.createElement('canvas');
                c.width = img.naturalWidth; c.height = img.naturalHeight;
                const g = c.getContext('2d'); g.drawImage(img, 0, 0);
                const l = lens.getContext('2d');
                const out = [];
                for (const [k, j] of [[0, 0], [3, 1], [10, 7], [24, 24]]) {
                    const a = Array.from(l.getImageData(4 * k + 1, 4 * j + 2, 1, 1).data);
                    const block = Array.from(l.getImageData(4 * k, 4 * j, 4, 4).data);
                    out.push([a, block.every((v, i) => v === a[i % 4])]);
                }
                return [out, Array.from(g.getImageData(175, 125, 1, 1).data),
                        Array.from(g.getImageData(175 + 10, 125 + 7, 1, 1).data),
                        lens.width, lens.clientWidth];
            }"""
            blocks, first, tenth, lens_px, lens_css = page.evaluate(lens_vs_image)
            assert lens_px == lens_css == 200  # device pixels = CSS pixels at ratio 1
            assert all(uniform for _, uniform in blocks)
            # the lens centres on the image centre (200, 150): its corner is pixel (175, 125)
            assert blocks[0][0] == first and blocks[2][0] == tenth
            page.keyboard.press("ArrowRight")  # moves the lens focus by 8 image pixels
            moved = page.evaluate(lens_vs_image)
            assert moved[0][0][0] != blocks[0][0] or moved[0][1][0] != blocks[1][0]
            page.keyboard.press("Escape")
            page.wait_for_selector("#lens", state="hidden")
            # keys outside the scale or without a meaning say so, and rate nothing
            page.keyboard.press("7")
            assert page.inner_text("#message") == "Key 7 is not on the scale: scores are 0-4."
            page.keyboard.press("x")
            assert page.inner_text("#message").startswith("Key x does nothing here")
            assert page.eval_on_selector("body", "e => e.dataset.done") == "0"
            rated = page.eval_on_selector("#stimulus", "e => e.dataset.image")
            page.wait_for_timeout(50)  # a measurable viewing time
            page.keyboard.press("2")
            page.wait_for_function("() => document.body.dataset.done === '1'")
            assert page.inner_text("#message") == ""
            # a HiDPI screen: 1:1 and 2x stay whole device pixels
            hidpi = browser.new_page(device_scale_factor=2, viewport={"width": 900, "height": 420})
            hidpi.goto(link)
            hidpi.wait_for_function("() => document.body.dataset.ready === '1'")
            assert _box(hidpi, "#stimulus")["width"] == 200
            hidpi.keyboard.press("+")
            hidpi.wait_for_function("() => document.body.dataset.zoom === '2'")
            assert _box(hidpi, "#stimulus")["width"] == 400
            browser.close()
    finally:
        stop_server(server, thread, study)
    conn = sqlite3.connect(dataset / "ratings.sqlite")
    ((image, score, viewing),) = conn.execute(
        "SELECT r.image, r.score, v.viewing FROM ratings r JOIN viewing v "
        "ON v.rater = r.rater AND v.image = r.image AND v.rated_at = r.rated_at"
    ).fetchall()
    record = json.loads(viewing)
    assert (image, score) == (rated, 2)
    assert record["zooms"][:2] == [1, 2] and record["zooms"][3] == 1
    assert 0 < record["zooms"][2] < 1 and record["resampled"] is True
    assert record["magnifier"] is True and record["panned"] is True
    assert record["final_zoom"] == 1 and record["device_pixel_ratio"] == 1
    assert record["view_ms"] >= 50
