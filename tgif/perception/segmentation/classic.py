"""Classic segmentation without learned weights (the offline default).

Objects: each detection box seeds OpenCV GrabCut (Rother et al., SIGGRAPH 2004) on a crop
around the box (padded by one box size on each side, so the background model sees enough
background), giving a foreground mask labelled with the detection's class. Scene: the
image is split into regions by Felzenszwalb & Huttenlocher's graph-based segmentation
(scikit-image), computed on a copy shrunk to at most ``work_size`` pixels on the long side
and scaled back, with regions under ``min_region`` of the image merged away. The result still
shows objects and region boundaries, like a SAM map, in well under a second per 640x480 image.
"""

from __future__ import annotations

import cv2
import numpy as np
from skimage.segmentation import felzenszwalb

from tgif.perception.segmentation.base import check_rgb_uint8
from tgif.perception.types import Detections, Region, Segmentation


def grabcut_box(image: np.ndarray, box: tuple[float, float, float, float], iterations: int = 3) -> np.ndarray:
    """Foreground mask (bool, image size) of the object inside ``box`` by GrabCut on a padded crop.

    Falls back to the (clipped) box itself when the box is too small or GrabCut finds nothing.
    """
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    x1, y1, x2, y2 = max(0, x1), max(0, y1), min(w, x2), min(h, y2)
    mask = np.zeros((h, w), bool)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return mask
    pad_x, pad_y = max(8, x2 - x1), max(8, y2 - y1)
    cx1, cy1, cx2, cy2 = max(0, x1 - pad_x), max(0, y1 - pad_y), min(w, x2 + pad_x), min(h, y2 + pad_y)
    crop = np.ascontiguousarray(image[cy1:cy2, cx1:cx2, ::-1])  # GrabCut expects BGR
    rect = (x1 - cx1, y1 - cy1, x2 - x1, y2 - y1)
    box_only = np.zeros(crop.shape[:2], bool)
    box_only[rect[1] : rect[1] + rect[3], rect[0] : rect[0] + rect[2]] = True
    if rect[2] >= crop.shape[1] - 1 and rect[3] >= crop.shape[0] - 1:
        fg = box_only  # the box fills the image: GrabCut has no background to learn from
    else:
        gc_mask = np.zeros(crop.shape[:2], np.uint8)
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(crop, gc_mask, rect, bgd, fgd, iterations, cv2.GC_INIT_WITH_RECT)
            fg = (gc_mask == cv2.GC_FGD) | (gc_mask == cv2.GC_PR_FGD)
        except cv2.error:
            fg = box_only
        fg &= box_only
        if fg.sum() < 0.05 * box_only.sum():
            fg = box_only
        else:  # close pinholes and hairline gaps
            fg = cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)).astype(bool)
    mask[cy1:cy2, cx1:cx2] = fg
    return mask


def scene_regions(image: np.ndarray, work_size: int = 320, scale: float = 300.0, min_region: float = 0.01,
                  max_regions: int = 24) -> np.ndarray:
    """int32 label map (0..K-1) of graph-based regions, the largest ``max_regions`` kept, small ones merged."""
    h, w = image.shape[:2]
    factor = min(1.0, work_size / max(h, w))
    small = cv2.resize(image, (max(1, round(w * factor)), max(1, round(h * factor))), interpolation=cv2.INTER_AREA)
    min_size = max(8, int(min_region * small.shape[0] * small.shape[1]))
    labels = felzenszwalb(small, scale=scale, sigma=0.8, min_size=min_size)
    areas = np.bincount(labels.ravel())
    keep = np.argsort(-areas)[:max_regions]
    remap = np.full(len(areas), -1, np.int32)
    remap[keep] = np.arange(len(keep))
    small_labels = remap[labels]
    if (small_labels < 0).any():  # regions beyond max_regions join their nearest kept region
        _, nearest = cv2.distanceTransformWithLabels((small_labels < 0).astype(np.uint8), cv2.DIST_L2, 3,
                                                     labelType=cv2.DIST_LABEL_PIXEL)
        ys, xs = np.nonzero(small_labels >= 0)
        lookup = np.zeros(nearest.max() + 1, np.int32)
        lookup[nearest[ys, xs]] = small_labels[ys, xs]
        small_labels = np.where(small_labels >= 0, small_labels, lookup[nearest])
    return cv2.resize(small_labels.astype(np.int32), (w, h), interpolation=cv2.INTER_NEAREST)


class ClassicSegmenter:
    """GrabCut object masks from detection boxes plus graph-based scene regions (no weights needed).

    Args:
        work_size: long side, in pixels, of the copy used for the scene split.
        max_regions: at most this many scene regions.
        grabcut_iterations: GrabCut iterations per box.
        max_objects: at most this many detections (highest scores) are segmented.
    """

    name = "classic"

    def __init__(self, work_size: int = 320, max_regions: int = 24, grabcut_iterations: int = 3,
                 max_objects: int = 12) -> None:
        self.work_size = work_size
        self.max_regions = max_regions
        self.grabcut_iterations = grabcut_iterations
        self.max_objects = max_objects

    def segment(self, image: np.ndarray, detections: Detections | None = None) -> Segmentation:
        """Segment a uint8 RGB (H, W, 3) image; object regions first, then scene regions by area."""
        check_rgb_uint8(image)
        h, w = image.shape[:2]
        regions: list[Region] = []
        covered = np.zeros((h, w), bool)
        for det in (detections.items[: self.max_objects] if detections else []):
            mask = grabcut_box(image, det.box, self.grabcut_iterations) & ~covered
            if mask.any():
                regions.append(Region(mask, det.label, "object", det.score))
                covered |= mask
        labels = scene_regions(image, self.work_size, max_regions=self.max_regions)
        scene = []
        for k in range(int(labels.max()) + 1):
            mask = (labels == k) & ~covered
            if mask.sum() >= 0.002 * h * w:
                scene.append(Region(mask, "region", "scene"))
        scene.sort(key=lambda r: -r.area)
        return Segmentation(regions + scene, (w, h), self.name)
