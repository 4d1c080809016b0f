"""Render detection and segmentation maps as images (what the captioner and the app show).

Drawing uses OpenCV's built-in Hershey font: no font file is looked up or downloaded.
"""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from tgif.perception.types import Detections, Segmentation


def distinct_color(index: int) -> tuple[int, int, int]:
    """A saturated RGB colour for index ``index``; consecutive indices are far apart in hue."""
    hue = (index * 0.618033988749895) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.85, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


def _label_color(label: str, labels: list[str]) -> tuple[int, int, int]:
    return distinct_color(labels.index(label))


def put_label(canvas: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int]) -> None:
    """Write ``text`` on a filled tag of ``color`` whose bottom-left is near (x, y) of a uint8 RGB canvas, in place."""
    scale = max(0.35, min(canvas.shape[:2]) / 900)
    thickness = 1
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    y_top = max(0, y - th - base - 2)
    x = int(np.clip(x, 0, max(0, canvas.shape[1] - tw - 2)))
    cv2.rectangle(canvas, (x, y_top), (x + tw + 2, y_top + th + base + 2), color, -1)
    luminance = 0.299 * color[0] + 0.587 * color[1] + 0.114 * color[2]
    ink = (0, 0, 0) if luminance > 140 else (255, 255, 255)
    cv2.putText(canvas, text, (x + 1, y_top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale, ink, thickness, cv2.LINE_AA)


def draw_detections(image: np.ndarray, detections: Detections) -> np.ndarray:
    """Boxes and ``label score`` tags drawn over a uint8 RGB image; one colour per class."""
    canvas = image.copy()
    labels = sorted({d.label for d in detections.items})
    thickness = max(1, round(min(image.shape[:2]) / 240))
    for det in detections.items:
        color = _label_color(det.label, labels)
        x1, y1, x2, y2 = (int(round(v)) for v in det.box)
        cv2.rectangle(canvas, (x1, y1), (x2, y2), color, thickness)
        put_label(canvas, f"{det.label} {det.score:.2f}", x1, y1, color)
    return canvas


def draw_segmentation(image: np.ndarray, segmentation: Segmentation, alpha: float = 0.45) -> np.ndarray:
    """Each region in a distinct colour blended over a uint8 RGB image, with boundaries and object labels."""
    labels = segmentation.label_map()
    palette = np.array([(0, 0, 0)] + [distinct_color(k) for k in range(len(segmentation.regions))], np.float32)
    colours = palette[labels]
    painted = labels > 0
    out = image.astype(np.float32)
    out[painted] = (1 - alpha) * out[painted] + alpha * colours[painted]
    canvas = np.clip(np.round(out), 0, 255).astype(np.uint8)
    edges = cv2.morphologyEx(labels.astype(np.float32), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8)) > 0
    canvas[edges] = (255, 255, 255)
    for index, region in enumerate(segmentation.regions, start=1):
        if region.kind == "object":
            x1, y1, _, _ = region.bbox
            put_label(canvas, region.label, x1, y1 + 2, distinct_color(index - 1))
    return canvas
