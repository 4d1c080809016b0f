"""``tgif caption``: maps and captions for a pair, and resumable dataset captioning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.cli import main

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_caption_pair_writes_maps_and_captions(tmp_path, capsys) -> None:
    out = tmp_path / "out"
    code = main(["caption", str(EXAMPLES / "ivf" / "ir.png"), str(EXAMPLES / "ivf" / "vi.png"), "--task", "ivf",
                 "--detector", "yolo11n.yaml", "--out-dir", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "[infrared]" in printed and "[visible]" in printed and "caption (template)" in printed
    records = json.loads((out / "captions.json").read_text())
    assert [r["modality"] for r in records] == ["infrared", "visible"]
    for record in records:
        assert f"{record['modality']} image." in record["caption"]
        assert record["captioner"] == "template" and record["mode"] == "full"
        for kind in ("detection", "segmentation"):
            with Image.open(record["maps"][kind]) as im:
                assert im.size == (320, 240) and im.mode == "RGB"
        assert set(record["seconds"]) == {"detection", "segmentation", "rendering", "caption"}


def _tiny_dataset(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for mod in ("ir", "vi"):
        (root / "tiny" / mod).mkdir(parents=True)
        for k in range(2):
            shape = (40, 56) if mod == "ir" else (40, 56, 3)
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(root / "tiny" / mod / f"{k}.png")
    return root / "tiny"


def test_caption_dataset_is_resumable(tmp_path, capsys) -> None:
    dataset = _tiny_dataset(tmp_path)
    out = tmp_path / "captions.jsonl"
    base = ["caption", "--dataset", str(dataset), "--out", str(out), "--task", "ivf", "--detector", "yolo11n.yaml",
            "--no-progress"]
    assert main(base + ["--limit", "3"]) == 0
    assert "captioned 3 images, skipped 0" in capsys.readouterr().out
    assert main(base) == 0
    assert "captioned 1 images, skipped 3" in capsys.readouterr().out
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["modality_folder"], r["id"]) for r in records) == [
        ("ir", "0"), ("ir", "1"), ("vi", "0"), ("vi", "1")]
    assert {r["file"] for r in records} == {"ir/0.png", "ir/1.png", "vi/0.png", "vi/1.png"}
    assert all(r["prompt_version"].startswith("tgif-template") and r["caption"] for r in records)


def test_caption_mode_none_gives_empty_captions(tmp_path) -> None:
    dataset = _tiny_dataset(tmp_path)
    out = tmp_path / "none.jsonl"
    assert main(["caption", "--dataset", str(dataset), "--out", str(out), "--mode", "none", "--detector",
                 "yolo11n.yaml", "--no-progress"]) == 0
    assert all(json.loads(line)["caption"] == "" for line in out.read_text().splitlines())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["caption"], "either one or two source images, or --dataset"),
        (["caption", "--dataset", "x"], "--dataset needs --out"),
        (["caption", "a.png", "--mode", "poem"], "unknown caption mode 'poem'"),
    ],
)
def test_caption_usage_errors(argv, message, capsys) -> None:
    assert main(argv + ["--detector", "yolo11n.yaml"]) == 2
    assert message in capsys.readouterr().err


def test_caption_msrs_pair_offline_with_shared_detector(data_root, tmp_path) -> None:
    out = tmp_path / "msrs"
    ir, vi = data_root / "msrs_test" / "ir" / "00004N.png", data_root / "msrs_test" / "vi" / "00004N.png"
    detector = data_root.parent / "weights" / "yolo11n_int8_openvino_model"
    assert main(["caption", str(ir), str(vi), "--task", "ivf", "--detector", str(detector), "--out-dir", str(out)]) == 0
    infrared, visible = json.loads((out / "captions.json").read_text())
    assert "person" in infrared["caption"] and "car" in visible["caption"]
    assert (out / "00004N_ir_detection.png").exists() and (out / "00004N_vi_segmentation.png").exists()
