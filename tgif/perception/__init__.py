"""Perception for each source image: detection (YOLO), segmentation, and the rendered maps."""

from tgif.io.image import as_rgb_uint8
from tgif.perception.detection import DetectorError, YoloDetector, default_detector_weights
from tgif.perception.pipeline import Perceiver, Perception
from tgif.perception.rendering import draw_detections, draw_segmentation
from tgif.perception.segmentation import SEGMENTERS, build_segmenter
from tgif.perception.types import Detection, Detections, Region, Segmentation

__all__ = [
    "SEGMENTERS",
    "Detection",
    "DetectorError",
    "Detections",
    "Perceiver",
    "Perception",
    "Region",
    "Segmentation",
    "YoloDetector",
    "as_rgb_uint8",
    "build_segmenter",
    "default_detector_weights",
    "draw_detections",
    "draw_segmentation",
]
