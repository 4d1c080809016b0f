"""What perception produces for one source image: detections and segmentation regions."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Detection:
    """One detected object.

    Attributes:
        box: (x1, y1, x2, y2) in pixels of the source image.
        label: class name (COCO names for YOLO, e.g. ``"person"``).
        score: confidence in [0, 1].
        class_id: the detector's class index.
    """

    box: tuple[float, float, float, float]
    label: str
    score: float
    class_id: int = -1

    @property
    def center(self) -> tuple[float, float]:
        """(x, y) centre of the box."""
        x1, y1, x2, y2 = self.box
        return (x1 + x2) / 2.0, (y1 + y2) / 2.0

    @property
    def area(self) -> float:
        """Box area in pixels."""
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)


#: ``Detections.model`` when no detector could be loaded or run (perception went on with segmentation only).
NO_DETECTOR = "none"


@dataclass
class Detections:
    """All detections of one image.

    Attributes:
        items: detections sorted by decreasing score.
        image_size: (width, height) of the image they refer to.
        model: which detector produced them (weights name).
    """

    items: list[Detection]
    image_size: tuple[int, int]
    model: str = ""

    def counts(self) -> dict[str, int]:
        """Number of detections per label, most frequent first."""
        return dict(Counter(d.label for d in self.items).most_common())

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class Region:
    """One segmented region.

    Attributes:
        mask: boolean (H, W) mask.
        label: the object class for object masks (from a detection), ``"region"`` otherwise.
        kind: ``"object"`` (seeded by a detection or a prompt) or ``"scene"`` (automatic split).
        score: the segmenter's confidence when it gives one.
    """

    mask: np.ndarray
    label: str = "region"
    kind: str = "scene"
    score: float | None = None

    @property
    def area(self) -> int:
        """Number of pixels in the mask."""
        return int(self.mask.sum())

    @property
    def bbox(self) -> tuple[int, int, int, int]:
        """(x1, y1, x2, y2) bounding box of the mask (exclusive end); zeros for an empty mask."""
        ys, xs = np.nonzero(self.mask)
        if len(xs) == 0:
            return 0, 0, 0, 0
        return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@dataclass
class Segmentation:
    """All regions of one image.

    Attributes:
        regions: object regions first, then scene regions by decreasing area.
        image_size: (width, height).
        backend: which segmenter produced them (``classic``, ``sam``, ``mobile_sam``).
        notes: remarks about the run (e.g. a fallback that was taken).
    """

    regions: list[Region]
    image_size: tuple[int, int]
    backend: str = ""
    notes: list[str] = field(default_factory=list)

    def label_map(self) -> np.ndarray:
        """int32 (H, W) map: 0 for unassigned pixels, k for the k-th region (later regions are painted first,
        so object regions win where masks overlap)."""
        w, h = self.image_size
        labels = np.zeros((h, w), np.int32)
        for index in range(len(self.regions), 0, -1):
            labels[self.regions[index - 1].mask] = index
        return labels

    def objects(self) -> list[Region]:
        """The object regions only."""
        return [r for r in self.regions if r.kind == "object"]
