"""The committed TGIF checkpoints: metadata, size, and a real fusion of the bundled example pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tgif.io import load_pair
from tgif.model import read_metadata
from tgif.pipeline import TGIFFuser, default_weights
from tgif.tasks import task_spec

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = sorted((ROOT / "weights").glob("tgif_*.safetensors"))
EXAMPLES = ROOT / "assets" / "examples"


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda p: p.stem)
def test_checkpoint_metadata_and_size(path: Path) -> None:
    meta = read_metadata(path)
    assert path.stat().st_size < 20 * 2**20
    assert meta.text_encoder == "minilm:all-MiniLM-L6-v2" and meta.config.text_dim == 384
    assert meta.task == path.stem.split("_")[1] and meta.steps > 0 and meta.dtype == "float16"
    assert path.stem in (ROOT / "weights" / "README.md").read_text()


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda p: p.stem)
def test_checkpoint_fuses_the_bundled_example(path: Path) -> None:
    task = path.stem.split("_")[1]
    folder_a, folder_b = task_spec(task).folders
    pair = load_pair(EXAMPLES / task / f"{folder_a}.png", EXAMPLES / task / f"{folder_b}.png", task=task)
    fuser = TGIFFuser(path, device="cpu")
    with_text = fuser.fuse(pair, captions=("a bright object in the centre", "a textured scene"))
    without = fuser.fuse(pair, use_text=False)
    assert with_text.image.shape[:2] == pair.shape and 0 <= with_text.image.min() <= with_text.image.max() <= 1
    assert np.abs(with_text.luminance - without.luminance).mean() > 1e-4


def test_mif_uses_the_ivf_weights() -> None:
    assert default_weights("mif") == default_weights("ivf")


def test_the_bundled_detector_is_the_offline_default(tmp_path, monkeypatch) -> None:
    from tgif.perception.detection import default_detector_weights

    monkeypatch.delenv("TGIF_YOLO_WEIGHTS", raising=False)
    monkeypatch.setenv("TGIF_SHARED", str(tmp_path / "no-shared"))
    bundled = ROOT / "weights" / "yolo11n_int8_openvino_model"
    assert default_detector_weights() == str(bundled)
    assert "AGPL-3.0" in (ROOT / "weights" / "README.md").read_text() and "yolo11n_int8_openvino_model" in (
        ROOT / "weights" / "README.md").read_text()


def test_the_readme_first_command_fuses_with_tgif_offline_and_finds_the_person(tmp_path, monkeypatch,
                                                                             capsys) -> None:
    from tgif.cli import main

    monkeypatch.delenv("TGIF_YOLO_WEIGHTS", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TGIF_SHARED", str(tmp_path / "no-shared"))  # a fresh clone: no shared folder
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    example = EXAMPLES / "ivf_person"
    out = tmp_path / "fused.png"
    assert main(["fuse", str(example / "ir.png"), str(example / "vi.png"), "-o", str(out), "--metrics"]) == 0
    printed = capsys.readouterr().out
    assert "caption 1 (draft:template): It shows a person" in printed and "note:" not in printed
    assert "best baseline" in printed and "method tgif" in printed and out.is_file()


#: The committed training config of each checkpoint trained from one (``tgif train --config``).
RUN_CONFIGS = {"tgif_mef": "mef.yaml", "tgif_mff_stage1": "mff.yaml", "tgif_mff": "mff_stage2.yaml"}


@pytest.mark.parametrize(("stem", "config"), sorted(RUN_CONFIGS.items()))
def test_the_committed_config_is_the_run_that_made_the_checkpoint(stem: str, config: str) -> None:
    import yaml

    values = yaml.safe_load((ROOT / "configs" / config).read_text())
    recorded = read_metadata(ROOT / "weights" / f"{stem}.safetensors").extra["settings"]
    for key in ("steps", "batch_size", "crop", "lr", "halve_every_epochs", "grad_weight", "ssim_weight", "seed",
                "use_text", "procs", "model"):
        assert recorded[key] == values[key], (stem, key)
    assert (ROOT / values["init_from"]).is_file()  # a committed checkpoint, so the run can start from it


@pytest.mark.parametrize("path", WEIGHTS, ids=lambda p: p.stem)
def test_a_checkpoints_fusion_tile_is_the_choice_of_its_committed_tile_sweep(path: Path) -> None:
    from tgif.pipeline import FusionTile, checkpoint_tile
    from tgif.train.sweep import choose, read_tile_sweep

    table = ROOT / "weights" / "logs" / f"tiles_{path.stem.split('_', 1)[1]}.csv"
    tile = checkpoint_tile(read_metadata(path).extra)
    if not table.is_file():  # never swept: fused whole (up to the memory tiles)
        assert tile is None
        return
    best = choose(read_tile_sweep(table))
    assert tile == (FusionTile(best["size"], best["overlap"]) if best["size"] else None)
