"""The whole TGIF pipeline for one pair: maps -> captions -> text features -> network -> colour.

:class:`TGIFFuser` loads a trained checkpoint once (with the text encoder it was trained with)
and then fuses pairs. Captions can be given (edited by a user), or drafted from each source's
detection and segmentation maps. Images above ``max_model_pixels`` are fused in overlapping
tiles (blended with linear ramps), so memory stays bounded; a log line says so.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from tgif.captions import Caption, Captioner, build_captioner
from tgif.captions.dataset import caption_image, modality_name
from tgif.errors import TgifError
from tgif.io.datasets import TASK_MODALITIES
from tgif.io.pair import ImagePair
from tgif.model import TGIFNet, load_tgif
from tgif.perception import Perceiver
from tgif.text import TextEncoder, build_text_encoder

logger = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
#: Which checkpoint serves each task (MIF uses the IVF model zero-shot, as in the paper).
TASK_WEIGHTS = {"ivf": "tgif_ivf", "mif": "tgif_ivf", "mef": "tgif_mef", "mff": "tgif_mff"}
DEFAULT_MAX_MODEL_PIXELS = 1280 * 1024
TILE = 512
OVERLAP = 64


def default_weights(task: str) -> Path:
    """``weights/tgif_<task>.safetensors`` (``$TGIF_WEIGHTS_DIR`` overrides the folder)."""
    if task not in TASK_WEIGHTS:
        raise TgifError(f"unknown task {task!r}; choose from {', '.join(TASK_WEIGHTS)}")
    folder = Path(os.environ.get("TGIF_WEIGHTS_DIR", WEIGHTS_DIR))
    return folder / f"{TASK_WEIGHTS[task]}.safetensors"


def text_encoder_for(name: str, device: str = "cpu") -> TextEncoder:
    """Rebuild the text encoder a checkpoint names (``"minilm:all-MiniLM-L6-v2"``, ``"blip2:<hub id>"``...)."""
    kind, _, model = name.partition(":")
    if kind == "minilm" and model in ("", "all-MiniLM-L6-v2"):
        return build_text_encoder("minilm", device=device, cache=True)
    if "@" in model:
        raise TgifError(f"the checkpoint was trained with a local text model ({name}); pass that encoder explicitly")
    return build_text_encoder(kind, model=model or None, device=device, cache=True)


@dataclass
class FusionResult:
    """What one fusion produced.

    Attributes:
        image: float32 in [0, 1], (H, W) grey or (H, W, 3) colour.
        luminance: the fused Y channel (H, W).
        captions: the two captions used ("" when text guidance was off).
        caption_sources: who wrote each caption (``"user"``, ``"template"``, ``"gpt:..."``).
        seconds: time per stage (``captions``, ``text``, ``network``).
        notes: remarks (tiling, fallbacks).
        reference_luminance: the fused Y of the same pair under ``reference_captions`` (when asked for):
            ``luminance - reference_luminance`` is what the captions changed (the app's text-effect map).
        reference_captions: the captions of that reference run.
    """

    image: np.ndarray
    luminance: np.ndarray
    captions: tuple[str, str]
    caption_sources: tuple[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference_luminance: np.ndarray | None = None
    reference_captions: tuple[str, str] | None = None


def _ramp(length: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    weights = np.ones(length, np.float32)
    ramp = np.linspace(0.0, 1.0, overlap + 2, dtype=np.float32)[1:-1]
    if not first and overlap:
        weights[:overlap] = ramp
    if not last and overlap:
        weights[-overlap:] = ramp[::-1]
    return weights


def _starts(size: int, tile: int, overlap: int) -> list[int]:
    if size <= tile:
        return [0]
    step = tile - overlap
    starts = list(range(0, size - tile, step)) + [size - tile]
    return sorted(set(starts))


class TGIFFuser:
    """Fuses pairs with a trained TGIF checkpoint.

    Args:
        weights: checkpoint path (see :func:`default_weights`).
        device: ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when available).
        captioner: captioner name or object for drafting captions (``"auto"``: GPT with a key, else template).
        perceiver: detector + segmenter for the maps (default: YOLO + classic segmentation, cached).
        max_model_pixels: larger images are fused in tiles.
        text_encoder: the encoder to use instead of the one the checkpoint names (its ``name`` must match).
    """

    def __init__(self, weights: str | os.PathLike, device: str = "auto", captioner: str | Captioner = "auto",
                 perceiver: Perceiver | None = None, max_model_pixels: int = DEFAULT_MAX_MODEL_PIXELS,
                 text_encoder: TextEncoder | None = None) -> None:
        path = Path(weights)
        if not path.exists():
            raise TgifError(f"TGIF weights {path} not found (train them with `tgif train`, or pick a baseline method)")
        self.device = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                                   ("cpu" if device == "auto" else device))
        self.model: TGIFNet
        expected = text_encoder.name if text_encoder is not None else None
        self.model, self.metadata = load_tgif(path, expected_text_encoder=expected, device=str(self.device))
        self.max_tokens = int(self.metadata.extra.get("max_tokens", 0)) or None
        self._text_encoder: TextEncoder | None = text_encoder
        self._captioner = captioner
        self._perceiver = perceiver
        self.max_model_pixels = max_model_pixels

    @property
    def uses_text(self) -> bool:
        """False for a model trained without text (the ablation)."""
        return bool(self.model.config.use_text)

    @property
    def text_encoder(self) -> TextEncoder:
        """The checkpoint's text encoder, loaded on first use."""
        if self._text_encoder is None:
            self._text_encoder = text_encoder_for(self.metadata.text_encoder)
        return self._text_encoder

    def draft_captions(self, pair: ImagePair, mode: str = "full") -> tuple[Caption, Caption]:
        """Draft a caption per source from its detection and segmentation maps."""
        if self._perceiver is None:
            self._perceiver = Perceiver()
        if isinstance(self._captioner, str):
            self._captioner = build_captioner(self._captioner)
        task = pair.task or "ivf"
        folders = TASK_MODALITIES[task]
        drafted = [caption_image(source.pixels, modality=modality_name(folder), task=task, perceiver=self._perceiver,
                                 captioner=self._captioner, mode=mode)
                   for source, folder in zip((pair.a, pair.b), folders)]
        return drafted[0].caption, drafted[1].caption

    def encode(self, caption_a: str, caption_b: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features of both captions concatenated: (1, L, D) and mask (1, L), truncated as in training."""
        tokens, mask = self.text_encoder.encode([caption_a, caption_b])
        parts, masks = [], []
        for row in range(2):
            keep = tokens[row][mask[row]]
            if self.max_tokens:
                keep = keep[: self.max_tokens]
            parts.append(keep)
            masks.append(torch.ones(keep.shape[0], dtype=torch.bool))
        return torch.cat(parts)[None], torch.cat(masks)[None]

    def fuse_luminance(self, y_a: np.ndarray, y_b: np.ndarray, text: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> tuple[np.ndarray, list[str]]:
        """Run the network on two (H, W) luminance planes in [0, 1]; tiles large inputs."""
        outputs, notes = self.fuse_luminance_texts(y_a, y_b, [(text, mask)])
        return outputs[0], notes

    @torch.inference_mode()
    def fuse_luminance_texts(self, y_a: np.ndarray, y_b: np.ndarray,
                             texts: list[tuple[torch.Tensor | None, torch.Tensor | None]]
                             ) -> tuple[list[np.ndarray], list[str]]:
        """Fuse two (H, W) planes under each (text, mask) of ``texts``: the sources are encoded once (per tile)
        and only the text-guided decoder runs per caption pair. Returns one (H, W) plane per entry."""
        h, w = y_a.shape
        notes: list[str] = []
        texts = [(t.to(self.device) if t is not None else None, m.to(self.device) if m is not None else None)
                 for t, m in texts]

        def run(a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
            ta = torch.from_numpy(np.ascontiguousarray(a))[None, None].to(self.device)
            tb = torch.from_numpy(np.ascontiguousarray(b))[None, None].to(self.device)
            features = self.model.encode_sources(ta, tb)
            return [self.model.guide_and_decode(features, t, m)[0, 0].float().cpu().numpy() for t, m in texts]

        if h * w <= self.max_model_pixels:
            return [np.clip(out, 0.0, 1.0) for out in run(y_a, y_b)], notes
        notes.append(f"{w}x{h} fused in {TILE}x{TILE} tiles with {OVERLAP}-pixel overlaps to bound memory")
        logger.info(notes[-1])
        outs = [np.zeros((h, w), np.float32) for _ in texts]
        total = np.zeros((h, w), np.float32)
        ys, xs = _starts(h, TILE, OVERLAP), _starts(w, TILE, OVERLAP)
        for y0 in ys:
            for x0 in xs:
                tiles = run(y_a[y0:y0 + TILE, x0:x0 + TILE], y_b[y0:y0 + TILE, x0:x0 + TILE])
                th, tw = tiles[0].shape
                weight = np.outer(_ramp(th, min(OVERLAP, th), y0 == ys[0], y0 == ys[-1]),
                                  _ramp(tw, min(OVERLAP, tw), x0 == xs[0], x0 == xs[-1]))
                for out, tile in zip(outs, tiles):
                    out[y0:y0 + th, x0:x0 + tw] += tile * weight
                total[y0:y0 + th, x0:x0 + tw] += weight
        return [np.clip(out / np.maximum(total, 1e-6), 0.0, 1.0) for out in outs], notes

    def fuse(self, pair: ImagePair, captions: tuple[str, str] | None = None, use_text: bool = True,
             mode: str = "full", reference_captions: tuple[str, str] | None = None) -> FusionResult:
        """Fuse a pair; captions are drafted when not given. ``use_text=False`` runs the no-text path.

        ``reference_captions`` (with text on) also fuses the pair under them, reusing the encoded sources (one
        more decoder pass): :attr:`FusionResult.reference_luminance`.
        """
        seconds: dict[str, float] = {}
        sources = ("user", "user")
        use_text = use_text and self.uses_text
        if use_text and captions is None:
            start = time.perf_counter()
            drafted = self.draft_captions(pair, mode)
            captions = (drafted[0].text, drafted[1].text)
            sources = (drafted[0].captioner, drafted[1].captioner)
            seconds["captions"] = time.perf_counter() - start
        texts: list[tuple[torch.Tensor | None, torch.Tensor | None]] = [(None, None)]
        reference = reference_captions if use_text and reference_captions is not None else None
        if use_text:
            start = time.perf_counter()
            texts = [self.encode(*captions)]  # type: ignore[misc]
            if reference is not None:
                texts.append(self.encode(*reference))
            seconds["text"] = time.perf_counter() - start
        start = time.perf_counter()
        y_a, y_b = pair.luminances()
        outputs, notes = self.fuse_luminance_texts(y_a, y_b, texts)
        seconds["network"] = time.perf_counter() - start
        used = captions if use_text and captions is not None else ("", "")
        return FusionResult(pair.colorize(outputs[0]), outputs[0], used, sources if use_text else ("", ""), seconds,
                            notes, outputs[1] if reference is not None else None, reference)
