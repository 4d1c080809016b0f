"""Metrics of the fused image alone: EN, SD, SF, AG.

Definitions follow the fusion literature (Ma, Ma & Li, "Infrared and visible image fusion
methods and applications: a survey", Information Fusion 45, 2019) with the exact conventions of
the CDDFuse evaluator (``utils/Evaluator.py`` in Zhaozixiang1228/MMIF-CDDFuse), which most
recent papers, TGIF's included, report. Inputs are grey levels in [0, 255], shape (H, W).
"""

from __future__ import annotations

import numpy as np

from tgif.metrics._inputs import as_gray255


def entropy(fused: np.ndarray) -> float:
    """EN, Shannon entropy of the grey-level histogram, in bits.

    ``EN = -sum_l p_l log2 p_l`` over the 256 levels of ``uint8(round(F))``, with 0 log 0 = 0.
    A two-level image with half the pixels at each level has EN = 1.
    """
    f = as_gray255(fused, "fused")
    counts = np.bincount(np.round(f).astype(np.uint8).ravel(), minlength=256)
    p = counts[counts > 0] / f.size
    return float(-np.sum(p * np.log2(p)))


def standard_deviation(fused: np.ndarray) -> float:
    """SD, population standard deviation of the grey levels: ``sqrt(mean((F - mean F)^2))``."""
    return float(np.std(as_gray255(fused, "fused")))


def spatial_frequency(fused: np.ndarray) -> float:
    """SF = sqrt(RF^2 + CF^2) from first differences (Eskicioglu & Fisher 1995).

    ``RF^2 = mean((F[:, j+1] - F[:, j])^2)`` over H(W-1) pairs and
    ``CF^2 = mean((F[i+1, :] - F[i, :])^2)`` over (H-1)W pairs, each mean over its own count.
    """
    f = as_gray255(fused, "fused")
    rf2 = np.mean(np.diff(f, axis=1) ** 2)
    cf2 = np.mean(np.diff(f, axis=0) ** 2)
    return float(np.sqrt(rf2 + cf2))


def average_gradient(fused: np.ndarray) -> float:
    """AG = mean over all H*W pixels of ``sqrt((Gx^2 + Gy^2) / 2)``.

    Gx, Gy are central differences ``(F[j+1] - F[j-1]) / 2`` inside the image and one-sided
    first differences on the borders (``numpy.gradient``; MATLAB's ``gradient``). Unlike the
    MATLAB script, the mean divides by H*W, as the CDDFuse evaluator does.
    """
    f = as_gray255(fused, "fused")
    gy, gx = np.gradient(f)
    return float(np.mean(np.sqrt((gx * gx + gy * gy) / 2.0)))
