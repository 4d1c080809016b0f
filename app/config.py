"""Demo settings, read from the environment once (so a GPU Space is configured by its variables).

``TGIF_APP_DEVICE``        ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
``TGIF_APP_CONCURRENCY``   how many fusions run at once (network slots, default 1); the rest wait, told how many are
                           ahead. Captions a job must draft are drafted before it takes a slot.
``TGIF_APP_JOB_TIMEOUT``   seconds a Fuse job may wait for a network slot before it is told the server is busy
                           (default 120; the fusion itself is bounded by the upload limit).
``TGIF_APP_DRAFT_CONCURRENCY`` how many uploads are analysed (maps + drafted caption) at once, in their own queue
                           so that a slow GPT caption never delays a Fuse (default 4).
``TGIF_APP_MAX_PIXELS``    larger uploads are downscaled to this many pixels, with a notice (default 4 MP with a
                           CUDA device, 1 MP on the CPU, where a 4 MP pair takes over a minute to fuse and score).
``TGIF_APP_OUTPUT_DIR``    where run files (PNG, JSON, CSV) are written (default: a folder in the system temp dir).
``TGIF_APP_HISTORY``       how many runs a session keeps for comparison (default 8).
``TGIF_APP_QUEUE_SIZE``    most requests waiting in the queue; one more is refused at once with "the queue is full,
                           try again shortly" instead of waiting without end (default 16).
``TGIF_APP_PAIRS``         how many loaded pairs (with their maps, captions and encoded sources) stay in memory
                           across all browser sessions, least recently used dropped first (default 4).
``TGIF_APP_PRELOAD``       ``1`` loads the models at start-up instead of on first use.
``TGIF_APP_CAPTIONER``     ``auto`` (GPT when ``OPENAI_API_KEY`` is set), ``template`` or ``gpt``.
``TGIF_APP_SEGMENTER``     ``classic`` (default), ``sam`` or ``mobile_sam``.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tgif.errors import TgifError


def _int(name: str, default: int, minimum: int = 1) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise TgifError(f"{name} must be a whole number, got {raw!r}") from None
    if value < minimum:
        raise TgifError(f"{name} must be at least {minimum}, got {value}")
    return value


#: Largest upload fused at full size, per network device (larger ones are downscaled with a notice).
MAX_PIXELS_CUDA = 4_000_000
MAX_PIXELS_CPU = 1_000_000


def default_max_pixels(device: str) -> int:
    """The default pixel limit for ``TGIF_APP_DEVICE`` = ``device``: 4 MP when it runs on CUDA, 1 MP on the CPU
    (a 2000x2000 pair took 77 s on a 2-core CPU: two network passes, the baselines and the metrics)."""
    import torch

    return MAX_PIXELS_CUDA if device != "cpu" and torch.cuda.is_available() else MAX_PIXELS_CPU


@dataclass(frozen=True)
class AppConfig:
    """Settings of one app instance (see the module docstring for the variables)."""

    device: str = "auto"
    concurrency: int = 1
    draft_concurrency: int = 4
    max_pixels: int = 4_000_000
    output_dir: Path = Path(tempfile.gettempdir()) / "tgif-app"
    history: int = 8
    pairs: int = 4
    queue_size: int = 16
    job_timeout: int = 120
    preload: bool = False
    captioner: str = "auto"
    segmenter: str = "classic"

    @classmethod
    def from_env(cls) -> AppConfig:
        """Read the ``TGIF_APP_*`` variables."""
        device = os.environ.get("TGIF_APP_DEVICE", "auto").strip().lower() or "auto"
        if device not in ("auto", "cpu", "cuda"):
            raise TgifError(f"TGIF_APP_DEVICE must be auto, cpu or cuda, got {device!r}")
        output = os.environ.get("TGIF_APP_OUTPUT_DIR", "").strip()
        return cls(
            device=device,
            concurrency=_int("TGIF_APP_CONCURRENCY", cls.concurrency),
            draft_concurrency=_int("TGIF_APP_DRAFT_CONCURRENCY", cls.draft_concurrency),
            max_pixels=_int("TGIF_APP_MAX_PIXELS", default_max_pixels(device), minimum=64 * 64),
            output_dir=Path(output) if output else cls.output_dir,
            history=_int("TGIF_APP_HISTORY", cls.history, minimum=2),
            pairs=_int("TGIF_APP_PAIRS", cls.pairs),
            queue_size=_int("TGIF_APP_QUEUE_SIZE", cls.queue_size),
            job_timeout=_int("TGIF_APP_JOB_TIMEOUT", cls.job_timeout),
            preload=os.environ.get("TGIF_APP_PRELOAD", "").strip() in ("1", "true", "yes"),
            captioner=os.environ.get("TGIF_APP_CAPTIONER", "auto").strip() or "auto",
            segmenter=os.environ.get("TGIF_APP_SEGMENTER", "classic").strip() or "classic",
        )
