"""Pixel-wise fusion rules: the simplest references a learned model is compared with."""

from __future__ import annotations

import numpy as np


def average_luma(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """Per-pixel mean of the two luminance planes."""
    return ((y_a.astype(np.float32) + y_b.astype(np.float32)) * 0.5).astype(np.float32)


def max_abs_luma(y_a: np.ndarray, y_b: np.ndarray) -> np.ndarray:
    """Per-pixel choose-max-absolute (for non-negative intensities, the pixel-wise maximum).

    The target of TGIF's IVF intensity loss, and a strong baseline on VIF and Qabf.
    """
    return np.where(np.abs(y_a) >= np.abs(y_b), y_a, y_b).astype(np.float32)
