"""The demo in a real browser: Debian's chromium driven by Playwright (no browser download).

Uploads a bundled real 640x480 IVF pair (``assets/examples/tno/bosnia``), waits for the maps and drafted
captions, clicks a detected object's chip (which adds a phrase naming it to the caption), fuses and checks the
text-effect map; edits a caption, clicks Fuse, and checks the result, the before/after slider, both error maps
and the metric panel; then fuses again with text off and checks the A/B comparison, and times a warm caption
edit. Each Fuse is timed twice: from the click to the fused image on screen (it comes first, as soon as the
network returns) and to the full panel (maps, metrics, chart, final summary). Screenshots and the times go to
``$TGIF_SCREENSHOT_DIR`` (default: the test's temp folder).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CHROMIUM = os.environ.get("TGIF_CHROMIUM", "/usr/bin/chromium")
if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
    pytest.skip(f"no chromium at {CHROMIUM} (install it with `apt-get install -y chromium`)", allow_module_level=True)
playwright_api = pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")

from app.config import AppConfig  # noqa: E402
from app.layout import CSS, build_demo  # noqa: E402
from tgif.perception.detection import default_detector_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: ``TGIF_BROWSER_PAIR="ir.png,vi.png"`` times another IVF pair (e.g. a 640x480 MSRS pair).
_PAIR = os.environ.get("TGIF_BROWSER_PAIR", "")
IR, VI = ((Path(p) for p in _PAIR.split(",")) if _PAIR else
          (ROOT / "assets" / "examples" / "tno" / "bosnia" / "ir.png",
           ROOT / "assets" / "examples" / "tno" / "bosnia" / "vi.png"))
#: True in the page once the fused image shown differs from ``previous`` (its src) and has loaded; polled every frame.
FUSED_SHOWN = """(previous) => { const img = document.querySelector('#fused img');
    return !!img && img.src !== previous && img.complete && img.naturalWidth > 0
        && document.querySelector('#summary').innerText; }"""
#: True once the summary is the finished run's (``Run N: LABEL on DEVICE``), the last panel a run fills.
FULL_SHOWN = """(heading) => document.querySelector('#summary').innerText.includes(heading)"""
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGIF_CACHE_DIR", str(tmp / "cache"))
        mp.delenv("OPENAI_API_KEY", raising=False)
        if not Path(default_detector_weights()).exists():
            mp.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")
        demo = build_demo(AppConfig(output_dir=tmp / "out", captioner="template", device="cpu"))
        _, url, _ = demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, css=CSS)
        yield url
        demo.close()


def _timed_fuse(page, heading: str) -> dict[str, float | str]:
    """Click Fuse; seconds until the new fused image is on screen and until the summary starts with ``heading``
    (the full panel: maps, metrics and chart come with it), and the summary shown with the fused image."""
    image = page.locator("#fused img")
    previous = (image.get_attribute("src") if image.count() else None) or ""
    started = time.perf_counter()
    page.locator("#fuse_btn").click()
    with_fused = page.wait_for_function(FUSED_SHOWN, arg=previous, polling="raf", timeout=120_000).json_value()
    fused = time.perf_counter() - started
    page.wait_for_function(FULL_SHOWN, arg=heading, polling="raf", timeout=120_000)
    return {"fused_s": fused, "full_s": time.perf_counter() - started, "summary_with_fused": with_fused}


def test_upload_edit_fuse_compare_in_chromium(app_url, tmp_path):
    out_dir = Path(os.environ.get("TGIF_SCREENSHOT_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    expect = playwright_api.expect
    outside: list[str] = []
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1800})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(("http://127.0.0.1", "data:",
                                                                                      "blob:")) else None)
        page.goto(app_url, wait_until="load")
        expect(page.locator("#fuse_btn")).to_be_visible(timeout=60_000)
        expect(page.locator("#device")).to_contain_text("CPU")
        page.locator("#source_1 input[type=file]").set_input_files(str(IR))
        page.locator("#source_2 input[type=file]").set_input_files(str(VI))
        caption_1 = page.locator("#caption_1 textarea")
        caption_2 = page.locator("#caption_2 textarea")
        expect(caption_1).to_have_value(re.compile("infrared"), timeout=120_000)
        expect(caption_2).to_have_value(re.compile("visible"), timeout=120_000)
        expect(page.locator("#detections_1 img").first).to_be_visible()
        expect(page.locator("#segmentation_2 img").first).to_be_visible()
        expect(page.locator("#caption_note_1")).to_contain_text("template drafter")

        drafted_1 = caption_1.input_value()
        fresh = out_dir / "app_fresh.jpg"
        page.screenshot(path=str(fresh), full_page=True, type="jpeg", quality=85)

        # Steering: a click on a detected object's chip adds a phrase naming it; Fuse shows the text effect.
        # (Without a detection on source 1, e.g. the bundled pair, the phrase is typed instead.)
        chips = page.locator("#detections_1 .legend-item")
        steerable = chips.filter(has_text=re.compile("person|car|truck"))  # what the IVF model was taught to steer
        if chips.count():
            pick = steerable.first if steerable.count() else chips.first
            chip = pick.inner_text()
            pick.click()
            expect(caption_1).to_have_value(re.compile(re.escape(f"Highlight the {chip}.")), timeout=30_000)
        else:
            caption_1.fill(drafted_1 + " Highlight the person in the centre.")
        assert caption_1.input_value().startswith(drafted_1) and caption_1.input_value() != drafted_1
        timings: dict[str, dict] = {}
        summaries: list[str] = []

        def fuse(key: str, number: int, label: str = "TGIF") -> None:
            """Click Fuse; time the fused image on screen and the full panel (the run's final summary)."""
            timings[key] = _timed_fuse(page, f"Run {number}: {label} on ")
            summaries.append(page.locator("#summary").inner_text())

        fuse("cold", 1)
        effect = page.locator("#text_effect img")
        expect(effect).to_be_visible(timeout=30_000)
        expect(page.locator("#summary")).to_contain_text("Text effect (this run − drafted captions)")
        # where the captions point: the objects over the fused image, the clicked one matched
        expect(page.locator("#pointing img")).to_be_visible(timeout=30_000)
        if chips.count():
            expect(page.locator("#summary")).to_contain_text(f"The captions point at: {chip}")
        effect.scroll_into_view_if_needed()
        steer_shot = out_dir / "app_steer.jpg"
        page.locator("#fused").scroll_into_view_if_needed()
        page.screenshot(path=str(steer_shot), full_page=False, type="jpeg", quality=85)

        caption_1.fill("A bright pedestrian walks along the road at night; keep the warm person sharp.")
        fuse("caption_edit", 2)
        expect(page.locator("#fused img")).to_be_visible()
        expect(page.locator("#slider img").first).to_be_visible()
        expect(page.locator("#error_1 img")).to_be_visible()
        expect(page.locator("#error_2 img")).to_be_visible()
        expect(page.locator("#metrics")).to_contain_text("laplacian")
        expect(page.locator("#metrics")).to_contain_text("TGIF")
        expect(page.locator("#metrics_plot .tgif-chart-card")).to_have_count(6)
        expect(page.locator("#metrics_plot")).to_contain_text("★")
        expect(page.locator("#downloads")).to_contain_text(".png")

        page.locator("#use_text input[type=checkbox]").uncheck()
        fuse("no_text", 3, "TGIF (no text)")
        diff = page.locator("#compare_diff img")
        expect(diff).to_have_count(1, timeout=30_000)
        diff.scroll_into_view_if_needed()
        expect(diff).to_be_visible()
        expect(page.locator("#compare_table")).to_contain_text("VIF")
        expect(page.locator("#compare_text")).to_contain_text("keep the warm person sharp")
        shot = out_dir / "app_fuse.jpg"
        page.screenshot(path=str(shot), full_page=True, type="jpeg", quality=85)

        # Warm timing: text guidance back on, models already loaded (run 2's captions: decoded already).
        page.locator("#use_text input[type=checkbox]").check()
        fuse("warm", 4)
        # The product's loop, warm: edit a caption, click Fuse (only the text features and the decoder run).
        caption_1.fill(drafted_1 + " The person is what matters.")
        fuse("warm_caption_edit", 5)
        browser.close()
    for key, timing in timings.items():  # two steps: the fused image came first, the rest after it
        assert timing["fused_s"] < timing["full_s"], (key, timing)
        assert "maps, metrics and downloads follow" in timing["summary_with_fused"], (key, timing)
    timing = {"pair": ["/".join(IR.parts[-3:]), "/".join(VI.parts[-3:])],
              **{f"{key}_click_to_fused_image_s": round(t["fused_s"], 2) for key, t in timings.items()},
              **{f"{key}_click_to_full_panel_s": round(t["full_s"], 2) for key, t in timings.items()},
              "server_summaries": summaries}
    (out_dir / "app_fuse_timing.json").write_text(json.dumps(timing, indent=1))
    assert shot.stat().st_size > 30_000 and steer_shot.stat().st_size > 20_000 and fresh.stat().st_size > 20_000
    assert not outside, f"the page requested outside resources: {outside[:5]}"


def test_first_visit_and_failed_uploads_in_chromium(app_url, tmp_path):
    """A newcomer's first screen (1400x1000): the Fuse button and the examples are on it. Then what goes wrong
    is said once: a corrupt upload, and two sources of different sizes (caught before the job is queued)."""
    out_dir = Path(os.environ.get("TGIF_SCREENSHOT_DIR") or tmp_path)
    out_dir.mkdir(parents=True, exist_ok=True)
    expect = playwright_api.expect
    broken = tmp_path / "scan.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    small = tmp_path / "small.png"
    from PIL import Image

    Image.open(VI).resize((120, 90)).save(small)
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(app_url, wait_until="load")
        button = page.locator("#fuse_btn")
        expect(button).to_be_visible(timeout=60_000)
        page.screenshot(path=str(out_dir / "app_first_visit.jpg"), type="jpeg", quality=85)
        box = button.bounding_box()
        assert box is not None and box["y"] + box["height"] <= 1000, f"Fuse is below the fold: {box}"

        page.locator("#source_1 input[type=file]").set_input_files(str(broken))
        page.locator("#source_2 input[type=file]").set_input_files(str(VI))
        toast = page.locator(".toast-body", has_text="scan.png")
        expect(toast.first).to_be_visible(timeout=60_000)
        expect(toast).to_have_count(1)  # said once
        expect(page.locator("#caption_2 textarea")).to_have_value(re.compile("visible"), timeout=120_000)
        button.click()  # refused before it is queued: said on the source, once, and the button stays usable
        refusal = page.get_by_text("scan.png: not a readable image file (unknown or corrupt format); upload")
        expect(refusal.first).to_be_visible(timeout=30_000)
        expect(button).to_have_text("Fuse")
        expect(page.locator("#summary")).to_have_text("")  # no run, nothing pretends otherwise
        page.screenshot(path=str(out_dir / "app_failed_upload.jpg"), full_page=False, type="jpeg", quality=85)

        # caption 2 already reads "visible" from the first upload: wait for source 2's new analysis by its map
        map_2 = page.locator("#detections_2 img").first
        previous_map = map_2.get_attribute("src")
        page.locator("#source_1 input[type=file]").set_input_files(str(IR))
        page.locator("#source_2 input[type=file]").set_input_files(str(small))
        expect(page.locator("#caption_1 textarea")).to_have_value(re.compile("infrared"), timeout=120_000)
        expect(map_2).not_to_have_attribute("src", previous_map, timeout=120_000)
        expect(page.locator("#caption_2 textarea")).to_have_value(re.compile("visible"), timeout=120_000)
        assert page.locator(".toast-body", has_text="differ in size").count() == 0  # no toast while uploading
        button.click()
        message = page.get_by_text("The sources differ in size", exact=False)
        expect(message.first).to_be_visible(timeout=30_000)
        expect(message).to_have_count(1)  # said once, on the Resize option (the remedy)
        expect(page.locator("#resize").get_by_text("The sources differ in size", exact=False)).to_be_visible()
        expect(button).to_have_text("Fuse")
        page.screenshot(path=str(out_dir / "app_sizes_differ.jpg"), full_page=False, type="jpeg", quality=85)
        # the message asks the user to tick Resize: it stands above the option instead of covering it
        said = page.locator("#resize .validation-error").bounding_box()
        option = page.locator("#resize label").bounding_box()
        assert said is not None and option is not None and said["y"] + said["height"] <= option["y"] + 1, (said, option)
        tick = page.locator("#resize input[type=checkbox]")
        tick.click()
        expect(tick).to_be_checked()
        tick.click()
        expect(tick).not_to_be_checked()

        # Fuse clicked right after an upload, while source 2 is still analysed: the refusal outlives the analysis
        # (a message on source 2 itself was cleared when that analysis ended)
        smaller = tmp_path / "smaller.png"
        Image.open(VI).resize((100, 75)).save(smaller)
        previous_map = map_2.get_attribute("src")
        view_2 = page.locator("#source_2 img").first
        previous_view = view_2.get_attribute("src")
        page.locator("#source_2 input[type=file]").set_input_files(str(smaller))
        expect(view_2).not_to_have_attribute("src", previous_view, timeout=30_000)  # uploaded; its analysis starts
        button.click()
        sizes = f"({'x'.join(map(str, Image.open(IR).size))} vs 100x75)"  # the pair under test (TGIF_BROWSER_PAIR)
        expect(page.get_by_text(sizes, exact=False).first).to_be_visible(timeout=30_000)
        expect(map_2).not_to_have_attribute("src", previous_map, timeout=120_000)
        expect(page.get_by_text(sizes, exact=False)).to_have_count(1)
        browser.close()
