"""Metrics comparing the fused image with each source: SSIM, MI, SCD.

Each is the sum of the fused image's score against source A and against source B, as in the
CDDFuse/FILM evaluator. Grey levels in [0, 255], shape (H, W).
"""

from __future__ import annotations

import numpy as np
from skimage.metrics import structural_similarity

from tgif.metrics._inputs import as_triplet


def ssim_sum(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SSIM(F, A) + SSIM(F, B) (Wang et al., IEEE TIP 2004), range up to 2.

    scikit-image's ``structural_similarity`` with its defaults (7x7 uniform window, K1 = 0.01,
    K2 = 0.03) and ``data_range=255``, as FILM's evaluator calls it. (CDDFuse omits
    ``data_range``, which recent scikit-image refuses for float input.)
    """
    f, a64, b64 = as_triplet(fused, a, b)
    return float(structural_similarity(f, a64, data_range=255.0) + structural_similarity(f, b64, data_range=255.0))


def _mutual_information(x: np.ndarray, y: np.ndarray) -> float:
    """MI in nats of two integer-valued images from their joint 256x256 grey-level histogram."""
    xi = np.round(x).astype(np.int64).ravel()
    yi = np.round(y).astype(np.int64).ravel()
    joint = np.bincount(xi * 256 + yi, minlength=256 * 256).reshape(256, 256).astype(np.float64)
    joint /= joint.sum()
    px, py = joint.sum(axis=1), joint.sum(axis=0)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / np.outer(px, py)[nz])))


def mutual_information(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """MI = I(F; A) + I(F; B) in **nats** (natural log), as the CDDFuse evaluator computes it.

    ``I(X; Y) = sum p(x, y) ln(p(x, y) / (p(x) p(y)))`` over the joint histogram of the grey
    levels (``sklearn.metrics.mutual_info_score`` on the pixel values). The MATLAB toolbox
    reports bits, i.e. this value divided by ln 2. Values are rounded to whole grey levels.
    """
    f, a64, b64 = as_triplet(fused, a, b)
    return _mutual_information(f, a64) + _mutual_information(f, b64)


def _correlation(x: np.ndarray, y: np.ndarray) -> float:
    xc, yc = x - x.mean(), y - y.mean()
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(xc * yc) / np.sqrt(np.sum(xc * xc) * np.sum(yc * yc)))


def sum_of_correlations_of_differences(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """SCD = corr(F - B, A) + corr(F - A, B) (Aslantas & Bendes, AEU 2015), Pearson correlations.

    NaN when a difference image or a source is constant (0/0), as in the reference.
    """
    f, a64, b64 = as_triplet(fused, a, b)
    return _correlation(a64, f - b64) + _correlation(b64, f - a64)
