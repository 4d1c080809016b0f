"""Per-image perception: detection, segmentation and both rendered maps, cached on disk."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import numpy as np

from tgif.io.image import as_rgb_uint8
from tgif.perception.cache import PerceptionCache, image_key
from tgif.perception.detection import DetectorError, YoloDetector
from tgif.perception.rendering import draw_detections, draw_segmentation
from tgif.perception.segmentation import Segmenter, build_segmenter
from tgif.perception.types import NO_DETECTOR, Detections, Segmentation

logger = logging.getLogger(__name__)


@dataclass
class Perception:
    """What perception found in one image.

    Attributes:
        detections: detector output.
        segmentation: segmenter output (object regions seeded by the detections).
        detection_map: uint8 RGB image with boxes and labels.
        segmentation_map: uint8 RGB image with coloured regions and boundaries.
        seconds: time spent per stage when computed (``detection``, ``segmentation``, ``rendering``).
        cached: True when read from the cache instead of computed.
        notes: what went missing, for the user (e.g. the detector could not be loaded).
    """

    detections: Detections
    segmentation: Segmentation
    detection_map: np.ndarray
    segmentation_map: np.ndarray
    seconds: dict[str, float] = field(default_factory=dict)
    cached: bool = False
    notes: list[str] = field(default_factory=list)


class Perceiver:
    """Detector + segmenter + renderers with a per-image cache.

    Args:
        detector: a :class:`YoloDetector` (default: default weights, CPU).
        segmenter: a segmenter or a backend name (``classic``, ``sam``, ``mobile_sam``).
        cache: a :class:`PerceptionCache`, a cache folder, True for the default folder, or False for none.
        detector_optional: when the detector cannot be loaded or run (e.g. weights that cannot be downloaded
            offline), go on with no detections and say so in :attr:`Perception.notes` instead of raising
            :class:`DetectorError` (the next image tries the detector again). Such results are not cached.
    """

    def __init__(self, detector: YoloDetector | None = None, segmenter: Segmenter | str = "classic",
                 cache: PerceptionCache | str | os.PathLike | bool = True, detector_optional: bool = False) -> None:
        self.detector = detector or YoloDetector()
        self.detector_optional = detector_optional
        self.segmenter = build_segmenter(segmenter) if isinstance(segmenter, str) else segmenter
        if cache is True:
            self.cache: PerceptionCache | None = PerceptionCache()
        elif cache is False or cache is None:
            self.cache = None
        else:
            self.cache = cache if isinstance(cache, PerceptionCache) else PerceptionCache(cache)

    @property
    def config(self) -> str:
        """Identifies what produced a result (part of the cache key)."""
        return f"{self.detector.model_name}|conf={self.detector.conf}|imgsz={self.detector.imgsz}|{self.segmenter.name}"

    def perceive(self, image: np.ndarray) -> Perception:
        """Detect, segment and render one image (grey or RGB; uint8, or float in [0, 1])."""
        rgb = as_rgb_uint8(image)
        key = image_key(rgb, self.config)
        if self.cache is not None:
            hit = self.cache.load(key)
            if hit is not None:
                detections, segmentation, det_map, seg_map, seconds = hit
                return Perception(detections, segmentation, det_map, seg_map, seconds, cached=True)
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        detections, notes = self._detect(rgb)
        seconds["detection"] = time.perf_counter() - start
        start = time.perf_counter()
        segmentation = self.segmenter.segment(rgb, detections)
        seconds["segmentation"] = time.perf_counter() - start
        start = time.perf_counter()
        det_map = draw_detections(rgb, detections)
        seg_map = draw_segmentation(rgb, segmentation)
        seconds["rendering"] = time.perf_counter() - start
        if self.cache is not None and not notes:
            try:
                self.cache.save(key, detections, segmentation, det_map, seg_map, seconds)
            except OSError as exc:
                logger.warning("perception cache not written (%s)", exc)
        return Perception(detections, segmentation, det_map, seg_map, seconds, notes=notes)

    def _detect(self, rgb: np.ndarray) -> tuple[Detections, list[str]]:
        try:
            return self.detector.detect(rgb), []
        except DetectorError as exc:
            if not self.detector_optional:
                raise
            logger.warning("going on without detections: %s", exc)
            return (Detections([], (rgb.shape[1], rgb.shape[0]), model=NO_DETECTOR),
                    [f"No object detection ({exc}); the maps and caption use segmentation only."])
