"""MobileSAM (Zhang et al., 2023) backend through Ultralytics' SAM implementation.

Same outputs as :mod:`tgif.perception.segmentation.sam`: box-prompted object masks (best of
three by predicted IoU), then automatic scene masks. The model is Ultralytics' MobileSAM
(``build_mobile_sam``, a TinyViT image encoder) driven by its SAM ``Predictor``.

Not the high-level ``ultralytics.SAM`` wrapper: ``SAM(path)`` picks the architecture from the
file name, and ``SAM.predict`` rejects the automatic-mode settings (``points_stride``,
thresholds) and ``multimask_output``, and recomputes the image encoding on every call.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import torch

from tgif.perception.cache import image_key
from tgif.perception.detection import configure_ultralytics
from tgif.perception.segmentation.base import check_rgb_uint8
from tgif.perception.segmentation.checkpoints import load_weights, resolve_checkpoint
from tgif.perception.segmentation.regions import EmbeddingCache, assemble_segmentation, clipped_box, detection_items
from tgif.perception.types import Detection, Detections, Region, Segmentation

configure_ultralytics()  # before the first ultralytics import; weights come from checkpoints.py

from ultralytics.models.sam import Predictor  # noqa: E402
from ultralytics.models.sam.build import build_mobile_sam  # noqa: E402

logger = logging.getLogger(__name__)


class CachingPredictor(Predictor):
    """Ultralytics' SAM predictor, keeping the image-encoder output of the last ``cache_size`` inputs.

    Box prompts and the automatic mode both encode the same letterboxed tensor, so an image is
    encoded once, however many times it is segmented while it stays in the cache.
    """

    def __init__(self, overrides: dict, cache_size: int = 4) -> None:
        super().__init__(overrides=overrides)
        self.cache = EmbeddingCache(cache_size)

    def get_im_features(self, im: torch.Tensor) -> torch.Tensor:
        """Image-encoder features of a preprocessed (1, 3, S, S) tensor, from the cache when possible."""
        key = image_key(im.detach().cpu().numpy(), "")
        features = self.cache.get(key)
        if features is None:
            features = super().get_im_features(im)
            self.cache.put(key, features)
        return features


def build_mobile_sam_model(checkpoint: str | None = None, device: str = "cpu") -> torch.nn.Module:
    """Build Ultralytics' MobileSAM and load its weights.

    Args:
        checkpoint: a checkpoint file or known name; default ``mobile_sam`` (downloaded on first use).
        device: torch device.

    Raises:
        CheckpointError: the checkpoint cannot be found, downloaded, read, or does not fit.
    """
    path = resolve_checkpoint(checkpoint or "mobile_sam")
    return load_weights(build_mobile_sam(), path, "MobileSAM").to(device).eval()


class MobileSamSegmenter:
    """MobileSAM: box-prompted object masks plus automatic scene masks.

    Args:
        checkpoint: checkpoint path or known name (default ``mobile_sam``, downloaded on first
            use). Must be None when ``model`` is given.
        device: torch device (``"cpu"``, ``"cuda:0"``...).
        model: an already built Ultralytics ``SAMModel`` (e.g. ``build_mobile_sam()``).
        imgsz: side of the square the image is letterboxed to (the weights were trained at 1024).
        points_per_side: the automatic mode prompts a grid of this many points per side.
        pred_iou_thresh: automatic masks with a lower predicted IoU are dropped.
        stability_score_thresh: automatic masks with a lower (or equal) stability score are dropped.
        max_object_overlap: scene masks with more than this fraction on objects are skipped.
        min_region: smallest scene region kept, as a fraction of the image.
        cache_size: number of image encodings kept.

    Thread-safe: the predictor holds one image's state between ``set_image`` and its prompts, so
    one lock serialises :meth:`segment`.
    """

    name = "mobile_sam"

    def __init__(self, checkpoint: str | None = None, device: str = "cpu", model: torch.nn.Module | None = None, *,
                 imgsz: int = 1024, points_per_side: int = 16, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, max_object_overlap: float = 0.5, min_region: float = 0.002,
                 cache_size: int = 4) -> None:
        if model is not None and checkpoint is not None:
            raise ValueError("pass either a checkpoint or a built model, not both")
        if points_per_side < 1:
            raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
        self.points_per_side = points_per_side
        self.pred_iou_thresh = pred_iou_thresh
        self.stability_score_thresh = stability_score_thresh
        self.max_object_overlap = max_object_overlap
        self.min_region = min_region
        if model is None:
            model = build_mobile_sam_model(checkpoint, device)
        # conf=0: thresholds are applied by generate(); box prompts must keep one mask per box
        overrides = {"conf": 0.0, "imgsz": imgsz, "device": device, "verbose": False, "save": False}
        self.predictor = CachingPredictor(overrides, cache_size)
        self.predictor.setup_model(model=model, verbose=False)
        self.model = self.predictor.model
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """Backend name recorded in the results."""
        return self.name

    def _object_regions(self, bgr: np.ndarray, items: list[Detection], size: tuple[int, int]) -> list[Region]:
        if not items:
            return []
        self.predictor.set_image(bgr)
        boxes = np.stack([clipped_box(det.box, size) for det in items])
        masks, info = self.predictor.inference_features(self.predictor.features, bgr.shape[:2], bboxes=boxes,
                                                        multimask_output=True)
        masks = masks.reshape(len(items), -1, *bgr.shape[:2]).cpu().numpy()  # (N, 3, H, W) bool
        scores = info[:, 4].reshape(len(items), -1).cpu().numpy()
        regions = []
        for det, det_masks, det_scores in zip(items, masks, scores):
            best = int(np.argmax(det_scores))
            if det_masks[best].any():
                regions.append(Region(det_masks[best], det.label, "object", float(det_scores[best])))
            else:
                logger.debug("MobileSAM found no mask in the box of %s %s", det.label, det.box)
        return regions

    def _scene_masks(self, bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = self.predictor(source=bgr, points_stride=self.points_per_side, conf_thres=self.pred_iou_thresh,
                                stability_score_thresh=self.stability_score_thresh)[0]
        if result.masks is None:
            return np.zeros((0, *bgr.shape[:2]), bool), np.zeros(0, np.float32)
        return result.masks.data.cpu().numpy().astype(bool), result.boxes.conf.cpu().numpy()

    def segment(self, image: np.ndarray, detections: Detections | None = None) -> Segmentation:
        """Segment a uint8 RGB (H, W, 3) image: object regions (one per detection with a non-empty
        mask, score = predicted IoU), then scene regions by decreasing area."""
        check_rgb_uint8(image)
        size = (image.shape[1], image.shape[0])
        items = detection_items(detections, size)
        bgr = np.ascontiguousarray(image[..., ::-1])  # Ultralytics reads numpy images as BGR
        with self._lock:
            objects = self._object_regions(bgr, items, size)
            scene_masks, scene_scores = self._scene_masks(bgr)
        return assemble_segmentation(objects, scene_masks, scene_scores, size, self.backend,
                                     self.max_object_overlap, self.min_region)
