"""The committed TGIF checkpoints: metadata, size, and a real fusion of the bundled example pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tgif.io import load_pair
from tgif.model import read_metadata
from tgif.pipeline import TASK_MODALITIES, TGIFFuser, default_weights

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
    folder_a, folder_b = TASK_MODALITIES[task]
    pair = load_pair(EXAMPLES / task / f"{folder_a}.png", EXAMPLES / task / f"{folder_b}.png", task=task)
    fuser = TGIFFuser(path, device="cpu")
    with_text = fuser.fuse(pair, captions=("a bright object in the centre", "a textured scene"))
    without = fuser.fuse(pair, use_text=False)
    assert with_text.image.shape[:2] == pair.shape and 0 <= with_text.image.min() <= with_text.image.max() <= 1
    assert np.abs(with_text.luminance - without.luminance).mean() > 1e-4


def test_mif_uses_the_ivf_weights() -> None:
    assert default_weights("mif") == default_weights("ivf")
