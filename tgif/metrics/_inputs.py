"""Input contract shared by all metrics: 2-D float arrays of grey levels in [0, 255]."""

from __future__ import annotations

import numpy as np

from tgif.errors import MetricInputError


def as_gray255(image: np.ndarray, what: str = "image") -> np.ndarray:
    """Check that ``image`` is a 2-D array of grey levels in [0, 255] and return it as float64.

    The fusion metrics (EN bins, VIF noise variance 2, ...) assume 8-bit grey levels; an array
    of non-integer values inside [0, 1] is almost surely [0, 1] data and is refused.
    """
    if not isinstance(image, np.ndarray):
        raise MetricInputError(f"{what}: expected a numpy array, got {type(image).__name__}")
    if image.ndim != 2:
        raise MetricInputError(f"{what}: expected a 2-D grey image (H, W), got shape {image.shape}")
    if image.shape[0] < 2 or image.shape[1] < 2:
        raise MetricInputError(f"{what}: image must be at least 2x2, got {image.shape}")
    arr = image.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise MetricInputError(f"{what}: contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 255.0:
        raise MetricInputError(f"{what}: grey levels must lie in [0, 255], got [{lo:g}, {hi:g}]")
    if hi <= 1.0 and np.any(arr != np.round(arr)):
        raise MetricInputError(
            f"{what}: values look like [0, 1] data; metrics expect grey levels 0-255 (multiply by 255)")
    return arr


def as_triplet(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Check a fused image and its two sources (equal shapes) and return them as float64."""
    f64, a64, b64 = as_gray255(fused, "fused"), as_gray255(a, "source 1"), as_gray255(b, "source 2")
    if not (f64.shape == a64.shape == b64.shape):
        raise MetricInputError(f"shapes differ: fused {fused.shape}, source 1 {a.shape}, source 2 {b.shape}")
    return f64, a64, b64
