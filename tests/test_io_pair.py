"""Tests for :func:`tgif.io.load_pair` and :class:`tgif.io.ImagePair`.

Pairs are built inside the tests (small odd-sized PNGs in ``tmp_path`` or numpy arrays).
The key property: fusing with the colour source's own luminance gives that source back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.errors import ImageLoadError, PairSizeError
from tgif.io import ImagePair, chroma, colorize, load_image, load_pair, merge_chroma, to_uint8

H, W = 17, 23


def _save(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


@pytest.fixture
def grey8(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W), dtype=np.uint8)


@pytest.fixture
def rgb8(rng) -> np.ndarray:
    return rng.integers(0, 256, (H, W, 3), dtype=np.uint8)


@pytest.fixture
def ivf_files(tmp_path, grey8, rgb8) -> tuple[Path, Path]:
    return _save(tmp_path / "00042N_ir.png", grey8), _save(tmp_path / "00042N_vi.png", rgb8)


def test_grey_plus_colour_restores_the_colour_source(ivf_files, rgb8):
    pair = load_pair(*ivf_files)
    assert not pair.a.is_color and pair.b.is_color
    _, y_b = pair.luminances()
    fused = pair.colorize(y_b)
    assert fused.shape == (H, W, 3)
    assert fused.dtype == np.float32
    np.testing.assert_array_equal(to_uint8(fused), rgb8)


def test_grey_plus_colour_takes_the_colour_sources_chroma(ivf_files, rgb8):
    pair = load_pair(*ivf_files)
    np.testing.assert_array_equal(pair.chroma(), chroma(rgb8.astype(np.float32) / 255))
    # order does not matter: the colour source gives the chroma wherever it is
    swapped = load_pair(ivf_files[1], ivf_files[0])
    np.testing.assert_array_equal(swapped.chroma(), pair.chroma())


def test_grey_plus_grey_gives_grey(rng, grey8):
    other = rng.integers(0, 256, (H, W), dtype=np.uint8)
    pair = load_pair(grey8, other)
    assert pair.chroma() is None
    y_a, _ = pair.luminances()
    fused = pair.colorize(y_a)
    assert fused.shape == (H, W)
    np.testing.assert_array_equal(fused, grey8.astype(np.float32) / 255)


def test_colour_plus_colour_merges_chroma(rng, rgb8):
    other = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    pair = load_pair(rgb8, other)
    expected = merge_chroma(chroma(rgb8 / 255.0), chroma(other / 255.0))
    np.testing.assert_allclose(pair.chroma(), expected, rtol=0, atol=1e-6)
    y_a, y_b = pair.luminances()
    fused_y = (y_a + y_b) / 2
    np.testing.assert_array_equal(pair.colorize(fused_y), colorize(fused_y, pair.chroma()))


def test_colorize_checks_the_shape(ivf_files):
    pair = load_pair(*ivf_files)
    with pytest.raises(ValueError, match=r"fused luminance is \(17, 23\), the pair is \(23, 17\)"):
        pair.colorize(np.zeros((W, H), np.float32))


def test_luminances_are_float32_planes(ivf_files, grey8, rgb8):
    pair = load_pair(*ivf_files)
    y_a, y_b = pair.luminances()
    for y in (y_a, y_b):
        assert y.dtype == np.float32
        assert y.shape == (H, W)
    np.testing.assert_array_equal(y_a, grey8.astype(np.float32) / 255)
    rgb = rgb8.astype(np.float64) / 255
    np.testing.assert_allclose(y_b, 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2], atol=1e-6)
    assert pair.shape == (H, W)
    assert pair.size == (W, H)


def test_size_mismatch_names_both_files_and_sizes(tmp_path, grey8, rng):
    path_a = _save(tmp_path / "thermal.png", grey8)
    path_b = _save(tmp_path / "visible.png", rng.integers(0, 256, (15, 20, 3), dtype=np.uint8))
    with pytest.raises(PairSizeError) as info:
        load_pair(path_a, path_b)
    message = str(info.value)
    assert "thermal.png is 23x17" in message
    assert "visible.png is 20x15" in message
    assert "resize=True" in message


def test_resize_second_to_first(tmp_path, grey8, rng):
    path_a = _save(tmp_path / "thermal.png", grey8)
    for name, shape in (("small.png", (15, 20, 3)), ("large.png", (34, 46))):
        path_b = _save(tmp_path / name, rng.integers(0, 256, shape, dtype=np.uint8))
        pair = load_pair(path_a, path_b, resize=True)
        assert pair.b.pixels.shape == (H, W) + shape[2:]
        assert pair.b.pixels.dtype == np.float32
        assert 0.0 <= pair.b.pixels.min() and pair.b.pixels.max() <= 1.0
        assert pair.b.original_size == (shape[1], shape[0])
        assert f"resized from {shape[1]}x{shape[0]} to 23x17 to match the first image" in pair.b.notes
        np.testing.assert_array_equal(pair.a.pixels, grey8.astype(np.float32) / 255)


def test_image_pair_refuses_different_sizes(grey8):
    a = load_image(grey8, name="left")
    b = load_image(grey8[:, :-1], name="right")
    with pytest.raises(PairSizeError, match="left is 23x17, right is 22x17"):
        ImagePair(a, b)


def test_pair_id_and_names_from_files(ivf_files):
    pair = load_pair(*ivf_files)
    assert pair.id == "00042N_ir"
    assert (pair.a.name, pair.b.name) == ("00042N_ir.png", "00042N_vi.png")
    named = load_pair(*ivf_files, names=("IR", "VIS"))
    assert (named.a.name, named.b.name) == ("IR", "VIS")
    assert named.id == "00042N_ir"  # the id stays the file stem whatever the display names
    assert load_pair(*ivf_files, pair_id="scene7").id == "scene7"


def test_names_default_for_arrays(grey8, rgb8):
    pair = load_pair(grey8, rgb8)
    assert (pair.a.name, pair.b.name) == ("image 1", "image 2")
    assert pair.id == "pair"


def test_load_errors_name_the_file(ivf_files, tmp_path):
    with pytest.raises(ImageLoadError, match="missing_vi.png: file not found"):
        load_pair(ivf_files[0], tmp_path / "missing_vi.png")


def test_pixel_limit_applies_to_both(ivf_files):
    pair = load_pair(*ivf_files, max_pixels=100, on_large="downscale")
    assert pair.a.size == pair.b.size
    assert pair.shape[0] * pair.shape[1] <= 100
