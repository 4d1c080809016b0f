"""The captioner interface: what a captioner reads and what it returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from tgif.names import CAPTION_MODES
from tgif.perception.types import Detections, Segmentation

__all__ = ["CAPTION_MODES", "MODALITY_NAMES", "Caption", "CaptionInput", "Captioner"]

#: Human-readable modality names for the dataset folder names.
MODALITY_NAMES: dict[str, str] = {
    "ir": "infrared",
    "vi": "visible",
    "mri": "MRI",
    "ct": "CT",
    "pet": "PET",
    "spect": "SPECT",
    "under": "under-exposed",
    "over": "over-exposed",
    "near": "near-focus",
    "far": "far-focus",
    "a": "multi-focus source A",
    "b": "multi-focus source B",
}


@dataclass
class CaptionInput:
    """Everything a captioner may look at for one source image.

    Attributes:
        image: uint8 RGB (H, W, 3) source image (grey replicated to 3 channels).
        modality: human-readable modality (``"infrared"``, ``"MRI"``, ...; see MODALITY_NAMES).
        task: fusion task, ``"ivf"``, ``"mif"``, ``"mef"`` or ``"mff"``.
        detections: detector output, or None when not computed.
        segmentation: segmenter output, or None when not computed.
        detection_map: uint8 RGB rendering of the detections (boxes and labels over the image).
        segmentation_map: uint8 RGB rendering of the regions (colours blended over the image).
    """

    image: np.ndarray
    modality: str
    task: str
    detections: Detections | None = None
    segmentation: Segmentation | None = None
    detection_map: np.ndarray | None = None
    segmentation_map: np.ndarray | None = None


@dataclass
class Caption:
    """A drafted caption.

    Attributes:
        text: the caption (empty for mode ``"none"``).
        captioner: who wrote it (``"template"``, ``"gpt:<model>"``).
        prompt_version: version of the prompt/template that produced it.
        mode: the ablation mode used (one of CAPTION_MODES).
        fallback_reason: why the requested captioner was not used (None when it was).
    """

    text: str
    captioner: str
    prompt_version: str
    mode: str = "full"
    fallback_reason: str | None = None


class Captioner(Protocol):
    """Anything that drafts a caption from a :class:`CaptionInput`."""

    name: str

    def caption(self, inputs: CaptionInput, mode: str = "full") -> Caption:
        """Draft a caption using only what ``mode`` allows (see CAPTION_MODES)."""
        ...
