"""Object detection with Ultralytics YOLO.

Weights are a path setting (:func:`default_detector_weights`): ``TGIF_YOLO_WEIGHTS`` when set,
else the YOLO11n INT8 OpenVINO export bundled in the repository's ``weights/`` (3.4 MB, AGPL-3.0
like Ultralytics; provenance in ``weights/README.md``), else the same export in ``<shared>/weights``,
else ``yolo11n.pt``, which Ultralytics downloads on a machine with internet.

Ultralytics is configured before its first import so that it never reaches the network on
its own: settings live in a cache folder (``YOLO_CONFIG_DIR``), it may not pip-install
missing backends (``YOLO_AUTOINSTALL=False``), it skips its DNS online probe and usage events
(``YOLO_OFFLINE=1``; weight downloads by name still work on a machine with internet), and
OpenVINO's usage telemetry is disabled in-process.
Boxes are drawn by :mod:`tgif.perception.rendering` with OpenCV's built-in font, so no font
is ever downloaded.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tgif import settings
from tgif.errors import TgifError
from tgif.perception.types import Detection, Detections

logger = logging.getLogger(__name__)

DEFAULT_ONLINE_WEIGHTS = "yolo11n.pt"
#: The offline detector: YOLO11n INT8 OpenVINO export (folder name in the weights and shared folders).
BUNDLED_WEIGHTS_NAME = "yolo11n_int8_openvino_model"


class DetectorError(TgifError):
    """The detector could not be loaded or run."""


def default_detector_weights() -> str:
    """Weights to use: ``TGIF_YOLO_WEIGHTS``, else the bundled OpenVINO export (weights folder, then the shared
    folder), else ``yolo11n.pt``."""
    env = os.environ.get("TGIF_YOLO_WEIGHTS")
    if env:
        return env
    shared = settings.shared_dir()
    for folder in (settings.weights_dir(), settings.REPO_WEIGHTS_DIR, shared / "weights" if shared else None):
        if folder is not None and (folder / BUNDLED_WEIGHTS_NAME / "yolo11n.xml").is_file():
            return str(folder / BUNDLED_WEIGHTS_NAME)
    return DEFAULT_ONLINE_WEIGHTS


def configure_ultralytics() -> None:
    """Set Ultralytics' environment before it is imported (values already set are kept)."""
    os.environ.setdefault("YOLO_CONFIG_DIR", str(settings.cache_dir() / "ultralytics"))
    os.environ.setdefault("YOLO_AUTOINSTALL", "False")
    os.environ.setdefault("YOLO_VERBOSE", "False")
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if os.environ.get("TGIF_OPENVINO_TELEMETRY", "0") != "1" and "openvino_telemetry" not in sys.modules:
        # OpenVINO falls back to a silent stub when its telemetry package cannot be imported.
        sys.modules["openvino_telemetry"] = None  # type: ignore[assignment]


def _to_detections(result: Any, image_size: tuple[int, int], model_name: str) -> Detections:
    boxes = result.boxes
    xyxy = boxes.xyxy.cpu().numpy() if len(boxes) else np.zeros((0, 4))
    scores = boxes.conf.cpu().numpy() if len(boxes) else np.zeros(0)
    classes = boxes.cls.cpu().numpy().astype(int) if len(boxes) else np.zeros(0, int)
    items = [
        Detection(tuple(float(v) for v in box), str(result.names[int(c)]), float(s), int(c))
        for box, s, c in zip(xyxy, scores, classes)
    ]
    items.sort(key=lambda d: -d.score)
    return Detections(items, image_size, model_name)


class YoloDetector:
    """Ultralytics YOLO detector.

    Args:
        weights: a ``.pt`` file, an exported model folder (OpenVINO, ONNX...), an Ultralytics
            asset name such as ``yolo11n.pt`` (downloaded by Ultralytics when online), or a model
            ``.yaml`` such as ``yolo11n.yaml`` (random weights; for tests).
            Default: :func:`default_detector_weights`.
        conf: minimum confidence of a kept box.
        imgsz: inference size.
        device: ``"cpu"`` or a CUDA device such as ``"0"``.

    Thread-safe: Ultralytics' model keeps per-call state (its predictor is built and re-configured
    on a call), so one lock serialises loading and prediction; the app's users share one detector.
    """

    name = "yolo"

    def __init__(self, weights: str | os.PathLike | None = None, conf: float = 0.25, imgsz: int = 640,
                 device: str = "cpu") -> None:
        self.weights = str(weights or default_detector_weights())
        self.conf = conf
        self.imgsz = imgsz
        self.device = device
        self._model: Any = None
        self._lock = threading.Lock()

    @property
    def model_name(self) -> str:
        """Short name of the weights (file or folder name)."""
        return Path(self.weights).name

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        # a model .yaml (random weights, for tests) is built locally from Ultralytics' configs
        local = Path(self.weights).exists() or self.weights.endswith(".yaml")
        if not local and not self.weights.endswith(".pt"):
            raise DetectorError(f"detector weights {self.weights!r} not found")
        configure_ultralytics()
        try:
            from ultralytics import YOLO
        except ImportError as exc:
            raise DetectorError("the detector needs the 'ultralytics' package (pip install ultralytics)") from exc
        try:
            self._model = YOLO(self.weights, task="detect")
        except Exception as exc:  # noqa: BLE001 - loading failures of any kind become one clear error
            hint = "" if local else " (it is downloaded on first use: no internet? pass a local weights path)"
            raise DetectorError(f"cannot load detector weights {self.weights!r}{hint}: {exc}") from exc
        return self._model

    def detect(self, image: np.ndarray) -> Detections:
        """Detect objects in a uint8 RGB (H, W, 3) image (grey images are passed as 3 equal channels)."""
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image.dtype} {image.shape}")
        bgr = np.ascontiguousarray(image[..., ::-1])  # Ultralytics treats numpy input as BGR
        threads = torch.get_num_threads()
        # Ultralytics' select_device sets torch's thread count to its NUM_THREADS (cpu_count - 1, at most 8) for the
        # whole process; a worker thread that starts its pool meanwhile (the app analyses both uploads at once, and
        # fuses in those threads) keeps the lowered count. Its NUM_THREADS set to ours, it leaves the count alone.
        with self._lock:
            model = self._load()
            from ultralytics.utils import torch_utils

            torch_utils.NUM_THREADS = threads
            try:
                result = model.predict(bgr, conf=self.conf, imgsz=self.imgsz, device=self.device, verbose=False)[0]
            except Exception as exc:  # noqa: BLE001
                raise DetectorError(f"detection failed: {exc}") from exc
            finally:
                torch.set_num_threads(threads)  # should another path of Ultralytics set it
        return _to_detections(result, (image.shape[1], image.shape[0]), self.model_name)
