"""Segmentation backends behind one builder: ``classic`` (offline default), ``sam``, ``mobile_sam``."""

from __future__ import annotations

from typing import Any

from tgif.errors import UnknownNameError
from tgif.perception.segmentation.base import Segmenter
from tgif.perception.segmentation.classic import ClassicSegmenter

SEGMENTERS: tuple[str, ...] = ("classic", "mobile_sam", "sam")


def build_segmenter(name: str = "classic", checkpoint: str | None = None, device: str = "cpu",
                    **options: Any) -> Segmenter:
    """Build a segmenter by name.

    Args:
        name: ``classic`` (GrabCut + graph regions, no weights), ``sam`` (segment-anything; options
            ``model_type`` vit_b/vit_l/vit_h, ``points_per_side``) or ``mobile_sam`` (Ultralytics SAM).
        checkpoint: weights path (or a known model name to download) for ``sam``/``mobile_sam``.
        device: torch device for the learned backends.
    """
    key = name.strip().lower()
    if key == "classic":
        return ClassicSegmenter(**options)
    if key == "sam":
        from tgif.perception.segmentation.sam import SamSegmenter

        return SamSegmenter(checkpoint=checkpoint, device=device, **options)
    if key == "mobile_sam":
        from tgif.perception.segmentation.mobile_sam import MobileSamSegmenter

        return MobileSamSegmenter(checkpoint=checkpoint, device=device, **options)
    raise UnknownNameError(f"unknown segmenter {name!r}; choose from {', '.join(SEGMENTERS)}")


__all__ = ["SEGMENTERS", "ClassicSegmenter", "Segmenter", "build_segmenter"]
