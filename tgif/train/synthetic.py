"""Synthetic multi-focus and multi-exposure pairs made from one well-made image.

**Multi-focus.**
A smooth random partition mask ``m`` in [0, 1] (soft edge) splits the frame. The ``near`` source
is sharp where ``m`` is 1 and Gaussian-blurred elsewhere, the ``far`` source the complement:

    near = m * sharp + (1 - m) * blur(sharp, sigma_near)
    far  = (1 - m) * sharp + m * blur(sharp, sigma_far)

and the sharp image is the fusion ground truth. Everything is drawn from ``numpy``'s generator
seeded by ``seed``, so a seed always gives the same pair. The mask is either a half-plane through
a point of the central half of the frame, at a random angle, or a blob: a random 4x4 field
upsampled (bicubic) and thresholded at a random quantile. Its edge is softened by a Gaussian
(:data:`EDGE_SIGMA` pixels). Blur widths are drawn from ``sigma_range`` (2 to 4 pixels).

**Multi-exposure.** The image is taken to linear light (``x ** GAMMA``), scaled by ``2 ** -s`` for the
under-exposed source and ``2 ** t`` for the over-exposed one, clipped to [0, 1] and encoded back
(``** (1 / GAMMA)``):

    under = (2 ** -s * x ** GAMMA) ** (1 / GAMMA)
    over  = min(1, 2 ** t * x ** GAMMA) ** (1 / GAMMA)

with ``s`` drawn from :data:`UNDER_STOPS` (1.5 to 3.5 stops) and ``t`` from :data:`OVER_STOPS` (1 to 2.5), which
puts the pairs made from ``shared/train/natural`` near the ``mef_train`` brackets (median brightness of the
under-exposed source 0.18 there, about a third of its pixels below 0.05; about a quarter of the
over-exposed one's white). The over-exposed source loses every
highlight brighter than ``2 ** (-t / GAMMA)`` to white, which only the under-exposed one still shows; the
under-exposed source keeps its shadows at a few grey levels once stored as 8 bits.
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

import cv2
import numpy as np

SIGMA_RANGE: tuple[float, float] = (2.0, 4.0)
UNDER_STOPS: tuple[float, float] = (1.5, 3.5)
OVER_STOPS: tuple[float, float] = (1.0, 2.5)
GAMMA = 2.2
EDGE_SIGMA = 2.0
_BLOB_GRID = 4


class MultiFocusPair(NamedTuple):
    """A synthetic multi-focus pair: float32 images shaped like the input, and the (H, W) mask of ``near``'s focus."""

    near: np.ndarray
    far: np.ndarray
    sharp: np.ndarray
    mask: np.ndarray


class ExposurePair(NamedTuple):
    """A synthetic exposure bracket: float32 images shaped like the input, and the stops each is off by."""

    under: np.ndarray
    over: np.ndarray
    stops: tuple[float, float]


def _float_image(image: np.ndarray) -> np.ndarray:
    """``image`` as float32 in [0, 1] (uint8 scaled by 1/255); grey (H, W) or colour (H, W, 3) only."""
    if image.ndim not in (2, 3):
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
    return image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)


def pair_seed(image_id: str, index: int) -> int:
    """A stable seed for the ``index``-th pair made from image ``image_id`` (same on every machine and run)."""
    return zlib.crc32(f"{image_id}#{index}".encode())


def focus_mask(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a soft partition mask (H, W) float32 in [0, 1]: a half-plane or a blob, edge softened."""
    if rng.random() < 0.5:
        angle = rng.uniform(0.0, 2.0 * np.pi)
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        hard = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle) > 0
    else:
        field = cv2.resize(rng.standard_normal((_BLOB_GRID, _BLOB_GRID)).astype(np.float32), (width, height),
                           interpolation=cv2.INTER_CUBIC)
        hard = field > np.quantile(field, rng.uniform(0.35, 0.65))
    return cv2.GaussianBlur(hard.astype(np.float32), (0, 0), EDGE_SIGMA, borderType=cv2.BORDER_REFLECT_101)


def _blend(mask: np.ndarray, inside: np.ndarray, outside: np.ndarray) -> np.ndarray:
    weight = mask[..., None] if inside.ndim == 3 else mask
    return (weight * inside + (1.0 - weight) * outside).astype(np.float32)


def make_multifocus_pair(sharp: np.ndarray, seed: int,
                         sigma_range: tuple[float, float] = SIGMA_RANGE) -> MultiFocusPair:
    """Make a near/far pair from an all-in-focus image.

    Args:
        sharp: grey (H, W) or RGB (H, W, 3) image, float in [0, 1] (uint8 is scaled by 1/255).
        seed: seeds the mask and the two blur widths (see :func:`pair_seed`).
        sigma_range: range of the Gaussian blur widths in pixels.

    Returns:
        ``(near, far, sharp, mask)``; ``mask`` is 1 where ``near`` is in focus.
    """
    image = _float_image(sharp)
    rng = np.random.default_rng(seed)
    mask = focus_mask(image.shape[0], image.shape[1], rng)
    sigma_near, sigma_far = rng.uniform(*sigma_range, size=2)
    blur_near = cv2.GaussianBlur(image, (0, 0), float(sigma_near), borderType=cv2.BORDER_REFLECT_101)
    blur_far = cv2.GaussianBlur(image, (0, 0), float(sigma_far), borderType=cv2.BORDER_REFLECT_101)
    return MultiFocusPair(_blend(mask, image, blur_near), _blend(mask, blur_far, image), image, mask)


def make_exposure_pair(image: np.ndarray, seed: int, under_stops: tuple[float, float] = UNDER_STOPS,
                       over_stops: tuple[float, float] = OVER_STOPS) -> ExposurePair:
    """Make an under/over-exposed pair from a well-exposed image (see the module docstring).

    Args:
        image: grey (H, W) or RGB (H, W, 3) image, float in [0, 1] (uint8 is scaled by 1/255).
        seed: seeds the two exposure offsets (see :func:`pair_seed`).
        under_stops, over_stops: ranges of the two offsets in stops (powers of two of linear light).

    Returns:
        ``(under, over, (s, t))``: ``under`` is ``s`` stops darker, ``over`` ``t`` stops brighter, clipped.
    """
    picture = _float_image(image)
    for name, (low, high) in (("under_stops", under_stops), ("over_stops", over_stops)):
        if not 0 < low <= high:
            raise ValueError(f"{name} must be 0 < low <= high, got {(low, high)}")
    rng = np.random.default_rng(seed)
    stops_under, stops_over = float(rng.uniform(*under_stops)), float(rng.uniform(*over_stops))
    linear = np.clip(picture, 0.0, 1.0) ** GAMMA
    under = (linear * 2.0 ** -stops_under) ** (1.0 / GAMMA)
    over = np.minimum(linear * 2.0 ** stops_over, 1.0) ** (1.0 / GAMMA)
    return ExposurePair(under.astype(np.float32), over.astype(np.float32), (stops_under, stops_over))
