"""First results first: a Fuse is two steps, the fused image (:func:`app.callbacks.fuse_image`) and then the maps,
metrics and record (:func:`app.callbacks.finish_run`); the page's first step is a generator whose errors are
translated like any handler's. (The two steps in a real browser: tests/test_app_browser.py.)"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import gradio as gr  # noqa: E402

from app.callbacks import finish_run, fuse_image, user_errors  # noqa: E402
from app.config import AppConfig  # noqa: E402
from app.models import ModelHub  # noqa: E402
from tgif.errors import TgifError  # noqa: E402
from tgif.io import load_image  # noqa: E402
from tgif.perception.detection import default_detector_weights  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
IR = ROOT / "assets" / "examples" / "ivf" / "ir.png"
VI = ROOT / "assets" / "examples" / "ivf" / "vi.png"


def test_a_generator_handler_yields_its_partial_result_and_its_errors_become_user_errors():
    @user_errors
    def steps(fail: bool):
        yield "fused"
        if fail:
            raise TgifError("the second step failed")
        yield "maps"

    assert list(steps(False)) == ["fused", "maps"]
    run = steps(True)
    assert next(run) == "fused"
    with pytest.raises(gr.Error, match="the second step failed"):
        next(run)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> ModelHub:
    tmp = tmp_path_factory.mktemp("two-step")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TGIF_CACHE_DIR", str(tmp / "cache"))
        if not Path(default_detector_weights()).exists():
            mp.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")
        yield ModelHub(AppConfig(output_dir=tmp / "out", captioner="template", device="cpu"))


@pytest.mark.parametrize("method", ["TGIF", "laplacian"])
def test_the_fused_image_is_on_disk_before_the_maps_and_metrics(hub, method):
    first = fuse_image(hub, str(IR), str(VI), "ivf", "a person", "a dark street", True, method, False, 1,
                       session_id=f"two-step-{method}")
    assert first.png.is_file() and [p.name for p in first.views] == ["source_1.png", "source_2.png"]
    assert sorted(p.name for p in first.folder.iterdir()) == sorted([first.png.name, "source_1.png", "source_2.png"])
    assert "maps, metrics and downloads follow" in first.summary and "metrics" not in first.seconds
    out = finish_run(hub, first)
    assert [Path(f).suffix for f in out.files] == [".png", ".json", ".csv"] and out.files[0] == str(first.png)
    np.testing.assert_array_equal(np.round(load_image(first.png).pixels * 255), out.fused)  # the same pixels
    record = json.loads(Path(out.files[1]).read_text())
    assert record["method"] == first.label and set(record["seconds"]) >= {"load", "network", "metrics"}
    assert (out.text_effect is not None) == (method == "TGIF")  # typed captions: compared with the drafts' run
    assert out.summary.startswith(f"**Run 1: {first.label}** on ")
