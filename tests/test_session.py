"""The pair session (tgif.session): each stage runs once per pair; the task table (tgif.tasks)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from tgif.errors import UnknownNameError
from tgif.io.image import SourceImage
from tgif.io.pair import ImagePair
from tgif.model import TGIFConfig, TGIFNet, save_tgif
from tgif.perception import Perceiver
from tgif.perception.types import Detection, Detections
from tgif.pipeline import TGIFFuser
from tgif.session import PairSession
from tgif.tasks import TASK_SPECS, resolve_task, spec_for_folders, task_spec


class WordEncoder:
    """A text encoder double: one token per word, features seeded by the word."""

    name = "words:test"
    dim = 8
    max_tokens = 64

    def __init__(self) -> None:
        self.calls = 0

    def token_count(self, caption: str) -> int:
        return max(1, len(caption.split()))

    def encode(self, captions):
        self.calls += 1
        rows = [[np.random.default_rng(zlib.crc32(w.encode())).standard_normal(self.dim) for w in c.split()]
                or [np.zeros(self.dim)] for c in captions]
        length = max(len(r) for r in rows)
        out = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            out[i, : len(row)], mask[i, : len(row)] = torch.tensor(np.array(row), dtype=torch.float32), True
        return out, mask


class CountingDetector:
    """A detector double: one person in the left half; counts its calls."""

    model_name = "counting"
    conf = 0.25
    imgsz = 640

    def __init__(self) -> None:
        self.calls = 0

    def detect(self, image: np.ndarray) -> Detections:
        self.calls += 1
        h, w = image.shape[:2]
        return Detections([Detection((2.0, 2.0, w / 3, h - 2.0), "person", 0.9, 0)], (w, h), self.model_name)


@pytest.fixture()
def fuser(tmp_path) -> TGIFFuser:
    torch.manual_seed(0)
    config = TGIFConfig(dim=8, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=WordEncoder.dim, downscale=2)
    path = save_tgif(tmp_path / "tiny.safetensors", TGIFNet(config).eval(), WordEncoder.name, "ivf", 0)
    perceiver = Perceiver(CountingDetector(), "classic", cache=False)
    return TGIFFuser(path, device="cpu", captioner="template", perceiver=perceiver, text_encoder=WordEncoder())


def _pair(task: str = "ivf", size: tuple[int, int] = (48, 40)) -> ImagePair:
    rng = np.random.default_rng(0)
    h, w = size
    a, b = rng.random((h, w)).astype(np.float32), rng.random((h, w)).astype(np.float32)
    return ImagePair(SourceImage(a, "a.png"), SourceImage(b, "b.png"), task=task)


def test_a_caption_edit_reruns_only_the_text_features_and_the_decoder(fuser, monkeypatch):
    session = PairSession(fuser, _pair())
    encodes = {"n": 0}
    real = fuser.model.encode_sources

    def counted(*args, **kwargs):
        encodes["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(fuser.model, "encode_sources", counted)
    first = session.fuse()  # drafted captions: perception, drafting, text, encoders, decoder
    detector = fuser.perceiver.detector
    assert detector.calls == 2 and encodes["n"] == 1 and fuser.text_encoder.calls == 1
    assert first.caption_sources == ("draft:template", "draft:template")
    edited = (first.captions[0] + " Highlight the person on the left.", first.captions[1])
    second = session.fuse(edited, reference_captions=first.captions)
    # the edit: one text encoding and one decoder pass; the reference (the drafts) came from the cache
    assert detector.calls == 2 and encodes["n"] == 1 and fuser.text_encoder.calls == 2
    # a network without a grounding head reads captions only in its trunk: the trunk runs per caption pair
    assert session.calls == {"perception": 2, "encode_sources": 1, "text": 2, "guide": 2, "decode": 2}
    assert second.caption_sources == ("user", "draft:template")
    assert np.array_equal(second.reference_luminance, first.luminance)
    # the same result as a fresh, one-shot fusion
    fresh = fuser.fuse(_pair(), captions=edited)
    assert np.array_equal(fresh.luminance, second.luminance)


@pytest.fixture()
def grounded(tmp_path) -> TGIFFuser:
    """A tiny network with a grounding head whose emphasis is not zero (so the head changes the output)."""
    torch.manual_seed(0)
    config = TGIFConfig(dim=8, heads=2, text_heads=2, encoder_blocks=1, decoder_blocks=1, text_blocks=1,
                        text_dim=WordEncoder.dim, downscale=2, grounding=True)
    model = TGIFNet(config).eval()
    with torch.no_grad():
        model.grounding.emphasis.weight.normal_(0.0, 0.5)
        model.grounding.bias.fill_(0.0)  # relevance around 0.5, where the gate opens: captions move it
    path = save_tgif(tmp_path / "grounded.safetensors", model, WordEncoder.name, "ivf", 0)
    perceiver = Perceiver(CountingDetector(), "classic", cache=False)
    return TGIFFuser(path, device="cpu", captioner="template", perceiver=perceiver, text_encoder=WordEncoder())


def _tensors(pair: ImagePair) -> tuple[torch.Tensor, torch.Tensor]:
    return tuple(torch.from_numpy(y)[None, None] for y in pair.luminances())  # type: ignore[return-value]


def test_with_a_grounding_head_an_edit_runs_only_the_head_and_decoder_over_the_drafts_trunk(grounded):
    session = PairSession(grounded, _pair())
    first = session.fuse()
    drafts = first.captions
    assert first.scene_captions == drafts and session.calls["guide"] == 1
    edited = (drafts[0] + " Highlight the person on the left.", drafts[1])
    second = session.fuse(edited, reference_captions=drafts)
    # one text encoding (of the edited caption alone), no trunk, one head + decoder pass
    assert session.calls == {"perception": 2, "encode_sources": 1, "text": 2, "guide": 1, "decode": 2}
    assert second.scene_captions == drafts and np.array_equal(second.reference_luminance, first.luminance)
    model = grounded.model
    y_a, y_b = _tensors(_pair())
    with torch.inference_mode():
        features = model.encode_sources(y_a, y_b)
        expected = model.ground_and_decode(features, model.guide_sources(features, *grounded.encode(*drafts)),
                                           *grounded.encode(*edited))[0]
        full = model(y_a, y_b, *grounded.encode(*edited))
    assert np.allclose(second.luminance, expected[0, 0].numpy(), atol=1e-6)
    # the head carries the edit: the output moves, and it differs from a full pass under the edit
    assert np.abs(second.luminance - first.luminance).max() > 1e-5  # float noise here is ~1e-7
    assert not np.allclose(second.luminance, full[0, 0].numpy(), atol=1e-6)


def test_without_drafts_the_captions_are_the_scene_and_set_scene_names_one(grounded):
    pair, captions = _pair(), ("a bright person", "a dark street")
    y_a, y_b = _tensors(pair)
    with torch.inference_mode():
        full = grounded.model(y_a, y_b, *grounded.encode(*captions))[0, 0].numpy()
    one_shot = grounded.fuse(pair, captions=captions)  # no drafts: forward's output exactly
    assert one_shot.scene_captions == captions and np.array_equal(one_shot.luminance, np.clip(full, 0, 1))
    session = PairSession(grounded, pair)
    session.fuse(captions)
    session.fuse(("a car", "a dark street"))
    assert session.calls["guide"] == 2  # no scene: each caption pair gets its own trunk, as forward does
    session.set_scene(captions)
    edit = session.fuse(("a car", "a dark street"))
    assert edit.scene_captions == captions and session.calls["guide"] == 2  # the scene's trunk was cached
    assert session.calls["decode"] == 3


def test_a_tiled_pair_is_encoded_once_per_tile_and_matches_the_one_shot_fusion(fuser):
    fuser.max_model_pixels = 24 * 24
    pair = _pair(size=(40, 600))
    session = PairSession(fuser, pair)
    captions = ("a bright person", "a dark street")
    out = session.fuse(captions)
    assert any("tiles" in note for note in out.notes)
    session.fuse(("a car", "a dark street"))
    assert session.calls["encode_sources"] == 1 and len(session.encoded().tiles) > 1
    assert np.array_equal(fuser.fuse(pair, captions=captions).luminance, out.luminance)


@pytest.mark.parametrize("key, modality", [("mif-pet", "PET"), ("mif-spect", "SPECT"), ("mif-ct", "CT")])
def test_mif_captions_name_the_second_modality(fuser, key, modality):
    drafts = PairSession(fuser, _pair("mif"), key).drafted_captions()
    assert "MRI" in drafts[0] and f"{modality} image" in drafts[1]


def test_the_no_text_path_and_a_task_that_contradicts_the_pair(fuser):
    session = PairSession(fuser, _pair())
    out = session.fuse(use_text=False)
    assert out.captions == ("", "") and out.caption_sources == ("", "") and session.calls["perception"] == 0
    with pytest.raises(ValueError, match="the pair is ivf but the task is mef"):
        PairSession(fuser, _pair(), "mef")


def test_one_task_table():
    assert list(TASK_SPECS) == ["ivf", "mif-ct", "mif-pet", "mif-spect", "mef", "mff"]
    assert task_spec("mif") is TASK_SPECS["mif-ct"] and task_spec("MIF-PET").modalities == ("MRI", "PET")
    assert spec_for_folders(("MRI", "spect")).key == "mif-spect" and spec_for_folders(("x", "y")) is None
    pet = [Path("data/harvard_mri_pet/mri/1.png"), Path("data/harvard_mri_pet/pet/1.png")]
    assert resolve_task("mif", pet).key == "mif-pet"  # the alias takes the modality from the folders
    assert resolve_task("mif-ct", pet).key == "mif-ct"  # a full name wins
    assert resolve_task(None, pet).key == "mif-pet" and resolve_task(None, ["a.png", "b.png"]).key == "ivf"
    assert resolve_task("mef", pet).key == "mef"
    with pytest.raises(UnknownNameError, match="choose from ivf, mif-ct"):
        task_spec("xyz")
