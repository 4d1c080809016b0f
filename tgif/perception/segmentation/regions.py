"""Region logic shared by the learned segmenters (SAM, MobileSAM): prompts from detections, scene
regions from automatic masks, and a small cache of image embeddings."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from tgif.perception.types import Detection, Detections, Region, Segmentation


class EmbeddingCache:
    """A small least-recently-used map from an image key to what the image encoder made of it."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"cache size must be at least 1, got {size}")
        self.size = size
        self._items: OrderedDict[str, Any] = OrderedDict()

    def get(self, key: str) -> Any | None:
        """The value stored under ``key`` (now the most recently used), or None."""
        if key not in self._items:
            return None
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: str, value: Any) -> None:
        """Store ``value``, dropping the least recently used entry when full."""
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.size:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


def detection_items(detections: Detections | None, image_size: tuple[int, int]) -> list[Detection]:
    """The detections to segment; raises ValueError when they were made on an image of another size."""
    if detections is None:
        return []
    if tuple(detections.image_size) != tuple(image_size):
        raise ValueError(
            f"detections are for a {detections.image_size[0]}x{detections.image_size[1]} image, "
            f"but the image is {image_size[0]}x{image_size[1]}"
        )
    return list(detections.items)


def clipped_box(box: tuple[float, float, float, float], image_size: tuple[int, int]) -> np.ndarray:
    """(x1, y1, x2, y2) float32 box clipped to a (width, height) image."""
    w, h = image_size
    x1, y1, x2, y2 = box
    return np.array([min(max(x1, 0), w), min(max(y1, 0), h), min(max(x2, 0), w), min(max(y2, 0), h)], np.float32)


def scene_regions(masks: Sequence[np.ndarray], scores: Sequence[float], objects: np.ndarray,
                  max_object_overlap: float = 0.5, min_area: int = 1) -> list[Region]:
    """Turn automatic masks into non-overlapping scene regions, largest first.

    A mask with more than ``max_object_overlap`` of its pixels on ``objects`` (the union of the
    object masks) is skipped. The others lose their object pixels and the pixels of smaller masks
    (automatic masks nest: a whole and its parts), so every part stays visible in a label map;
    what is left under ``min_area`` pixels is dropped.
    """
    order = np.argsort([int(m.sum()) for m in masks], kind="stable")
    taken = objects.copy()
    regions = []
    for index in order:
        mask = np.asarray(masks[index], bool)
        area = int(mask.sum())
        if area == 0 or (mask & objects).sum() > max_object_overlap * area:
            continue
        rest = mask & ~taken
        if rest.sum() >= min_area:
            regions.append(Region(rest, "region", "scene", float(scores[index])))
            taken |= rest
    regions.sort(key=lambda r: -r.area)
    return regions


def assemble_segmentation(objects: list[Region], scene_masks: Sequence[np.ndarray], scene_scores: Sequence[float],
                          image_size: tuple[int, int], backend: str, max_object_overlap: float,
                          min_region: float) -> Segmentation:
    """Object regions (in detection order), then the scene regions of :func:`scene_regions`.

    Args:
        min_region: smallest scene region kept, as a fraction of the image area.
    """
    w, h = image_size
    covered = np.zeros((h, w), bool)
    for region in objects:
        covered |= region.mask
    min_area = max(1, int(np.ceil(min_region * w * h)))
    scene = scene_regions(scene_masks, scene_scores, covered, max_object_overlap, min_area)
    return Segmentation(objects + scene, (w, h), backend)
