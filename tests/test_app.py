"""The demo app's handlers (called directly) and its HTTP API (through gradio_client on 127.0.0.1).

Everything uses the bundled examples or images built here; the detector is the shared YOLO11n
export when present, else a random-weight YOLO11n built from its yaml (no download either way).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from app.callbacks import (  # noqa: E402
    add_object_phrase,
    analyze_source,
    compare_runs,
    parse_task,
    run_fusion,
    source_labels,
    user_errors,
)
from app.config import AppConfig  # noqa: E402
from app.layout import CSS, _methods, build_demo  # noqa: E402
from app.models import ModelHub  # noqa: E402
from tgif.baselines import fuse as baseline_fuse  # noqa: E402
from tgif.errors import TgifError  # noqa: E402
from tgif.io import load_image, load_pair  # noqa: E402
from tgif.metrics import compute_metrics, gray_levels_of, read_gray_levels  # noqa: E402
from tgif.perception.detection import default_detector_weights  # noqa: E402
from tgif.visualize import HIGHLIGHT_COLOUR  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IR = ROOT / "assets" / "examples" / "ivf" / "ir.png"
VI = ROOT / "assets" / "examples" / "ivf" / "vi.png"
KEY = "sk-test-DO-NOT-LEAK-0123456789abcdef"


@pytest.fixture(scope="module")
def app_env(tmp_path_factory):
    """Environment for the app: private caches, and a detector that needs no download."""
    tmp = tmp_path_factory.mktemp("app")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGIF_CACHE_DIR", str(tmp / "cache"))
        if not Path(default_detector_weights()).exists():
            mp.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")
        mp.delenv("OPENAI_API_KEY", raising=False)
        yield tmp


@pytest.fixture(scope="module")
def hub(app_env) -> ModelHub:
    return ModelHub(AppConfig(output_dir=app_env / "out", captioner="template", device="cpu"))


def _run(hub, path_1=IR, path_2=VI, task="ivf", captions=("", ""), use_text=True, method="TGIF", resize=False,
         number=1, session_id="test"):
    return run_fusion(hub, str(path_1) if path_1 else None, str(path_2) if path_2 else None, task, captions[0],
                      captions[1], use_text, method, resize, number, session_id=session_id)


# ----------------------------------------------------------------------------------------- settings


def test_config_reads_and_checks_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("TGIF_APP_CONCURRENCY", "3")
    monkeypatch.setenv("TGIF_APP_OUTPUT_DIR", str(tmp_path))
    monkeypatch.setenv("TGIF_APP_PRELOAD", "1")
    monkeypatch.setenv("TGIF_APP_QUEUE_SIZE", "5")
    monkeypatch.setenv("TGIF_APP_PAIRS", "2")
    monkeypatch.setenv("TGIF_APP_DRAFT_CONCURRENCY", "3")
    monkeypatch.setenv("TGIF_APP_JOB_TIMEOUT", "45")
    config = AppConfig.from_env()
    assert config.job_timeout == 45
    assert (config.concurrency, config.output_dir, config.preload) == (3, tmp_path, True)
    assert (config.queue_size, config.pairs, config.draft_concurrency) == (5, 2, 3)
    assert config.max_pixels == (4_000_000 if torch.cuda.is_available() else 1_000_000)  # per device by default
    monkeypatch.setenv("TGIF_APP_DEVICE", "cpu")
    assert AppConfig.from_env().max_pixels == 1_000_000
    monkeypatch.setenv("TGIF_APP_MAX_PIXELS", "2500000")
    assert AppConfig.from_env().max_pixels == 2_500_000
    monkeypatch.setenv("TGIF_APP_CONCURRENCY", "many")
    with pytest.raises(TgifError, match="TGIF_APP_CONCURRENCY must be a whole number"):
        AppConfig.from_env()
    monkeypatch.setenv("TGIF_APP_CONCURRENCY", "1")
    monkeypatch.setenv("TGIF_APP_DEVICE", "tpu")
    with pytest.raises(TgifError, match="TGIF_APP_DEVICE must be auto, cpu or cuda"):
        AppConfig.from_env()


def test_task_choices_name_both_sources():
    assert parse_task("mif-pet") == ("mif", ("mri", "pet"))
    assert source_labels("ivf") == ("infrared", "visible")
    assert source_labels("mff") == ("near-focus", "far-focus")
    with pytest.raises(gr.Error, match="Unknown task"):
        parse_task("xyz")


def test_examples_table_heads_its_columns_for_every_task(hub):
    """The examples hold IVF, MIF, MEF and MFF pairs: the table's headers must not name IVF's modalities."""
    demo = build_demo(hub.config, hub)
    datasets = [block for block in demo.config["components"] if block["type"] == "dataset"]
    assert len(datasets) == 1
    assert datasets[0]["props"]["headers"] == ["Task", "Source 1", "Source 2"]
    tasks = {sample[0] for sample in datasets[0]["props"]["samples"]}
    assert {"ivf", "mif-ct", "mef", "mff"} <= tasks


def test_missing_weights_offer_baselines_with_a_notice(app_env, monkeypatch):
    monkeypatch.setenv("TGIF_WEIGHTS_DIR", str(app_env / "no-weights"))
    hub = ModelHub(AppConfig(output_dir=app_env / "out2", captioner="template", device="cpu"))
    methods, default, notice = _methods(hub, "ivf")
    assert "TGIF" not in methods and default == "laplacian"
    assert "tgif_ivf.safetensors" in notice
    with pytest.raises(gr.Error, match="TGIF model for IVF is missing"):
        _run(hub)


# ----------------------------------------------------------------------------------------- analysis


def test_analyze_gives_maps_classes_and_a_drafted_caption(hub):
    result = analyze_source(hub, str(IR), "ivf", 1)
    image, boxes = result.detection
    assert image.shape == (240, 320, 3) and image.dtype == np.uint8
    assert all(len(box) == 4 and isinstance(label, str) for box, label in boxes)
    seg_image, regions = result.segmentation
    assert regions and all(mask.shape == (240, 320) for mask, _ in regions)
    assert result.classes.startswith("**Detected:**")
    assert "infrared" in result.caption and len(result.caption) > 40
    assert "template drafter" in result.caption_note
    assert analyze_source(hub, None, "ivf", 1) is None


def test_offline_without_detector_weights_still_drafts_and_fuses(app_env, monkeypatch):
    monkeypatch.setenv("TGIF_YOLO_WEIGHTS", str(app_env / "missing_openvino_model"))
    monkeypatch.setenv("TGIF_CACHE_DIR", str(app_env / "cache-offline"))
    offline = ModelHub(AppConfig(output_dir=app_env / "out-offline", captioner="template", device="cpu"))
    with pytest.warns(UserWarning, match="No object detection .*segmentation only"):
        result = analyze_source(offline, str(IR), "ivf", 1)
    assert result.detection[1] == [] and result.segmentation[1]  # no boxes, regions still drawn
    assert "no objects" in result.classes and "infrared" in result.caption
    out = _run(offline)  # empty captions are drafted the same way; the fusion runs
    assert out.fused.shape == (240, 320, 3) and "infrared" in out.run["captions"][0]
    record = json.loads(Path(out.files[1]).read_text())
    assert record["caption_authors"] == ["draft:template", "draft:template"]
    # the degraded perception is said once (both sources share it), in the summary and in the run record
    assert sum("No object detection" in note for note in record["notes"]) == 1
    assert out.summary.count("No object detection") == 1


def test_fuse_validator_checks_sources_before_the_job_runs(hub, tmp_path):
    from PIL import Image

    from app.callbacks import validate_fuse

    small = tmp_path / "small.png"
    Image.fromarray((load_image(VI).pixels[:100, :120] * 255).astype(np.uint8)).save(small)
    rotated = tmp_path / "rotated.jpg"  # stored 240 wide, 320 high, shown 320x240 (EXIF orientation 6)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(np.full((320, 240), 128, np.uint8)).save(rotated, exif=exif)
    def failures(path_1, path_2, resize=False):
        checks = validate_fuse(path_1, path_2, "ivf", "", "", True, "TGIF", resize, "source 2", [])
        assert len(checks) == 10  # one per input of the Fuse event
        return [c["message"] for c in checks if not c["is_valid"]]

    assert failures(str(IR), str(VI)) == [] and failures(str(IR), str(rotated)) == []
    assert failures(str(IR), str(small)) == ["The sources differ in size (320x240 vs 120x100): tick “Resize source 2 "
                                             "to source 1” to fuse them."]
    checks = validate_fuse(str(IR), str(small), "ivf", "", "", True, "TGIF", False, "source 2", [])
    assert [c["is_valid"] for c in checks].index(False) == 7  # said on the Resize option, the Fuse event's 8th input
    assert failures(str(IR), str(small), resize=True) == []
    assert failures(None, str(VI)) == ["Source 1 (infrared) is missing: upload an image."]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert failures(str(IR), str(bad)) == ["bad.png: not a readable image file (unknown or corrupt format); upload "
                                           "another image."]


def test_a_warning_is_shown_once_per_browser_session(app_env, monkeypatch):
    from app import callbacks

    shown: list[str] = []
    monkeypatch.setattr(callbacks.gr, "Warning", lambda message, *a, **k: shown.append(message))
    hub = ModelHub(AppConfig(output_dir=app_env / "out-toasts", device="cpu"))
    for session in ("alice", "alice", "bob"):
        callbacks.warn_once(hub, session, "No object detection available")
    callbacks.warn_once(hub, "alice", "another cause")
    assert shown == ["No object detection available", "No object detection available", "another cause"]


def test_corrupt_upload_is_a_clear_error(hub, tmp_path):
    bad = tmp_path / "scan.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(gr.Error, match="scan.png"):
        user_errors(analyze_source)(hub, str(bad), "ivf", 1)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(gr.Error, match="empty.jpg"):
        user_errors(run_fusion)(hub, str(IR), str(empty), "ivf", "", "", True, "laplacian", False, 1)


def test_gpt_failure_falls_back_and_never_shows_the_key(app_env, monkeypatch):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    hub = ModelHub(AppConfig(output_dir=app_env / "out3", captioner="gpt", device="cpu"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = analyze_source(hub, str(IR), "ivf", 1)
    assert result.caption_note.startswith("⚠️ GPT could not caption")
    assert "template" in result.caption_note and result.caption
    shown = result.caption_note + result.caption + " ".join(str(w.message) for w in caught)
    assert KEY not in shown and KEY[8:20] not in shown


# ----------------------------------------------------------------------------------------- fusion


def test_baseline_run_scores_match_an_independent_computation(hub):
    out = _run(hub, method="laplacian", use_text=False)
    pair = load_pair(IR, VI, task="ivf")
    expected = compute_metrics(gray_levels_of(baseline_fuse(pair, "laplacian")), gray_levels_of(pair.a.pixels),
                               gray_levels_of(pair.b.pixels))
    row = out.table.set_index("Method").loc["laplacian"]
    for name, value in expected.items():
        assert row[name] == pytest.approx(round(value, 3), abs=1e-9)
    assert list(out.table["Method"]) == ["laplacian", "average", "max"]
    # the chart (tgif.visualize.metrics_chart_html, tested there) shows this run's values, its method highlighted
    assert out.chart.count('class="tgif-chart-card"') == 6 and "laplacian vs classic baselines" in out.chart
    assert f">{expected['EN']:.4g}" in out.chart and out.chart.count(HIGHLIGHT_COLOUR) == 6


def test_tgif_run_writes_full_resolution_png_json_and_csv(hub):
    out = _run(hub, captions=("a person walks on the road at night", "a car on the left"))
    png, js, cs = (Path(p) for p in out.files)
    assert png.suffix == ".png" and js.suffix == ".json" and cs.suffix == ".csv"
    saved = load_image(png).pixels
    assert saved.shape == (240, 320, 3)  # IR grey + visible colour -> colour result at source size
    np.testing.assert_array_equal((saved * 255).round().astype(np.uint8), out.fused)
    record = json.loads(js.read_text())
    assert record["captions"] == ["a person walks on the road at night", "a car on the left"]
    assert record["method"] == "TGIF" and record["use_text"] is True
    assert set(record["metrics"]) == {"TGIF", "average", "max", "laplacian"}
    # the metrics in the record are those of the saved file
    pair = load_pair(IR, VI)
    rescored = compute_metrics(read_gray_levels(png), gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels))
    for name, value in rescored.items():
        assert record["metrics"]["TGIF"][name] == pytest.approx(value, rel=1e-9)
    with cs.open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["TGIF", "average", "max", "laplacian"]
    assert float(rows[0]["EN"]) == pytest.approx(record["metrics"]["TGIF"]["EN"], abs=1e-6)
    assert out.error_1.shape[1] == 320 and out.error_1.shape[0] > 240  # map + its colour-scale strip
    # the page is given the maps as PNG files in the run's folder, holding exactly the arrays
    assert sorted(out.map_files) == ["error_1", "error_2", "text_effect"]
    for name in ("error_1", "error_2", "text_effect"):
        assert Path(out.map_files[name]).parent == png.parent
        np.testing.assert_array_equal(np.asarray(Image.open(out.map_files[name])), getattr(out, name))
    assert [Path(p).read_bytes()[:8] for p in out.run["sources"]] == [b"\x89PNG\r\n\x1a\n"] * 2
    assert "Run 1: TGIF" in out.summary


def test_empty_captions_are_drafted_and_reported(hub):
    out = _run(hub, captions=("", "  "))
    drafted = analyze_source(hub, str(IR), "ivf", 1).caption
    assert out.run["captions"][0] == drafted
    assert "visible" in out.run["captions"][1]
    record = json.loads(Path(out.files[1]).read_text())
    assert record["caption_authors"] == ["draft:template", "draft:template"]
    assert record["scene_captions"] == record["captions"]  # the drafts are the scene the trunk reads
    # an edit is steered over the drafts' trunk, and the record says so
    edit = _run(hub, captions=(drafted + " Highlight the person on the left.", ""))
    edited = json.loads(Path(edit.files[1]).read_text())
    assert edited["caption_authors"] == ["user", "draft:template"]
    assert edited["scene_captions"] == record["captions"] != edited["captions"]


def test_overlong_caption_is_cut_with_a_warning(hub):
    long = "a very long caption about a person and a car " * 60
    with pytest.warns(UserWarning, match="characters long"):
        out = _run(hub, captions=(long, "a car"))
    assert len(out.run["captions"][0]) == 2000


def test_size_mismatch_needs_resize(hub, tmp_path):
    from PIL import Image

    other = tmp_path / "vi_small.png"
    Image.fromarray(out_u8 := (load_image(VI).pixels[::2, ::2] * 255).round().astype(np.uint8)).save(other)
    assert out_u8.shape[:2] == (120, 160)
    with pytest.raises(gr.Error, match="Resize source 2 to source 1"):
        _run(hub, path_2=other, method="max", use_text=False)
    out = _run(hub, path_2=other, method="max", use_text=False, resize=True)
    assert out.fused.shape[:2] == (240, 320)


def test_missing_source_is_named(hub):
    with pytest.raises(gr.Error, match=r"Source 2 \(visible\) is missing"):
        _run(hub, path_2=None)


def test_text_steers_and_compare_reports_exact_deltas(hub):
    first = _run(hub, captions=("a person", "a car"), number=1)
    second = _run(hub, use_text=False, number=2)
    comparison = compare_runs(first.run, second.run)
    table = comparison.table.set_index("Metric")
    for name in ("EN", "SD", "SF", "AG", "VIF", "Qabf"):
        expected = second.run["metrics"][name] - first.run["metrics"][name]
        assert table.loc[name, "B − A"] == pytest.approx(round(expected, 4), abs=1e-9)
    assert comparison.difference is not None and comparison.difference.shape[1] == 320
    assert "text guidance off" in comparison.text
    assert np.abs(first.fused.astype(int) - second.fused.astype(int)).max() > 0  # the text path changes the result
    assert "Fuse twice" in compare_runs(first.run, None).text


# ----------------------------------------------------------------------------------------- steering


def test_detection_chips_name_class_and_position_and_a_click_adds_a_phrase(hub):
    result = analyze_source(hub, str(IR), "ivf", 1)
    assert len(result.objects) == len(result.detection[1])
    for (_, chip), (label, position) in zip(result.detection[1], result.objects):
        assert chip == f"{label} {position}" and position.split()[0] in ("on", "in", "at")
    objects = [("person", "on the left"), ("car", "at the bottom right")]
    caption = add_object_phrase("It shows a person on the left.", objects, 0)
    assert caption == "It shows a person on the left. Highlight the person on the left."
    assert add_object_phrase(caption, objects, 0) == caption  # a second click adds nothing
    assert add_object_phrase("", objects, 1) == "Highlight the car at the bottom right."
    assert add_object_phrase("as is", objects, 7) == "as is" and add_object_phrase("as is", objects, None) == "as is"


def test_text_effect_map_shows_what_a_caption_edit_changed(hub):
    ir, vi = IR.parent.parent / "ivf_person" / "ir.png", VI.parent.parent / "ivf_person" / "vi.png"
    analyses = analyze_source(hub, str(ir), "ivf", 1), analyze_source(hub, str(vi), "ivf", 2)
    drafts = (analyses[0].caption, analyses[1].caption)
    plain = _run(hub, ir, vi, captions=drafts)
    assert plain.text_effect is None and "text-effect map is empty" in plain.summary
    objects = analyses[0].objects or analyses[1].objects
    assert objects  # the person the detector finds
    edited = (add_object_phrase(drafts[0], objects, 0), drafts[1])  # as a click on the first object's chip
    out = _run(hub, ir, vi, captions=edited, number=2)
    height, width = out.fused.shape[:2]
    assert out.text_effect.shape[1] == width and out.text_effect.shape[0] > height  # map + grey-level colour bar
    stats = json.loads(Path(out.files[1]).read_text())["text_effect"]
    assert stats["mean_abs"] > 0 and stats["scale"] >= 2.0
    assert "Text effect (this run − drafted captions)" in out.summary
    assert f"The captions point at: {' '.join(objects[0])}" in out.summary and out.pointing is not None
    # the map is the signed difference of the two decodes: recompute it from the run's own fused image
    fuser = hub.fuser("ivf")
    pair = load_pair(str(ir), str(vi), task="ivf")
    session = fuser.session(pair)
    session.set_scene(drafts)  # the app's sessions have the drafts: the edit is steered over their trunk
    reference, fused_y = session.fuse(drafts).luminance, session.fuse(edited).luminance
    assert np.abs(fused_y - reference).mean() * 255 == pytest.approx(stats["mean_abs"], rel=1e-3, abs=1e-3)


# ----------------------------------------------------------------------------------------- HTTP API


@pytest.fixture(scope="module")
def server(app_env, hub):
    demo = build_demo(hub.config, hub)
    _, url, _ = demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, css=CSS)
    yield url
    demo.close()


def test_api_analyze_and_fuse_and_compare(server):
    client = Client(server, verbose=False)
    det, seg, classes, caption, note = client.predict(handle_file(str(IR)), "ivf", api_name="/analyze_1")
    assert Path(det["image"]).is_file() and "infrared" in caption and "template" in note
    outputs = client.predict(handle_file(str(IR)), handle_file(str(VI)), "ivf", caption, "a car on the left",
                             True, "TGIF", False, "source 2", api_name="/fuse")
    (fused, view_1, view_2, slider, error_1, error_2, effect, table, chart, summary, files, run_a, run_b,
     pointing) = outputs
    assert Path(effect).is_file()  # caption 2 was edited: the text-effect map against the drafted captions
    fused_pixels = load_image(fused).pixels
    assert fused_pixels.shape == (240, 320, 3)
    assert [Path(f).suffix for f in files] == [".png", ".json", ".csv"]
    np.testing.assert_array_equal(fused_pixels, load_image(files[0]).pixels)  # lossless PNG through the API
    assert len(slider) == 2 and Path(slider[1]).is_file()
    assert table["headers"] == ["Method", "EN", "SD", "SF", "AG", "VIF", "Qabf"]
    assert [row[0] for row in table["data"]] == ["TGIF", "average", "max", "laplacian"]
    assert chart.count('class="tgif-chart-card"') == 6 and "TGIF vs classic baselines" in chart
    assert "Run 1: TGIF" in summary
    client.predict(handle_file(str(IR)), handle_file(str(VI)), "ivf", "", "", False, "TGIF", False, "source 1",
                   api_name="/fuse")
    image_a, image_b, difference, deltas, text = client.predict("Run 1 · TGIF", "Run 2 · TGIF (no text)",
                                                                api_name="/compare")
    assert Path(difference).is_file() and [r[0] for r in deltas["data"]] == ["EN", "SD", "SF", "AG", "VIF", "Qabf"]
    assert "text guidance off" in text


def test_api_reports_user_errors(server, tmp_path, capfd, caplog):
    client = Client(server, verbose=False)
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"junk")
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="app.callbacks"), pytest.raises(Exception, match="broken.png"):
        client.predict(handle_file(str(IR)), handle_file(str(bad)), "ivf", "", "", True, "laplacian", False,
                       "source 2", api_name="/fuse")
    # the server log gets one line for a user's error, not a traceback
    assert "Traceback" not in capfd.readouterr().err
    assert [r.getMessage() for r in caplog.records if "user error" in r.getMessage()] == [
        "fuse_pair: user error: broken.png: not a readable image file (unknown or corrupt format)"]


def test_huge_images_are_downscaled_with_a_notice(app_env):
    hub = ModelHub(AppConfig(output_dir=app_env / "out4", captioner="template", device="cpu", max_pixels=20_000))
    with pytest.warns(UserWarning, match="downscal"):
        out = _run(hub, method="laplacian", use_text=False)
    height, width = out.fused.shape[:2]
    assert height * width <= 20_000 and abs(width / height - 320 / 240) < 0.05


def test_hostile_captions_are_cleaned_refused_or_escaped(hub):
    with pytest.raises(gr.Error, match="Caption 1 contains characters that are not valid text"):
        user_errors(_run)(hub, captions=("a person \ud800", "a street"))
    nul = _run(hub, captions=("\x00\x00", "a street"), number=7)
    assert nul.run["captions"][0] and "\x00" not in nul.run["captions"][0]  # NUL-only: drafted instead
    link = _run(hub, captions=("[click](javascript:alert(1)) <b>hi</b>", "a street"), number=8)
    text = compare_runs(nul.run, link.run).text
    assert "](javascript" not in text and "<b>" not in text and "\\[click\\]" in text
    assert len(link.run["png"].split("run08-")[1].split("/")[0]) == 16  # 64 random bits in the run id


def test_a_hanging_caption_server_delays_neither_its_user_much_nor_anyone_elses_fuse(app_env, monkeypatch):
    """A GPT server that accepts the request and never answers: the analysis falls back to the template draft
    within the deadline, and another client's Fuse with its own captions, sent meanwhile, is not held up."""
    import socket
    import threading
    import time

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_and_hang() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])  # read nothing, answer nothing
            except OSError:
                continue

    threading.Thread(target=accept_and_hang, daemon=True).start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-hanging-0000000000")
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{listener.getsockname()[1]}/v1")
    monkeypatch.setenv("TGIF_GPT_TIMEOUT", "3")
    config = AppConfig(output_dir=app_env / "out-hang", captioner="gpt", device="cpu")
    demo = build_demo(config, ModelHub(config))
    _, url, _ = demo.queue().launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True, css=CSS)
    try:
        other = Client(url, verbose=False)
        args = (handle_file(str(IR)), handle_file(str(VI)), "ivf", "a person", "a street", True, "TGIF", False,
                "source 2")
        other.predict(*args, api_name="/fuse")  # warm-up: models loaded
        start = time.perf_counter()
        other.predict(*args, api_name="/fuse")
        idle = time.perf_counter() - start  # the same Fuse on an idle server
        results: dict[str, float | str] = {}

        def analyse() -> None:
            begin = time.perf_counter()
            _, _, _, caption, note = Client(url, verbose=False).predict(
                handle_file(str(IR)), "ivf", api_name="/analyze_1")
            results["analyse_s"], results["note"], results["caption"] = time.perf_counter() - begin, note, caption

        worker = threading.Thread(target=analyse)
        worker.start()
        time.sleep(0.5)  # the analysis is waiting on the hanging server now
        start = time.perf_counter()
        other.predict(*args, api_name="/fuse")
        busy = time.perf_counter() - start
        worker.join(timeout=30)
        assert results["analyse_s"] <= 3 + 4  # the deadline, plus perception and the client's back-off
        assert "GPT could not caption this image" in results["note"] and "no answer within 3 s" in results["note"]
        assert "infrared" in results["caption"] and "sk-test" not in results["note"]
        assert busy <= idle + 2.0, (busy, idle)

        # a Fuse with empty captions drafts them (waiting on the server) before it takes a network slot
        person = ROOT / "assets" / "examples" / "ivf_person"

        def fuse_with_empty_captions() -> None:
            begin = time.perf_counter()
            out = Client(url, verbose=False).predict(
                handle_file(str(person / "ir.png")), handle_file(str(person / "vi.png")), "ivf", "", "", True, "TGIF",
                False, "source 2", api_name="/fuse")
            results["drafting_fuse_s"], results["drafting_summary"] = time.perf_counter() - begin, out[9]

        worker = threading.Thread(target=fuse_with_empty_captions)
        worker.start()
        time.sleep(1.0)  # that job is drafting now, held up by the hanging server
        start = time.perf_counter()
        other.predict(*args, api_name="/fuse")
        busy = time.perf_counter() - start
        worker.join(timeout=60)
        assert busy <= idle + 2.0, (busy, idle, results)
        assert results["drafting_fuse_s"] >= 3 and "no answer within 3 s" in results["drafting_summary"]
    finally:
        stop.set()
        demo.close()
        for conn in held:
            conn.close()
        listener.close()


def test_network_slots_make_later_jobs_wait_and_say_how_many_are_ahead(app_env):
    import threading

    hub = ModelHub(AppConfig(output_dir=app_env / "out-slots", concurrency=1, device="cpu"))
    order: list[str] = []
    told: dict[str, int] = {}
    first_in, release = threading.Event(), threading.Event()

    def job(name: str) -> None:
        with hub.network_slot(lambda ahead: told.__setitem__(name, ahead)):
            order.append(name)
            if name == "first":
                first_in.set()
                release.wait(10)

    threads = [threading.Thread(target=job, args=("first",))]
    threads[0].start()
    first_in.wait(10)
    for name in ("second", "third"):
        threads.append(threading.Thread(target=job, args=(name,)))
        threads[-1].start()
        while name not in told:  # it is waiting now
            threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join(10)
    assert told == {"second": 0, "third": 1} and order[0] == "first" and sorted(order) == ["first", "second", "third"]

    # a job that cannot get a slot within TGIF_APP_JOB_TIMEOUT is told the server is busy
    from app.callbacks import _network

    busy = ModelHub(AppConfig(output_dir=app_env / "out-slots", concurrency=1, device="cpu", job_timeout=1))
    with busy.network_slot(), pytest.raises(gr.Error, match="The server is busy: this job waited 1 s"):
        with _network(busy, lambda *a, **k: None):
            pass


def test_a_network_slot_runs_on_the_hubs_threads_whatever_its_worker_thread_started_with(app_env):
    import threading

    hub = ModelHub(AppConfig(output_dir=app_env / "out-threads", device="cpu"))
    seen: list[int] = []

    def job() -> None:
        torch.set_num_threads(1)  # as a worker thread whose pool started while a library had lowered the count
        try:
            with hub.network_slot():
                seen.append(torch.get_num_threads())
        finally:
            torch.set_num_threads(hub.threads)

    worker = threading.Thread(target=job)
    worker.start()
    worker.join(10)
    assert seen == [hub.threads] and hub.device_label == f"CPU ({hub.threads} threads)"


def test_run_files_live_as_long_as_the_session_history(app_env):
    from app.callbacks import add_to_history, discard_run_files

    out = app_env / "out-history"
    hub = ModelHub(AppConfig(output_dir=out, captioner="template", device="cpu", history=2))
    history: list = []
    runs = []
    for number in (1, 2, 3):
        runs.append(_run(hub, method="laplacian", use_text=False, number=number).run)
        history = add_to_history(history, runs[-1], 2, out)
    assert history == runs[1:]
    assert sorted(p.name for p in out.iterdir()) == sorted(Path(r["png"]).parent.name for r in runs[1:])
    discard_run_files({"png": str(app_env / "elsewhere" / "x.png")}, out)  # outside the output folder: kept


def test_loaded_pairs_are_bounded_and_one_per_browser_session(app_env):
    hub = ModelHub(AppConfig(output_dir=app_env / "out-pairs", captioner="template", device="cpu", pairs=2))
    pair = load_pair(str(IR), str(VI), task="ivf")
    loads = {"n": 0}

    def load():
        loads["n"] += 1
        return pair, []

    first, fresh = hub.loaded_pair(("s1", "a", "b", "ivf", False), load)
    again, fresh_again = hub.loaded_pair(("s1", "a", "b", "ivf", False), load)
    assert fresh and not fresh_again and again is first and loads["n"] == 1  # decoded once
    hub.loaded_pair(("s1", "c", "d", "ivf", False), load)  # a new pair replaces that session's previous one
    hub.loaded_pair(("s2", "a", "b", "ivf", False), load)
    hub.loaded_pair(("s3", "a", "b", "ivf", False), load)  # a third session: the least recently used goes
    assert [key[0] for key in hub._pairs] == ["s2", "s3"] and loads["n"] == 4


def test_the_metric_table_marks_the_best_value_of_each_metric():
    from app.callbacks import BEST_CELL_STYLE, mark_best, metric_table

    table = metric_table({"TGIF": {"EN": 6.6, "VIF": 1.0}, "max": {"EN": 6.5, "VIF": 1.1}})
    styles = mark_best(table)._compute().ctx  # (row, column) -> [(property, value)]
    bold = sorted(key for key, props in styles.items() if ("font-weight", "bold") in props)
    assert bold == [(0, 1), (1, 2)] and "font-weight: bold" in BEST_CELL_STYLE  # EN: TGIF; VIF: max
    assert table.loc[0, "EN"] == 6.6  # the values are unchanged


def test_four_clients_fusing_at_once_get_their_own_results_without_idle_gaps(server):
    """4 clients x 2 Fuse calls at once: no errors, no mix-ups (each record holds its client's caption and run
    number), the queue adds no idle gaps (all 8 done within 1.25x the time the same 8 calls take one after
    another), and the waiting jobs are told so (queue rank or "Waiting for the network: ... ahead")."""
    import json
    import threading
    import time

    seen_waiting: list[str] = []
    results: dict[int, list[dict]] = {}
    errors: list[BaseException] = []

    def client_runs(index: int) -> None:
        client = Client(server, verbose=False)
        runs = []
        for call in range(2):
            caption = f"client {index} call {call}: a person walks on the road"
            try:
                job = client.submit(handle_file(str(IR)), handle_file(str(VI)), "ivf", caption, "a dark street",
                                    True, "TGIF", False, "source 2", api_name="/fuse")
                while not job.done():
                    status = job.status()
                    if status.rank:
                        seen_waiting.append(f"rank {status.rank}")
                    for unit in status.progress_data or []:
                        if unit.desc and unit.desc.startswith("Waiting for the network"):
                            seen_waiting.append(unit.desc)
                    time.sleep(0.05)
                outputs = job.result()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return
            record = json.loads(Path(outputs[10][1]).read_text())
            runs.append({"caption": caption, "record": record, "summary": outputs[9]})
        results[index] = runs

    serial = Client(server, verbose=False)
    serial.predict(handle_file(str(IR)), handle_file(str(VI)), "ivf", "a", "b", True, "TGIF", False, "source 2",
                   api_name="/fuse")  # warm-up: models loaded
    started = time.perf_counter()
    for call in range(8):
        serial.predict(handle_file(str(IR)), handle_file(str(VI)), "ivf", f"one after another {call}", "b", True,
                       "TGIF", False, "source 2", api_name="/fuse")
    one_after_another = time.perf_counter() - started
    threads = [threading.Thread(target=client_runs, args=(index,)) for index in range(4)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    wall = time.perf_counter() - started
    assert not errors, errors
    for runs in results.values():
        for number, run in enumerate(runs, start=1):
            assert run["record"]["captions"][0] == run["caption"]  # its own caption, no mix-up
            assert f"Run {number}: TGIF" in run["summary"]  # its own session's run numbers
    assert len(results) == 4 and wall <= 1.25 * one_after_another, (wall, one_after_another)
    assert seen_waiting, "no waiting job was told its position"
