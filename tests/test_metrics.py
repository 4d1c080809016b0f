"""Fusion metrics against exact values, independent computations and the reference evaluator.

Golden values marked "reference" were produced by running the unmodified CDDFuse evaluator
(``utils/Evaluator.py`` of Zhaozixiang1228/MMIF-CDDFuse; SSIM with ``data_range=255`` as in
FILM) on the same inputs; its code is not part of this repository.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.signal import convolve2d
from scipy.stats import entropy as scipy_entropy

from tgif.errors import MetricInputError, UnknownNameError
from tgif.metrics import (
    METRICS,
    PAPER_METRICS,
    average_gradient,
    compute_metrics,
    entropy,
    gray_levels,
    mutual_information,
    qabf,
    read_gray_levels,
    resolve_metric_names,
    spatial_frequency,
    ssim_sum,
    standard_deviation,
    sum_of_correlations_of_differences,
    visual_information_fidelity,
)

RAMP = np.tile(np.arange(256.0), (64, 1))


def smooth_pair() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    i, j = np.mgrid[0:96, 0:128]
    a = np.round(128 + 100 * np.sin(i / 7) * np.cos(j / 11))
    b = np.round(128 + 60 * np.cos(i / 5 + j / 9))
    return np.maximum(a, b), a, b


# --- golden values from the reference evaluator (tolerance 1e-6 relative) -------------------

def test_ramp_golden_values() -> None:
    values = compute_metrics(RAMP, RAMP, RAMP)
    expected = {"EN": 8.0, "SD": 73.900271, "SF": 1.0, "AG": 0.707107, "VIF": 2.0, "Qabf": 0.975333}
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name


def test_smooth_pair_golden_values() -> None:
    f, a, b = smooth_pair()
    values = compute_metrics(f, a, b, "all")
    expected = {  # reference
        "EN": 7.013983718719061, "SD": 37.92579592955958, "SF": 8.984672344656447, "AG": 5.690832319016195,
        "VIF": 0.5407814828878241, "Qabf": 0.5813166163355178, "SSIM": 1.183546077233601,
        "MI": 5.227628342894788, "SCD": 1.1729116704549782,
    }
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, rel=1e-9), name


def test_constant_fused_image_golden_values() -> None:
    ramp = RAMP[:, :64]
    const = np.full((64, 64), 100.0)
    values = compute_metrics(const, ramp, ramp)
    assert values["EN"] == 0.0 and values["SD"] == 0.0 and values["SF"] == 0.0 and values["AG"] == 0.0
    assert values["VIF"] == pytest.approx(0.0, abs=1e-12)
    # the zero-padded Sobel sees edges on the border of the constant image
    assert values["Qabf"] == pytest.approx(0.255993, abs=1e-6)


REFERENCE_ON_SHARED = {  # reference, on images read as cv2 grey + round
    ("msrs_test", "ir/00004N.png", "vi/00004N.png", "max"): {
        "EN": 6.217247645, "SD": 30.3426163, "SF": 6.547577792, "AG": 1.792415917, "VIF": 1.015386546,
        "Qabf": 0.65939291, "SSIM": 1.553271886, "MI": 4.147065005, "SCD": 1.749422045},
    ("msrs_test", "ir/00004N.png", "vi/00004N.png", "mean"): {
        "EN": 5.347274117, "SD": 17.29730406, "SF": 3.639889408, "AG": 1.126593148, "VIF": 0.6159836129,
        "Qabf": 0.3313171209, "SSIM": 1.63750832, "MI": 1.704099859, "SCD": 1.152036168},
    ("roadscene_test", "ir/FLIR_00211.jpg", "vi/FLIR_00211.jpg", "max"): {
        "EN": 6.809494561, "SD": 43.640266, "SF": 11.21987229, "AG": 3.694218589, "VIF": 0.7817305168,
        "Qabf": 0.6007613906, "SSIM": 1.295188876, "MI": 5.243184526, "SCD": 1.667149258},
    ("roadscene_test", "ir/FLIR_00211.jpg", "vi/FLIR_00211.jpg", "mean"): {
        "EN": 6.190229416, "SD": 22.68950626, "SF": 6.901385098, "AG": 2.587566601, "VIF": 0.5237834759,
        "Qabf": 0.3524164671, "SSIM": 1.380915105, "MI": 2.020053674, "SCD": 1.828897142},
    ("harvard_mri_pet", "mri/11.png", "pet/11.png", "max"): {
        "EN": 3.987302825, "SD": 80.0776058, "SF": 35.05457405, "AG": 10.01002967, "VIF": 1.356734301,
        "Qabf": 0.9150839454, "SSIM": 1.464945215, "MI": 2.902976298, "SCD": 1.920110562},
    ("harvard_mri_pet", "mri/11.png", "pet/11.png", "mean"): {
        "EN": 3.92665035, "SD": 45.65795649, "SF": 17.84527815, "AG": 5.21568885, "VIF": 1.008697797,
        "Qabf": 0.4726089432, "SSIM": 1.330983551, "MI": 2.536329583, "SCD": 1.257913318},
}


@pytest.mark.parametrize("case", sorted(REFERENCE_ON_SHARED), ids=lambda c: "-".join((c[0], c[3])))
def test_agrees_with_reference_evaluator_on_shared_images(data_root, case) -> None:
    dataset, path_a, path_b, rule = case
    a = read_gray_levels(data_root / dataset / path_a)
    b = read_gray_levels(data_root / dataset / path_b)
    fused = np.maximum(a, b) if rule == "max" else np.round((a + b) / 2)
    values = compute_metrics(fused, a, b, "all")
    for name, expected in REFERENCE_ON_SHARED[case].items():
        assert values[name] == pytest.approx(expected, rel=1e-4), name


# --- exact values on hand-made images ---------------------------------------------------------

def test_entropy_of_two_level_half_half_image_is_one_bit() -> None:
    img = np.zeros((10, 10))
    img[:, 5:] = 200
    assert entropy(img) == pytest.approx(1.0, abs=1e-12)


def test_entropy_matches_scipy_and_rounds_like_uint8(rng) -> None:
    img = rng.integers(0, 256, (33, 47)).astype(np.float64)
    counts = np.bincount(img.astype(int).ravel(), minlength=256)
    assert entropy(img) == pytest.approx(scipy_entropy(counts, base=2), rel=1e-12)
    # non-integer grey levels are rounded into their bins first (2.4 -> 2, 2.6 -> 3)
    assert entropy(np.array([[2.4, 2.6], [3.0, 2.0]])) == pytest.approx(1.0)


def test_constant_image_has_zero_statistics() -> None:
    img = np.full((20, 30), 77.0)
    assert entropy(img) == 0.0
    assert standard_deviation(img) == 0.0
    assert spatial_frequency(img) == 0.0
    assert average_gradient(img) == 0.0


def test_checkerboard_sf_and_ag_exact() -> None:
    n = 8
    board = 255.0 * (np.indices((n, n)).sum(axis=0) % 2)
    assert spatial_frequency(board) == pytest.approx(math.sqrt(2) * 255.0)
    # interior central differences vanish; borders use one-sided differences of +-255
    expected = (4 * 255.0 + 4 * (n - 2) * 255.0 / math.sqrt(2)) / n**2
    assert average_gradient(board) == pytest.approx(expected)
    assert standard_deviation(board) == pytest.approx(127.5)


def test_sf_and_ag_against_explicit_loops(rng) -> None:
    img = rng.integers(0, 256, (9, 13)).astype(np.float64)
    h, w = img.shape
    rf = sum((img[i, j + 1] - img[i, j]) ** 2 for i in range(h) for j in range(w - 1)) / (h * (w - 1))
    cf = sum((img[i + 1, j] - img[i, j]) ** 2 for i in range(h - 1) for j in range(w)) / ((h - 1) * w)
    assert spatial_frequency(img) == pytest.approx(math.sqrt(rf + cf), rel=1e-12)

    def diff(line: np.ndarray, k: int) -> float:
        if k == 0:
            return line[1] - line[0]
        if k == len(line) - 1:
            return line[-1] - line[-2]
        return (line[k + 1] - line[k - 1]) / 2

    total = sum(math.sqrt((diff(img[i], j) ** 2 + diff(img[:, j], i) ** 2) / 2) for i in range(h) for j in range(w))
    assert average_gradient(img) == pytest.approx(total / (h * w), rel=1e-12)


def test_sd_is_population_std(rng) -> None:
    img = rng.integers(0, 256, (11, 7)).astype(np.float64)
    assert standard_deviation(img) == pytest.approx(math.sqrt(((img - img.mean()) ** 2).sum() / img.size))


# --- independent implementations of VIF and Qabf (written from the formulas, 2-D and slow) ----

def _vifp_direct(ref: np.ndarray, dist: np.ndarray) -> float:
    num = den = 0.0
    for scale in range(1, 5):
        n = 2 ** (5 - scale) + 1
        y, x = np.mgrid[: n, : n] - (n - 1) / 2
        win = np.exp(-(x**2 + y**2) / (2 * (n / 5) ** 2))
        win[win < np.finfo(float).eps * win.max()] = 0
        win /= win.sum()
        if scale > 1:
            ref = convolve2d(ref, win, mode="valid")[::2, ::2]
            dist = convolve2d(dist, win, mode="valid")[::2, ::2]
        mu1, mu2 = convolve2d(ref, win, "valid"), convolve2d(dist, win, "valid")
        s1 = np.maximum(convolve2d(ref * ref, win, "valid") - mu1**2, 0)
        s2 = np.maximum(convolve2d(dist * dist, win, "valid") - mu2**2, 0)
        s12 = convolve2d(ref * dist, win, "valid") - mu1 * mu2
        for idx in np.ndindex(s1.shape):
            a, b, c = s1[idx], s2[idx], s12[idx]
            g = c / (a + 1e-10)
            sv = b - g * c
            if a < 1e-10:
                g, sv, a = 0.0, b, 0.0
            if b < 1e-10:
                g, sv = 0.0, 0.0
            if g < 0:
                sv, g = b, 0.0
            sv = max(sv, 1e-10)
            num += math.log10(1 + g * g * a / (sv + 2))
            den += math.log10(1 + a / 2)
    return 1.0 if den == 0 else num / den


def test_vif_against_direct_2d_implementation(rng) -> None:
    i, j = np.mgrid[0:48, 0:52]  # large enough for all four scales
    a = np.clip(np.round(120 + 80 * np.sin(i / 4) + rng.normal(0, 5, i.shape)), 0, 255)
    b = np.clip(np.round(100 + 60 * np.cos(j / 3) + rng.normal(0, 5, i.shape)), 0, 255)
    f = np.round((a + b) / 2)
    expected = _vifp_direct(a, f) + _vifp_direct(b, f)
    assert visual_information_fidelity(f, a, b) == pytest.approx(expected, rel=1e-9)


def _qabf_direct(f: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    sx_k = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], float)
    sy_k = np.array([[1, 2, 1], [0, 0, 0], [-1, -2, -1]], float)

    def edges(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sx, sy = convolve2d(img, sx_k, "same"), convolve2d(img, sy_k, "same")
        angle = np.where(sx == 0, math.pi / 2, np.arctan(sy / np.where(sx == 0, 1, sx)))
        return np.hypot(sx, sy), angle

    (ga, aa), (gb, ab), (gf, af) = edges(a), edges(b), edges(f)
    num = den = 0.0
    for idx in np.ndindex(f.shape):
        for g, al in ((ga, aa), (gb, ab)):
            gx, gfx = g[idx], gf[idx]
            rel = gfx / gx if gx > gfx else (gx / gfx if gx < gfx else gfx)
            ang = 1 - abs(al[idx] - af[idx]) / (math.pi / 2)
            q = 0.9994 / (1 + math.exp(-15 * (rel - 0.5))) * 0.9879 / (1 + math.exp(-22 * (ang - 0.8)))
            num += q * gx
            den += gx
    return num / den


def test_qabf_against_direct_implementation(rng) -> None:
    a = rng.integers(0, 256, (12, 15)).astype(float)
    b = np.round(np.clip(a * 0.5 + rng.integers(0, 100, a.shape), 0, 255))
    f = np.maximum(a, b)
    assert qabf(f, a, b) == pytest.approx(_qabf_direct(f, a, b), rel=1e-12)


def test_qabf_of_identical_images_shows_reference_quirk() -> None:
    # where gX == gF the reference uses gF instead of 1, so Qabf(A, A, A) is about 0.975, not 1
    assert qabf(RAMP, RAMP, RAMP) == pytest.approx(0.975333, abs=1e-6)


# --- MI, SCD, SSIM ------------------------------------------------------------------------------

def test_mutual_information_against_entropies(rng) -> None:
    a = rng.integers(0, 256, (30, 30)).astype(float)
    b = rng.integers(0, 64, (30, 30)).astype(float)
    f = np.round((a + b) / 2)

    def mi(x: np.ndarray, y: np.ndarray) -> float:
        joint = np.histogram2d(x.ravel(), y.ravel(), bins=256, range=[[0, 256], [0, 256]])[0]
        return (scipy_entropy(joint.sum(1)) + scipy_entropy(joint.sum(0)) - scipy_entropy(joint.ravel()))

    assert mutual_information(f, a, b) == pytest.approx(mi(f, a) + mi(f, b), rel=1e-10)


def test_mutual_information_of_identical_images_is_twice_entropy_in_nats(rng) -> None:
    img = rng.integers(0, 256, (25, 31)).astype(float)
    assert mutual_information(img, img, img) == pytest.approx(2 * entropy(img) * math.log(2), rel=1e-10)


def test_scd_against_numpy_corrcoef(rng) -> None:
    a = rng.integers(0, 256, (20, 20)).astype(float)
    b = rng.integers(0, 256, (20, 20)).astype(float)
    f = np.round(0.6 * a + 0.4 * b)
    expected = np.corrcoef((f - b).ravel(), a.ravel())[0, 1] + np.corrcoef((f - a).ravel(), b.ravel())[0, 1]
    assert sum_of_correlations_of_differences(f, a, b) == pytest.approx(expected, rel=1e-12)


def test_ssim_of_identical_images_is_two(rng) -> None:
    img = rng.integers(0, 256, (32, 32)).astype(float)
    assert ssim_sum(img, img, img) == pytest.approx(2.0)
    assert ssim_sum(255 - img, img, img) < 0.5


# --- properties ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["VIF", "Qabf", "SSIM", "MI", "SCD"])
def test_source_metrics_are_symmetric_in_the_sources(name, rng) -> None:
    f, a, b = smooth_pair()
    assert METRICS[name](f, a, b) == pytest.approx(METRICS[name](f, b, a), rel=1e-12)


@pytest.mark.parametrize("name", ["EN", "SD", "SF", "AG", "VIF", "SSIM", "MI", "SCD"])
def test_metrics_are_invariant_to_transposition(name) -> None:
    f, a, b = smooth_pair()
    assert METRICS[name](f.T, a.T, b.T) == pytest.approx(METRICS[name](f, a, b), rel=1e-9)


def test_qabf_is_invariant_to_half_turn_but_not_to_transposition() -> None:
    # arctan(Sy/Sx) keeps its value when both responses flip sign (half turn), but a transposition
    # swaps Sx and Sy, which changes orientation differences: Qabf is not transposition invariant
    f, a, b = smooth_pair()
    turn = [np.rot90(x, 2) for x in (f, a, b)]
    assert qabf(*turn) == pytest.approx(qabf(f, a, b), rel=1e-12)
    assert qabf(f.T, a.T, b.T) != pytest.approx(qabf(f, a, b), rel=1e-3)


def test_sd_invariant_to_shift_and_en_to_permutation(rng) -> None:
    img = rng.integers(0, 200, (16, 16)).astype(float)
    assert standard_deviation(img + 50) == pytest.approx(standard_deviation(img))
    assert entropy(rng.permutation(img.ravel()).reshape(img.shape)) == pytest.approx(entropy(img))


def test_better_fusion_scores_higher_on_source_metrics() -> None:
    f, a, b = smooth_pair()
    blurred = np.round(convolve2d(f, np.ones((5, 5)) / 25, "same", boundary="symm"))
    for name in ("VIF", "Qabf", "MI"):
        assert METRICS[name](f, a, b) > METRICS[name](blurred, a, b), name


# --- input contract ------------------------------------------------------------------------------

def test_unit_range_input_is_refused_with_a_hint(rng) -> None:
    img = rng.random((8, 8))
    with pytest.raises(MetricInputError, match=r"\[0, 1\].*multiply by 255"):
        entropy(img)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((4, 4, 3)), "2-D grey image"),
        (np.full((4, 4), 300.0), r"\[0, 255\]"),
        (np.full((4, 4), np.nan), "NaN"),
        (np.zeros((1, 5)), "at least 2x2"),
    ],
)
def test_bad_inputs_raise_clear_errors(bad, message) -> None:
    with pytest.raises(MetricInputError, match=message):
        standard_deviation(bad)


def test_shape_mismatch_is_refused() -> None:
    with pytest.raises(MetricInputError, match="shapes differ"):
        qabf(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 5)))


def test_metric_name_resolution() -> None:
    assert resolve_metric_names(None) == PAPER_METRICS
    assert resolve_metric_names("all") == tuple(METRICS)
    assert resolve_metric_names("en, qabf") == ("EN", "Qabf")
    with pytest.raises(UnknownNameError, match="unknown metric 'PSNRX'"):
        resolve_metric_names("PSNRX")


# --- reading images the evaluator's way ----------------------------------------------------------

def test_gray_levels_match_opencv_float_conversion_and_round(rng) -> None:
    import cv2

    rgb = rng.integers(0, 256, (17, 19, 3)).astype(np.uint8)
    expected = np.round(cv2.cvtColor(rgb[..., ::-1].astype(np.float32), cv2.COLOR_BGR2GRAY))
    np.testing.assert_array_equal(gray_levels(rgb), expected)
    grey = rng.integers(0, 256, (5, 6)).astype(np.uint8)
    np.testing.assert_array_equal(gray_levels(grey), grey.astype(float))


def test_metrics_are_computed_on_the_saved_8bit_file(tmp_path, rng) -> None:
    from PIL import Image

    rgb = rng.integers(0, 256, (24, 24, 3)).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "f.png")
    Image.fromarray(rgb).save(tmp_path / "f.jpg", quality=60)
    np.testing.assert_array_equal(read_gray_levels(tmp_path / "f.png"), gray_levels(rgb))
    # a lossy save changes what is scored: the metrics see the file, not the array
    assert not np.array_equal(read_gray_levels(tmp_path / "f.jpg"), gray_levels(rgb))
