"""The segmenter interface shared by the classic, SAM and MobileSAM backends."""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tgif.perception.types import Detections, Segmentation


class Segmenter(Protocol):
    """Splits an image into regions; object regions are seeded by detections when given."""

    name: str

    def segment(self, image: np.ndarray, detections: Detections | None = None) -> Segmentation:
        """Segment a uint8 RGB (H, W, 3) image.

        Returns a :class:`Segmentation` whose object regions (``kind="object"``, label = the
        detection's class) come first, then scene regions (``kind="scene"``) by decreasing area.
        """
        ...


def check_rgb_uint8(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is uint8 (H, W, 3)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
