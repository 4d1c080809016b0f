"""The objects every session shares: perception, captioner, text encoders and TGIF models, and the pairs.

Each model is built on first use (or at start-up with ``TGIF_APP_PRELOAD=1``) under a lock, then
reused, so concurrent sessions never load a model twice. Each browser session's current pair is a
:class:`LoadedPair`: the decoded pair, its baseline scores and one :class:`tgif.session.PairSession`
per TGIF model, so a caption edit re-runs only the text features and the decoder. At most
``TGIF_APP_PAIRS`` of them stay in memory (least recently used dropped first), and the drafts of the
last uploads are kept so that Fuse reuses the maps and captions the analysis made.

A Fuse job holds a *network slot* (:meth:`ModelHub.network_slot`, ``TGIF_APP_CONCURRENCY`` of them) only
while it fuses: the captions it has to draft first (perception and GPT) are drafted before it asks for one,
so a user who typed their own captions never waits behind someone else's caption server.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from app.config import AppConfig
from tgif.baselines import BASELINES
from tgif.captions import Captioner, TemplateCaptioner, build_captioner
from tgif.captions.dataset import CaptionedSource
from tgif.io.pair import ImagePair
from tgif.metrics import compute_metrics, gray_levels_of
from tgif.model.checkpoint import read_metadata
from tgif.perception import Perceiver
from tgif.perception.segmentation import build_segmenter
from tgif.pipeline import TGIFFuser, default_weights, text_encoder_for
from tgif.session import PairSession
from tgif.text import TextEncoder

logger = logging.getLogger(__name__)

#: How many pairs' baseline scores are remembered.
BASELINE_CACHE_SIZE = 16
#: How many uploads' drafts (maps + caption) are remembered for the Fuse that follows.
DRAFT_CACHE_SIZE = 16
#: How many browser sessions' shown warnings are remembered (one toast per cause and session).
TOAST_SESSIONS = 256


@dataclass
class LoadedPair:
    """One browser session's pair, decoded once: its load notes, baseline scores and TGIF sessions."""

    pair: ImagePair
    notes: list[str]
    baselines: dict[str, dict[str, float]] | None = None
    sessions: dict[Path, PairSession] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    view_pngs: list[bytes] | None = None  # both sources as PNG files' bytes, once the first run has encoded them


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
        self._offline_captioner: Captioner | None = None
        self._encoders: dict[str, TextEncoder] = {}
        self._fusers: dict[Path, TGIFFuser] = {}
        self._baselines: OrderedDict[str, dict[str, np.ndarray | dict[str, float]]] = OrderedDict()
        self._pairs: OrderedDict[tuple, LoadedPair] = OrderedDict()
        self._drafts: OrderedDict[tuple, CaptionedSource] = OrderedDict()
        self._toasts: OrderedDict[str, set[str]] = OrderedDict()
        self._slots = threading.BoundedSemaphore(config.concurrency)
        self._waiting = 0
        #: torch's CPU threads for the network, as the process started (each job's thread is set to it)
        self.threads = torch.get_num_threads()
        wants_cuda = config.device in ("auto", "cuda")
        self.device = "cuda" if wants_cuda and torch.cuda.is_available() else "cpu"
        self.device_note = ""
        if config.device == "cuda" and self.device == "cpu":
            self.device_note = "TGIF_APP_DEVICE=cuda but no CUDA device is visible; running on the CPU"
            logger.warning(self.device_note)

    def first_time(self, session_id: str, message: str) -> bool:
        """True the first time ``message`` is to be shown to browser session ``session_id`` (one toast per cause:
        the same warning is not repeated per source, per analysis and per Fuse)."""
        with self._lock:
            shown = self._toasts.setdefault(session_id, set())
            self._toasts.move_to_end(session_id)
            while len(self._toasts) > TOAST_SESSIONS:
                self._toasts.popitem(last=False)
            if message in shown:
                return False
            shown.add(message)
            return True

    @contextmanager
    def network_slot(self, waiting: Callable[[int], None] = lambda ahead: None,
                     timeout: float | None = None) -> Iterator[None]:
        """Hold one of the ``TGIF_APP_CONCURRENCY`` network slots for the ``with`` block, on :attr:`threads` CPU
        threads.

        When none is free, ``waiting(n)`` is called once with the number of jobs waiting before this one
        (so the user sees a queue position) and the block starts when a slot frees up.

        Raises:
            TimeoutError: no slot came free within ``timeout`` seconds (None: wait as long as it takes).
        """
        if not self._slots.acquire(blocking=False):
            with self._lock:
                ahead = self._waiting
                self._waiting += 1
            waiting(ahead)
            try:
                if not self._slots.acquire(timeout=timeout):
                    raise TimeoutError(f"no network slot came free within {timeout:g} s")
            finally:
                with self._lock:
                    self._waiting -= 1
        if self.device == "cpu" and torch.get_num_threads() != self.threads:
            # a worker thread can start with fewer (a library lowered the count while its pool started)
            torch.set_num_threads(self.threads)
        try:
            yield
        finally:
            self._slots.release()

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

    def offline_captioner(self) -> Captioner:
        """The template drafter, which needs no caption server: it drafts what only the text-effect reference reads
        (the drafts of captions a user typed), so that no GPT request is made for a draft nobody reads."""
        with self._lock:
            if self._offline_captioner is None:
                self._offline_captioner = TemplateCaptioner()
            return self._offline_captioner

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

    def baselines(self, pair: ImagePair, names: tuple[str, ...] = tuple(BASELINES),
                  entry: LoadedPair | None = None) -> dict[str, dict[str, float]]:
        """Scores of the classic baselines on ``pair`` (computed once per pair, then cached; on ``entry`` when
        given, which spares hashing the pixels)."""
        if entry is not None and entry.baselines is not None:
            return {name: dict(entry.baselines[name]) for name in names}
        key = pair_key(pair)
        with self._lock:
            cached = self._baselines.get(key)
            if cached is not None:
                self._baselines.move_to_end(key)
                if entry is not None:
                    entry.baselines = {name: dict(values) for name, values in cached.items()}  # type: ignore[union-attr]
                return {name: dict(cached[name]) for name in names}  # type: ignore[arg-type]
        sources = gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels)
        scores = {name: compute_metrics(gray_levels_of(BASELINES[name].fuse(pair)), *sources) for name in names}
        if entry is not None and names == tuple(BASELINES):
            entry.baselines = {name: dict(values) for name, values in scores.items()}
        with self._lock:
            self._baselines[key] = scores  # type: ignore[assignment]
            while len(self._baselines) > BASELINE_CACHE_SIZE:
                self._baselines.popitem(last=False)
        return scores

    def loaded_pair(self, key: tuple, load: Callable[[], tuple[ImagePair, list[str]]]) -> tuple[LoadedPair, bool]:
        """The pair for ``key`` (browser session, files, task, resize), loaded by ``load`` only the first time;
        returns (entry, whether it was loaded now)."""
        with self._lock:
            entry = self._pairs.get(key)
            if entry is not None:
                self._pairs.move_to_end(key)
                return entry, False
        pair, notes = load()
        entry = LoadedPair(pair, notes)
        with self._lock:
            # one pair per browser session: a new upload replaces that session's previous pair
            for other in [k for k in self._pairs if k[0] == key[0]]:
                del self._pairs[other]
            self._pairs[key] = entry
            while len(self._pairs) > self.config.pairs:
                self._pairs.popitem(last=False)
        return entry, True

    def pair_session(self, entry: LoadedPair, task_value: str) -> PairSession:
        """The TGIF session of a loaded pair for the model that serves ``task_value``."""
        fuser = self.fuser(entry.pair.task or "ivf")
        path = self.weights(entry.pair.task or "ivf")
        with entry.lock:
            if path not in entry.sessions:
                entry.sessions[path] = PairSession(fuser, entry.pair, task_value)
            return entry.sessions[path]

    def remember_draft(self, key: tuple, draft: CaptionedSource) -> None:
        """Keep an upload's drafted caption and maps (key: file, task choice, source number)."""
        with self._lock:
            self._drafts[key] = draft
            self._drafts.move_to_end(key)
            while len(self._drafts) > DRAFT_CACHE_SIZE:
                self._drafts.popitem(last=False)

    def draft(self, key: tuple) -> CaptionedSource | None:
        """An upload's drafted caption and maps, when the analysis made them."""
        with self._lock:
            return self._drafts.get(key)

    def preload(self) -> None:
        """Build everything now (for hosted demos: the first user does not wait for model loading)."""
        perceiver = self.perceiver()
        perceiver.detector.detect(np.zeros((64, 64, 3), np.uint8))
        for task in ("ivf", "mef", "mff"):
            if self.has_tgif(task):
                self.fuser(task)
