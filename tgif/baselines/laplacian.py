"""Laplacian-pyramid fusion (Burt & Adelson, "Merging images through pattern recognition", 1985).

Each source's luminance is decomposed into a Laplacian pyramid (``cv2.pyrDown``/``pyrUp``, any
size). Detail levels take, per pixel, the coefficient of the source with the higher local
activity (mean |coefficient| over a 3x3 window, which avoids salt-and-pepper selection).
The coarsest (Gaussian) level is merged by the same rule TGIF's loss uses for the task's
intensity target: the maximum for IVF/MIF (keeps bright thermal targets and dense tissue), the
mean for MEF/MFF (balances exposure). The fused pyramid is collapsed and clipped to [0, 1].
"""

from __future__ import annotations

import cv2
import numpy as np

DEFAULT_MAX_LEVELS = 5


def pyramid_levels(shape: tuple[int, int], max_levels: int = DEFAULT_MAX_LEVELS) -> int:
    """Number of detail levels for an image: stop before the coarsest side drops under 8 pixels."""
    smallest = min(shape)
    levels = 0
    while levels < max_levels and smallest >= 16:
        smallest = (smallest + 1) // 2
        levels += 1
    return levels


def laplacian_pyramid(image: np.ndarray, levels: int) -> list[np.ndarray]:
    """Return ``levels`` detail planes followed by the coarsest Gaussian level (float32)."""
    current = image.astype(np.float32)
    pyramid = []
    for _ in range(levels):
        down = cv2.pyrDown(current)
        up = cv2.pyrUp(down, dstsize=(current.shape[1], current.shape[0]))
        pyramid.append(current - up)
        current = down
    pyramid.append(current)
    return pyramid


def collapse_pyramid(pyramid: list[np.ndarray]) -> np.ndarray:
    """Invert :func:`laplacian_pyramid`."""
    current = pyramid[-1]
    for detail in reversed(pyramid[:-1]):
        current = cv2.pyrUp(current, dstsize=(detail.shape[1], detail.shape[0])) + detail
    return current


def laplacian_luma(
    y_a: np.ndarray, y_b: np.ndarray, base: str = "average", max_levels: int = DEFAULT_MAX_LEVELS
) -> np.ndarray:
    """Fuse two luminance planes (H, W) in [0, 1] with a Laplacian pyramid; returns float32 in [0, 1].

    Args:
        base: how the coarsest level is merged, ``"average"`` or ``"max"``.
        max_levels: upper bound on the number of detail levels.
    """
    if base not in ("average", "max"):
        raise ValueError(f"base must be 'average' or 'max', got {base!r}")
    levels = pyramid_levels(y_a.shape, max_levels)
    pyr_a, pyr_b = laplacian_pyramid(y_a, levels), laplacian_pyramid(y_b, levels)
    fused = []
    for det_a, det_b in zip(pyr_a[:-1], pyr_b[:-1]):
        act_a = cv2.blur(np.abs(det_a), (3, 3))
        act_b = cv2.blur(np.abs(det_b), (3, 3))
        fused.append(np.where(act_a >= act_b, det_a, det_b))
    fused.append(np.maximum(pyr_a[-1], pyr_b[-1]) if base == "max" else (pyr_a[-1] + pyr_b[-1]) * 0.5)
    return np.clip(collapse_pyramid(fused), 0.0, 1.0).astype(np.float32)


def base_rule_for_task(task: str | None) -> str:
    """The coarse-level rule for a fusion task: ``"max"`` for ivf/mif, ``"average"`` otherwise."""
    return "max" if task in ("ivf", "mif") else "average"
