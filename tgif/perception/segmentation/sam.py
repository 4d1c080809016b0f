"""Segment Anything (Kirillov et al., ICCV 2023) backend.

Objects: each detection box prompts SAM; of its three candidate masks the one with the highest
predicted IoU is kept. Scene: SAM's automatic mask generator (a grid of point prompts). The
image embedding, by far the costliest step, is computed once per image and shared by both, and
kept for a few images (keyed by a hash of the pixels) so repeated calls on an image reuse it.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor, sam_model_registry
from segment_anything.modeling import Sam

from tgif.errors import UnknownNameError
from tgif.perception.cache import image_key
from tgif.perception.segmentation.base import check_rgb_uint8
from tgif.perception.segmentation.checkpoints import load_weights, resolve_checkpoint
from tgif.perception.segmentation.regions import EmbeddingCache, assemble_segmentation, clipped_box, detection_items
from tgif.perception.types import Detections, Region, Segmentation

logger = logging.getLogger(__name__)

SAM_MODEL_TYPES: tuple[str, ...] = ("vit_b", "vit_l", "vit_h")


class CachingSamPredictor(SamPredictor):
    """A :class:`SamPredictor` that keeps the embeddings of the last ``cache_size`` images.

    ``set_image`` on an image seen recently (same pixels, shape and channel order) restores its
    embedding instead of running the image encoder again.
    """

    def __init__(self, sam_model: Sam, cache_size: int = 4) -> None:
        super().__init__(sam_model)
        self.cache = EmbeddingCache(cache_size)

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        """Compute (or restore) the embedding of a uint8 (H, W, 3) image."""
        key = image_key(image, image_format)
        cached = self.cache.get(key)
        if cached is None:
            super().set_image(image, image_format)
            self.cache.put(key, (self.features, self.original_size, self.input_size))
            return
        self.reset_image()
        self.features, self.original_size, self.input_size = cached
        self.is_image_set = True


def check_model_type(model_type: str) -> None:
    """Raise UnknownNameError unless ``model_type`` is a SAM image encoder size."""
    if model_type not in SAM_MODEL_TYPES:
        raise UnknownNameError(f"unknown SAM model type {model_type!r}; choose from {', '.join(SAM_MODEL_TYPES)}")


def build_sam_model(model_type: str = "vit_b", checkpoint: str | None = None, device: str = "cpu") -> Sam:
    """Build a SAM model and load its weights.

    Args:
        model_type: ``vit_b``, ``vit_l`` or ``vit_h``.
        checkpoint: a checkpoint file, or a known name (see ``checkpoints.CHECKPOINTS``); default
            the official checkpoint of ``model_type``, downloaded on first use.
        device: torch device.

    Raises:
        UnknownNameError: unknown ``model_type``.
        CheckpointError: the checkpoint cannot be found, downloaded, read, or does not fit.
    """
    check_model_type(model_type)
    path = resolve_checkpoint(checkpoint or f"sam_{model_type}")
    # Weights are loaded here rather than by the registry's builder: it calls torch.load without
    # map_location (CUDA-saved files fail on CPU) and with full unpickling.
    model = load_weights(sam_model_registry[model_type](checkpoint=None), path, f"SAM {model_type}")
    return model.to(device).eval()


class SamSegmenter:
    """Segment Anything: box-prompted object masks plus automatic scene masks.

    Args:
        model_type: SAM image encoder, ``vit_b`` (fastest), ``vit_l`` or ``vit_h``.
        checkpoint: checkpoint path or known name (default: the official ``model_type`` file,
            downloaded on first use). Must be None when ``model`` is given.
        device: torch device.
        points_per_side: the automatic generator prompts a grid of this many points per side.
        model: an already built :class:`segment_anything.modeling.Sam` (``model_type`` then only
            names the backend).
        pred_iou_thresh: automatic masks with a lower predicted IoU are dropped.
        stability_score_thresh: automatic masks with a lower stability score are dropped.
        max_object_overlap: scene masks with more than this fraction on objects are skipped.
        min_region: smallest scene region kept, as a fraction of the image.
        cache_size: number of image embeddings kept.

    Thread-safe: the predictor holds one image's state between ``set_image`` and its prompts, so
    one lock serialises :meth:`segment` (two app users' uploads never read each other's embedding).
    """

    name = "sam"

    def __init__(self, model_type: str = "vit_b", checkpoint: str | None = None, device: str = "cpu",
                 points_per_side: int = 16, model: Sam | None = None, *, pred_iou_thresh: float = 0.88,
                 stability_score_thresh: float = 0.95, max_object_overlap: float = 0.5, min_region: float = 0.002,
                 cache_size: int = 4) -> None:
        check_model_type(model_type)
        if model is not None and checkpoint is not None:
            raise ValueError("pass either a checkpoint or a built model, not both")
        if points_per_side < 1:
            raise ValueError(f"points_per_side must be at least 1, got {points_per_side}")
        self.model_type = model_type
        self.max_object_overlap = max_object_overlap
        self.min_region = min_region
        if model is None:
            model = build_sam_model(model_type, checkpoint, device)
        self.model = model.to(device).eval()
        self.predictor = CachingSamPredictor(self.model, cache_size)
        self.generator = SamAutomaticMaskGenerator(self.model, points_per_side=points_per_side,
                                                   pred_iou_thresh=pred_iou_thresh,
                                                   stability_score_thresh=stability_score_thresh)
        self.generator.predictor = self.predictor  # the generator's set_image then reuses cached embeddings
        self._lock = threading.Lock()

    @property
    def backend(self) -> str:
        """Backend name recorded in the results, e.g. ``sam:vit_b``."""
        return f"{self.name}:{self.model_type}"

    def segment(self, image: np.ndarray, detections: Detections | None = None) -> Segmentation:
        """Segment a uint8 RGB (H, W, 3) image: object regions (one per detection with a non-empty
        mask, score = SAM's predicted IoU), then scene regions by decreasing area."""
        check_rgb_uint8(image)
        size = (image.shape[1], image.shape[0])
        items = detection_items(detections, size)
        with self._lock:
            self.predictor.set_image(image)
            objects = []
            for det in items:
                masks, scores, _ = self.predictor.predict(box=clipped_box(det.box, size), multimask_output=True)
                best = int(np.argmax(scores))
                if masks[best].any():
                    objects.append(Region(masks[best], det.label, "object", float(scores[best])))
                else:
                    logger.debug("SAM found no mask in the box of %s %s", det.label, det.box)
            found = self.generator.generate(image)
        return assemble_segmentation(objects, [m["segmentation"] for m in found], [m["predicted_iou"] for m in found],
                                     size, self.backend, self.max_object_overlap, self.min_region)

