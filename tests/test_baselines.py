"""Classic fusion baselines: exact pixel rules, pyramid reconstruction, colour and task handling."""

from __future__ import annotations

import numpy as np
import pytest

from tgif.baselines import BASELINES, fuse, get_baseline
from tgif.baselines.laplacian import collapse_pyramid, laplacian_luma, laplacian_pyramid, pyramid_levels
from tgif.errors import UnknownNameError
from tgif.io import load_pair, luminance


def test_average_and_max_are_exact_pixel_rules(rng) -> None:
    a = rng.random((13, 17)).astype(np.float32)
    b = rng.random((13, 17)).astype(np.float32)
    pair = load_pair(a, b)
    np.testing.assert_allclose(fuse(pair, "average"), (a + b) / 2, atol=1e-7)
    np.testing.assert_array_equal(fuse(pair, "max"), np.maximum(a, b))


@pytest.mark.parametrize("shape", [(64, 64), (37, 53), (480, 640), (15, 9)])
def test_laplacian_pyramid_reconstructs_exactly(shape, rng) -> None:
    img = rng.random(shape).astype(np.float32)
    levels = pyramid_levels(shape)
    pyramid = laplacian_pyramid(img, levels)
    assert len(pyramid) == levels + 1
    np.testing.assert_allclose(collapse_pyramid(pyramid), img, atol=1e-5)


def test_laplacian_of_identical_sources_returns_the_source(rng) -> None:
    img = rng.random((40, 56)).astype(np.float32)
    np.testing.assert_allclose(laplacian_luma(img, img), img, atol=1e-5)
    np.testing.assert_allclose(laplacian_luma(img, img, base="max"), img, atol=1e-5)


def test_laplacian_keeps_the_sharp_half_of_a_multifocus_pair(rng) -> None:
    import cv2

    sharp = rng.random((64, 96)).astype(np.float32)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    near = sharp.copy()
    near[:, 48:] = blurred[:, 48:]
    far = blurred.copy()
    far[:, 48:] = sharp[:, 48:]
    fused = laplacian_luma(near, far)
    err_fused = np.abs(fused - sharp)[:, 4:-4].mean()
    err_average = np.abs((near + far) / 2 - sharp)[:, 4:-4].mean()
    assert err_fused < 0.5 * err_average


def test_task_selects_the_laplacian_base_rule(rng) -> None:
    dark = np.full((32, 32), 0.2, np.float32)
    bright = np.full((32, 32), 0.8, np.float32)
    ivf = load_pair(dark, bright, task="ivf")
    mef = load_pair(dark, bright, task="mef")
    np.testing.assert_allclose(fuse(ivf, "laplacian"), 0.8, atol=1e-5)  # max base (IVF intensity target)
    np.testing.assert_allclose(fuse(mef, "laplacian"), 0.5, atol=1e-5)  # mean base (MEF intensity target)


def test_colour_is_restored_from_the_visible_source(rng) -> None:
    ir = rng.random((20, 24)).astype(np.float32)
    vis = rng.random((20, 24, 3)).astype(np.float32)
    for method in BASELINES:
        out = fuse(load_pair(ir, vis, task="ivf"), method)
        assert out.shape == (20, 24, 3) and out.dtype == np.float32
        assert 0.0 <= out.min() and out.max() <= 1.0
    # with the visible luminance as the "fused" Y, the visible image comes back
    pair = load_pair(ir, vis)
    np.testing.assert_allclose(pair.colorize(luminance(vis)), vis, atol=1e-5)


def test_unknown_method_lists_choices() -> None:
    with pytest.raises(UnknownNameError, match="choose from average, max, laplacian"):
        get_baseline("wavelet")
