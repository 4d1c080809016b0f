"""Turn images into the grey levels the metrics see.

The evaluator convention (CDDFuse ``image_read_cv2(path, 'GRAY')``): read the 8-bit file as
3-channel BGR, convert to float32, ``cv2.cvtColor(..., COLOR_BGR2GRAY)`` (0.299 R + 0.587 G +
0.114 B in float32) and round to whole levels. A fused image is scored as saved and re-read
(8-bit), so colour results are scored on this grey conversion of the saved RGB.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from tgif.io.image import ImageInput, load_image, to_uint8


def gray_levels(image_u8: np.ndarray) -> np.ndarray:
    """Grey levels (float64, (H, W), whole numbers in [0, 255]) of an 8-bit grey or RGB image."""
    if image_u8.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image_u8.dtype}")
    if image_u8.ndim == 2:
        return image_u8.astype(np.float64)
    if image_u8.ndim != 3 or image_u8.shape[-1] != 3:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got {image_u8.shape}")
    bgr = np.ascontiguousarray(image_u8[..., ::-1]).astype(np.float32)
    return np.round(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)).astype(np.float64)


def gray_levels_of(image: np.ndarray) -> np.ndarray:
    """Grey levels of a float image in [0, 1] after 8-bit quantisation (as if saved and re-read)."""
    return gray_levels(to_uint8(image))


def read_gray_levels(source: ImageInput | os.PathLike, *, max_pixels: int | None = None) -> np.ndarray:
    """Load an image file (or anything :func:`tgif.io.load_image` takes) as metric grey levels."""
    return gray_levels_of(load_image(source, max_pixels=max_pixels).pixels)
