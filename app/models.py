"""The objects every session shares: perception, captioner, text encoders and TGIF models.

Each is built on first use (or at start-up with ``TGIF_APP_PRELOAD=1``) under a lock, then reused,
so concurrent sessions never load a model twice. Baseline scores are cached per pair.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from app.config import AppConfig
from tgif.baselines import BASELINES
from tgif.captions import Captioner, build_captioner
from tgif.io.pair import ImagePair
from tgif.metrics import compute_metrics, gray_levels_of
from tgif.model.checkpoint import read_metadata
from tgif.perception import Perceiver
from tgif.perception.segmentation import build_segmenter
from tgif.pipeline import TGIFFuser, default_weights, text_encoder_for
from tgif.text import TextEncoder

logger = logging.getLogger(__name__)

#: How many pairs' baseline scores are remembered.
BASELINE_CACHE_SIZE = 16


def pair_key(pair: ImagePair) -> str:
    """A digest of both sources' pixels and the task (identifies a pair across runs)."""
    digest = hashlib.sha1(str(pair.task).encode())
    for source in (pair.a, pair.b):
        digest.update(str(source.pixels.shape).encode())
        digest.update(np.ascontiguousarray(source.pixels).tobytes())
    return digest.hexdigest()


class ModelHub:
    """Lazily built, shared models for the app.

    Args:
        config: the app settings (device, captioner and segmenter names).
    """

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self._lock = threading.RLock()
        self._perceiver: Perceiver | None = None
        self._captioner: Captioner | None = None
        self._encoders: dict[str, TextEncoder] = {}
        self._fusers: dict[Path, TGIFFuser] = {}
        self._baselines: OrderedDict[str, dict[str, np.ndarray | dict[str, float]]] = OrderedDict()
        wants_cuda = config.device in ("auto", "cuda")
        self.device = "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"
        self.device_note = ""
        if config.device == "cuda" and self.device == "cpu":
            self.device_note = "TGIF_APP_DEVICE=cuda but no CUDA device is visible; running on the CPU"
            logger.warning(self.device_note)

    @property
    def device_label(self) -> str:
        """Where the network runs, for the UI (``"CUDA: NVIDIA H100"`` or ``"CPU (2 threads)"``)."""
        if self.device == "cuda":
            return f"CUDA: {torch.cuda.get_device_name(0)}"
        return f"CPU ({torch.get_num_threads()} threads)"

    def perceiver(self) -> Perceiver:
        """Detector + segmenter (with the on-disk map cache)."""
        with self._lock:
            if self._perceiver is None:
                segmenter = build_segmenter(self.config.segmenter, device=self.device)
                # Offline without detector weights the app still works: segmentation-only maps and captions,
                # with a warning (Perception.notes) instead of an error.
                self._perceiver = Perceiver(segmenter=segmenter, detector_optional=True)
            return self._perceiver

    def captioner(self) -> Captioner:
        """The caption drafter (GPT when a key is set and the config allows it, else the template drafter)."""
        with self._lock:
            if self._captioner is None:
                self._captioner = build_captioner(self.config.captioner)
            return self._captioner

    def weights(self, task: str) -> Path:
        """The checkpoint that serves ``task`` (MIF uses the IVF model)."""
        return default_weights(task)

    def has_tgif(self, task: str) -> bool:
        """True when the TGIF checkpoint for ``task`` is present."""
        return self.weights(task).is_file()

    def fuser(self, task: str) -> TGIFFuser:
        """The TGIF model for ``task``, sharing perception, captioner and text encoder with the others."""
        path = self.weights(task)
        with self._lock:
            if path not in self._fusers:
                encoder_name = read_metadata(path).text_encoder
                if encoder_name not in self._encoders:
                    self._encoders[encoder_name] = text_encoder_for(encoder_name, device=self.device)
                self._fusers[path] = TGIFFuser(path, device=self.device, captioner=self.captioner(),
                                               perceiver=self.perceiver(), text_encoder=self._encoders[encoder_name])
                logger.info("loaded %s on %s", path.name, self.device)
            return self._fusers[path]

    def baselines(self, pair: ImagePair, names: tuple[str, ...] = tuple(BASELINES)) -> dict[str, dict[str, float]]:
        """Scores of the classic baselines on ``pair`` (computed once per pair, then cached)."""
        key = pair_key(pair)
        with self._lock:
            cached = self._baselines.get(key)
            if cached is not None:
                self._baselines.move_to_end(key)
                return {name: dict(cached[name]) for name in names}  # type: ignore[arg-type]
        sources = gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels)
        scores = {name: compute_metrics(gray_levels_of(BASELINES[name].fuse(pair)), *sources) for name in names}
        with self._lock:
            self._baselines[key] = scores  # type: ignore[assignment]
            while len(self._baselines) > BASELINE_CACHE_SIZE:
                self._baselines.popitem(last=False)
        return scores

    def preload(self) -> None:
        """Build everything now (for hosted demos: the first user does not wait for model loading)."""
        perceiver = self.perceiver()
        perceiver.detector.detect(np.zeros((64, 64, 3), np.uint8))
        for task in ("ivf", "mef", "mff"):
            if self.has_tgif(task):
                self.fuser(task)
