"""Colour handling as the fusion field does it: fuse luminance, restore chroma.

The YCbCr convention is kornia's (``kornia.color.rgb_to_ycbcr``), for values in [0, 1]::

    Y  = 0.299 R + 0.587 G + 0.114 B
    Cb = (B - Y) * 0.564 + 0.5
    Cr = (R - Y) * 0.713 + 0.5

The inverse here is the exact matrix inverse of that forward transform (kornia's inverse uses
rounded constants), so ``ycbcr_to_rgb(rgb_to_ycbcr(x))`` returns ``x`` to float precision.

A fused luminance is coloured with the chroma of the colour source (IVF: the visible image;
MIF: PET/SPECT). When both sources are in colour (MEF, MFF) the chroma planes are merged
with weights ``|C - 0.5|`` per pixel and channel (the saturation-weighted rule used by
DenseFuse/U2Fusion-style MEF code): the more saturated source dominates, and two neutral
pixels stay neutral.
"""

from __future__ import annotations

import numpy as np

_FORWARD = np.array(
    [
        [0.299, 0.587, 0.114],
        [-0.564 * 0.299, -0.564 * 0.587, 0.564 * (1 - 0.114)],
        [0.713 * (1 - 0.299), -0.713 * 0.587, -0.713 * 0.114],
    ]
)
_INVERSE = np.linalg.inv(_FORWARD)
_OFFSET = np.array([0.0, 0.5, 0.5])


def _check_rgb(image: np.ndarray, what: str) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{what} must have shape (H, W, 3), got {image.shape}")


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """Convert an RGB image in [0, 1], shape (H, W, 3), to YCbCr (kornia convention).

    Returns float32 (H, W, 3) with Y in [0, 1] and Cb, Cr centred on 0.5.
    """
    _check_rgb(rgb, "rgb")
    out = rgb.astype(np.float64) @ _FORWARD.T + _OFFSET
    return out.astype(np.float32)


def ycbcr_to_rgb(ycbcr: np.ndarray, clip: bool = True) -> np.ndarray:
    """Invert :func:`rgb_to_ycbcr`; returns float32 RGB (H, W, 3), clipped to [0, 1] by default."""
    _check_rgb(ycbcr, "ycbcr")
    out = (ycbcr.astype(np.float64) - _OFFSET) @ _INVERSE.T
    if clip:
        out = np.clip(out, 0.0, 1.0)
    return out.astype(np.float32)


def luminance(image: np.ndarray) -> np.ndarray:
    """Return the Y channel (H, W) of an RGB image, or the image itself if it is grey (H, W)."""
    if image.ndim == 2:
        return image.astype(np.float32, copy=False)
    _check_rgb(image, "image")
    y = image.astype(np.float64) @ _FORWARD[0]
    return y.astype(np.float32)


def chroma(image: np.ndarray) -> np.ndarray:
    """Return the (H, W, 2) Cb/Cr planes of an RGB image in [0, 1]."""
    return rgb_to_ycbcr(image)[..., 1:]


def merge_chroma(cbcr_a: np.ndarray, cbcr_b: np.ndarray) -> np.ndarray:
    """Merge two (H, W, 2) Cb/Cr stacks, weighting each by its distance from neutral (0.5).

    ``C = (C_a |C_a - 0.5| + C_b |C_b - 0.5|) / (|C_a - 0.5| + |C_b - 0.5|)``, and 0.5 where
    both are neutral.
    """
    if cbcr_a.shape != cbcr_b.shape:
        raise ValueError(f"chroma shapes differ: {cbcr_a.shape} vs {cbcr_b.shape}")
    wa = np.abs(cbcr_a.astype(np.float64) - 0.5)
    wb = np.abs(cbcr_b.astype(np.float64) - 0.5)
    total = wa + wb
    merged = np.where(total > 1e-12, (cbcr_a * wa + cbcr_b * wb) / np.maximum(total, 1e-12), 0.5)
    return merged.astype(np.float32)


def chroma_rgb(cbcr: np.ndarray) -> np.ndarray:
    """What chroma (H, W, 2) adds to a grey image: float64 (H, W, 3) RGB, so that the colour of a luminance Y is
    ``Y + chroma_rgb(cbcr)`` (:func:`add_chroma`); computed once per pair, it serves every fused luminance."""
    if cbcr.ndim != 3 or cbcr.shape[-1] != 2:
        raise ValueError(f"chroma must have shape (H, W, 2), got {cbcr.shape}")
    return (cbcr.astype(np.float64) - 0.5) @ _INVERSE[:, 1:].T


def add_chroma(y: np.ndarray, rgb: np.ndarray) -> np.ndarray:
    """Colour a luminance (H, W) in [0, 1] with :func:`chroma_rgb`'s (H, W, 3): float32 RGB clipped to [0, 1]."""
    if rgb.shape != y.shape + (3,):
        raise ValueError(f"chroma shape {rgb.shape[:2]} does not match luminance {y.shape}")
    out = y.astype(np.float64)[..., None] * _INVERSE[:, 0] + rgb
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def colorize(y: np.ndarray, cbcr: np.ndarray | None) -> np.ndarray:
    """Combine a fused luminance (H, W) with chroma (H, W, 2); grey output when ``cbcr`` is None."""
    if y.ndim != 2:
        raise ValueError(f"luminance must have shape (H, W), got {y.shape}")
    y = np.clip(y, 0.0, 1.0).astype(np.float32)
    if cbcr is None:
        return y
    if cbcr.shape != y.shape + (2,):
        raise ValueError(f"chroma shape {cbcr.shape} does not match luminance {y.shape}")
    return add_chroma(y, chroma_rgb(cbcr))
