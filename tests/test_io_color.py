"""Tests for the YCbCr helpers of :mod:`tgif.io.color`.

The forward transform is checked against kornia (the convention the module documents), the
inverse against kornia's rounded one and against exact round trips.
"""

from __future__ import annotations

import numpy as np
import pytest

from tgif.io import chroma, colorize, luminance, merge_chroma, rgb_to_ycbcr, to_uint8, ycbcr_to_rgb

H, W = 17, 23


def _to_torch(image: np.ndarray):
    torch = pytest.importorskip("torch")
    return torch.from_numpy(image.astype(np.float64)).permute(2, 0, 1)[None]


def _from_torch(tensor) -> np.ndarray:
    return tensor[0].permute(1, 2, 0).numpy()


@pytest.fixture
def rgb(rng) -> np.ndarray:
    return rng.random((H, W, 3)).astype(np.float32)


def _levels_and_primaries() -> np.ndarray:
    """All 256 8-bit grey levels plus black, white, the primaries and secondaries, as (N, 1, 3)."""
    grey = np.repeat((np.arange(256) / 255.0)[:, None], 3, axis=1)
    corners = np.array([[r, g, b] for r in (0, 1) for g in (0, 1) for b in (0, 1)], dtype=np.float64)
    return np.concatenate([grey, corners]).astype(np.float32)[:, None, :]


def test_rgb_to_ycbcr_matches_kornia(rgb):
    kornia = pytest.importorskip("kornia")
    ours = rgb_to_ycbcr(rgb)
    theirs = _from_torch(kornia.color.rgb_to_ycbcr(_to_torch(rgb)))
    assert ours.dtype == np.float32
    assert ours.shape == (H, W, 3)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)


def test_ycbcr_to_rgb_matches_kornia(rgb):
    kornia = pytest.importorskip("kornia")
    ycbcr = rgb_to_ycbcr(rgb)
    ours = ycbcr_to_rgb(ycbcr)
    theirs = _from_torch(kornia.color.ycbcr_to_rgb(_to_torch(ycbcr)))
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=2e-3)


def test_known_values():
    pixels = np.array([[[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1], [0, 0, 0]]], dtype=np.float32)
    ycbcr = rgb_to_ycbcr(pixels).astype(np.float64)
    np.testing.assert_allclose(ycbcr[0, :, 0], [0.299, 0.587, 0.114, 1.0, 0.0], atol=1e-6)
    cb = [0.5 - 0.564 * 0.299, 0.5 - 0.564 * 0.587, 0.5 + 0.564 * 0.886, 0.5, 0.5]
    cr = [0.5 + 0.713 * 0.701, 0.5 - 0.713 * 0.587, 0.5 - 0.713 * 0.114, 0.5, 0.5]
    np.testing.assert_allclose(ycbcr[0, :, 1], cb, atol=1e-6)
    np.testing.assert_allclose(ycbcr[0, :, 2], cr, atol=1e-6)


def test_round_trip_random_is_exact(rgb):
    np.testing.assert_allclose(ycbcr_to_rgb(rgb_to_ycbcr(rgb)), rgb, rtol=0, atol=1e-6)


def test_round_trip_grey_levels_and_primaries_is_exact():
    pixels = _levels_and_primaries()
    ycbcr = rgb_to_ycbcr(pixels)
    np.testing.assert_allclose(ycbcr_to_rgb(ycbcr), pixels, rtol=0, atol=1e-6)
    greys = ycbcr[:256]
    np.testing.assert_allclose(greys[..., 0], pixels[:256, :, 0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(greys[..., 1:], 0.5, rtol=0, atol=1e-6)  # grey has neutral chroma


def test_round_trip_through_uint8_is_exact():
    levels = np.r_[np.arange(0, 256, 4), 255]
    r, g, b = np.meshgrid(levels, levels, levels, indexing="ij")
    u8 = np.stack([r, g, b], axis=-1).reshape(len(levels) ** 2, len(levels), 3).astype(np.uint8)
    back = to_uint8(ycbcr_to_rgb(rgb_to_ycbcr(u8.astype(np.float32) / 255.0)))
    np.testing.assert_array_equal(back, u8)


def test_ycbcr_to_rgb_clips_unless_asked(rgb):
    ycbcr = rgb_to_ycbcr(rgb)
    ycbcr[0, 0] = (0.5, 0.9, 0.1)  # out of the RGB gamut: B > 1, R < 0
    clipped = ycbcr_to_rgb(ycbcr)
    raw = ycbcr_to_rgb(ycbcr, clip=False)
    assert clipped.min() >= 0.0 and clipped.max() <= 1.0
    assert raw[0, 0].max() > 1.0 and raw[0, 0].min() < 0.0
    np.testing.assert_array_equal(clipped[0, 0], np.clip(raw[0, 0], 0.0, 1.0))


@pytest.mark.parametrize("shape", [(H, W), (H, W, 4), (3, H, W)])
def test_shape_errors(shape):
    with pytest.raises(ValueError, match=r"must have shape \(H, W, 3\)"):
        rgb_to_ycbcr(np.zeros(shape))
    with pytest.raises(ValueError, match=r"must have shape \(H, W, 3\)"):
        ycbcr_to_rgb(np.zeros(shape))


def test_luminance_formula(rgb):
    expected = 0.299 * rgb[..., 0].astype(np.float64) + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
    y = luminance(rgb)
    assert y.dtype == np.float32
    assert y.shape == (H, W)
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(y, rgb_to_ycbcr(rgb)[..., 0])


def test_luminance_of_grey_passes_through(rng):
    grey = rng.random((H, W))
    y = luminance(grey)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, grey.astype(np.float32))
    grey32 = grey.astype(np.float32)
    assert luminance(grey32) is grey32
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        luminance(np.zeros((H, W, 4)))


def test_chroma_is_the_cb_cr_planes(rgb):
    cbcr = chroma(rgb)
    assert cbcr.shape == (H, W, 2)
    np.testing.assert_array_equal(cbcr, rgb_to_ycbcr(rgb)[..., 1:])


def test_merge_chroma_of_identical_inputs(rgb):
    cbcr = chroma(rgb)
    np.testing.assert_allclose(merge_chroma(cbcr, cbcr), cbcr, rtol=0, atol=1e-7)


def test_merge_chroma_neutral_and_colour_gives_colour(rgb):
    cbcr = chroma(rgb)
    neutral = np.full_like(cbcr, 0.5)
    np.testing.assert_allclose(merge_chroma(neutral, cbcr), cbcr, rtol=0, atol=1e-7)
    np.testing.assert_allclose(merge_chroma(cbcr, neutral), cbcr, rtol=0, atol=1e-7)


def test_merge_chroma_both_neutral_stays_neutral():
    neutral = np.full((H, W, 2), 0.5, np.float32)
    merged = merge_chroma(neutral, neutral)
    assert merged.dtype == np.float32
    np.testing.assert_array_equal(merged, neutral)


def test_merge_chroma_weights_by_saturation():
    a = np.array([[[0.7, 0.6]]], np.float32)
    b = np.array([[[0.4, 0.4]]], np.float32)
    # Cb: weights 0.2 and 0.1 -> (0.7*0.2 + 0.4*0.1) / 0.3 = 0.6; Cr: equal weights on opposite sides -> 0.5
    np.testing.assert_allclose(merge_chroma(a, b), [[[0.6, 0.5]]], rtol=0, atol=1e-6)


def test_merge_chroma_is_symmetric_and_between_inputs(rng):
    a = rng.random((H, W, 2)).astype(np.float32)
    b = rng.random((H, W, 2)).astype(np.float32)
    merged = merge_chroma(a, b)
    np.testing.assert_array_equal(merged, merge_chroma(b, a))
    assert np.all(merged >= np.minimum(a, b) - 1e-6)
    assert np.all(merged <= np.maximum(a, b) + 1e-6)


def test_merge_chroma_shape_mismatch():
    with pytest.raises(ValueError, match="chroma shapes differ"):
        merge_chroma(np.zeros((H, W, 2)), np.zeros((W, H, 2)))


def test_colorize_restores_the_colour_image(rgb):
    np.testing.assert_allclose(colorize(luminance(rgb), chroma(rgb)), rgb, rtol=0, atol=1e-6)


def test_colorize_without_chroma_is_grey(rng):
    y = rng.random((H, W))
    out = colorize(y, None)
    assert out.shape == (H, W)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, y.astype(np.float32))


def test_colorize_with_neutral_chroma_gives_equal_channels(rng):
    y = rng.random((H, W)).astype(np.float32)
    out = colorize(y, np.full((H, W, 2), 0.5, np.float32))
    assert out.shape == (H, W, 3)
    for channel in range(3):
        np.testing.assert_allclose(out[..., channel], y, rtol=0, atol=1e-6)


def test_colorize_clips_luminance():
    y = np.array([[-0.2, 0.25, 1.3]])
    np.testing.assert_array_equal(colorize(y, None), np.array([[0.0, 0.25, 1.0]], np.float32))
    out = colorize(y, np.full((1, 3, 2), 0.5))
    np.testing.assert_allclose(out[0, :, 0], [0.0, 0.25, 1.0], rtol=0, atol=1e-6)


def test_colorize_shape_errors():
    with pytest.raises(ValueError, match=r"luminance must have shape \(H, W\)"):
        colorize(np.zeros((H, W, 1)), None)
    with pytest.raises(ValueError, match=r"chroma shape \(17, 23, 3\) does not match luminance \(17, 23\)"):
        colorize(np.zeros((H, W)), np.zeros((H, W, 3)))
    with pytest.raises(ValueError, match="does not match"):
        colorize(np.zeros((H, W)), np.zeros((W, H, 2)))
