"""The TGIF model a pair session runs: checkpoint, text encoder, perceiver, captioner, and the network's stages.

:class:`TGIFFuser` loads a trained checkpoint once (with the text encoder it was trained with) and
holds the perceiver and captioner that draft captions. :meth:`TGIFFuser.encode_pair` runs the
text-free stage (the sources' features, per tile: in the checkpoint's fusion tiles when it names them, see
:class:`FusionTile`, and above ``max_model_pixels`` in 512x512 tiles so that memory stays bounded; overlapping
tiles are blended with linear ramps), :meth:`TGIFFuser.guide_pair` the text-guided
trunk under one caption pair, and :meth:`TGIFFuser.decode_pair` the grounding head and decoder under
one caption pair (over a trunk computed for it, or for the drafted captions). The spine of the
pipeline is :class:`tgif.session.PairSession`, which keeps every stage's result for one pair;
:meth:`TGIFFuser.fuse` is a one-shot session.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from tgif import settings
from tgif.captions import Caption, Captioner, build_captioner
from tgif.errors import TgifError
from tgif.io.pair import ImagePair
from tgif.model import TGIFNet, load_tgif
from tgif.perception import Perceiver
from tgif.tasks import TaskSpec
from tgif.text import TextEncoder, build_text_encoder

if TYPE_CHECKING:
    from tgif.model.region_grounding import LabelTable, Region, RegionTokens
    from tgif.model.tgif_net import GuidedFeatures, SourceFeatures
    from tgif.session import PairSession

logger = logging.getLogger(__name__)

#: Which checkpoint serves each task (MIF uses the IVF model zero-shot, as in the paper).
TASK_WEIGHTS = {"ivf": "tgif_ivf", "mif": "tgif_ivf", "mef": "tgif_mef", "mff": "tgif_mff"}
DEFAULT_MAX_MODEL_PIXELS = 1280 * 1024
TILE = 512
OVERLAP = 64
#: The checkpoint metadata entry (``extra``) that names the tiles a model fuses in, ``[tile, overlap]``.
FUSION_TILE_KEY = "fusion_tile"


@dataclass(frozen=True)
class FusionTile:
    """Square tiles a model fuses in: ``size`` pixels a side, neighbours overlapping by ``overlap`` pixels.

    The network's attention is global over whatever it is given (channel attention over all pixels, the text
    tokens over all image tokens), and a model trained on small crops can fuse a large image better in tiles
    near its training extent; a checkpoint names the tiles chosen for it on held-out pairs
    (``tgif sweep-tiles``). An image no larger than ``size`` on either side is fused whole.
    """

    size: int
    overlap: int

    def __post_init__(self) -> None:
        if self.size < 16 or not 0 <= self.overlap <= self.size // 2:
            raise TgifError(f"fusion tile {self.size}/{self.overlap}: the size must be at least 16 pixels and the "
                            "overlap between 0 and half the size")

    @classmethod
    def parse(cls, spec: str) -> FusionTile | None:
        """``"SIZE/OVERLAP"`` (e.g. ``"320/32"``) -> a tile; ``"0"`` or ``"whole"`` -> None (whole images).

        Raises:
            TgifError: anything else, or a size or overlap out of range.
        """
        text = spec.strip().lower()
        if text in ("0", "whole"):
            return None
        size, slash, overlap = text.partition("/")
        if not slash or not size.isdigit() or not overlap.isdigit():
            raise TgifError(f"fusion tile {spec!r}: write SIZE/OVERLAP in pixels (e.g. 320/32), or 0 for whole images")
        return cls(int(size), int(overlap))

    def __str__(self) -> str:
        return f"{self.size}/{self.overlap}"


def checkpoint_tile(extra: dict) -> FusionTile | None:
    """The fusion tile a checkpoint's ``extra`` metadata names (``[size, overlap]``), or None.

    Raises:
        TgifError: the entry is there but is not two integers in range.
    """
    entry = extra.get(FUSION_TILE_KEY)
    if entry is None:
        return None
    if not (isinstance(entry, list) and len(entry) == 2 and all(isinstance(v, int) for v in entry)):
        raise TgifError(f"checkpoint metadata {FUSION_TILE_KEY}={entry!r}: expected [size, overlap] in pixels")
    return FusionTile(*entry)


def default_weights(task: str) -> Path:
    """``<weights folder>/tgif_<task>.safetensors`` (:func:`tgif.settings.weights_dir`)."""
    if task not in TASK_WEIGHTS:
        raise TgifError(f"unknown task {task!r}; choose from {', '.join(TASK_WEIGHTS)}")
    return settings.weights_dir() / f"{TASK_WEIGHTS[task]}.safetensors"


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
        caption_sources: who wrote each caption: ``"user"`` (typed or edited), ``"draft:template"`` or
            ``"draft:gpt:<model>"`` (drafted and used as drafted); ``""`` with text off.
        seconds: time per stage (``captions``, ``text``, ``network``).
        notes: remarks (tiling, degraded perception, GPT fallbacks with their reasons).
        reference_luminance: the fused Y of the same pair under ``reference_captions`` (when asked for):
            ``luminance - reference_luminance`` is what the captions changed (the app's text-effect map).
        reference_captions: the captions of that reference run.
        scene_captions: the captions the network's trunk read (:meth:`tgif.session.PairSession.scene_captions`):
            ``captions`` themselves, or the pair's drafts when ``captions`` edit them; None with text off.
        pointed: with a region-grounding network and captions that edit the drafts, each detected object's
            description and box (pixels) with the probability that the captions name it, most likely first
            (:meth:`tgif.session.PairSession.pointed`); empty otherwise.
    """

    image: np.ndarray
    luminance: np.ndarray
    captions: tuple[str, str]
    caption_sources: tuple[str, str]
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    reference_luminance: np.ndarray | None = None
    reference_captions: tuple[str, str] | None = None
    scene_captions: tuple[str, str] | None = None
    pointed: list[tuple[str, tuple[float, float, float, float], float]] = field(default_factory=list)


@dataclass
class EncodedPair:
    """Stage 1 of the network for one pair: each tile's top-left corner, (height, width) and source features
    (one tile covering the whole pair when it is not tiled), and how far neighbouring tiles overlap."""

    shape: tuple[int, int]
    tiles: list[tuple[int, int, tuple[int, int], SourceFeatures]]
    notes: list[str]
    overlap: int = 0


def join_captions(parts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The network's text input from per-caption token features (L_i, D): (1, sum L_i, D) and an all-True mask."""
    return torch.cat(parts)[None], torch.ones(1, sum(p.shape[0] for p in parts), dtype=torch.bool)


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
        max_model_pixels: larger images are fused in 512x512 tiles (when the fusion tile is not smaller).
        text_encoder: the encoder to use instead of the one the checkpoint names (its ``name`` must match).
        tile: the tiles to fuse in, a :class:`FusionTile` or its ``"SIZE/OVERLAP"`` text, ``"0"`` for whole
            images; None: the checkpoint's (:func:`checkpoint_tile`), whole images when it names none.

    Raises:
        TgifError: the weights file is missing, or the tile is malformed.
    """

    def __init__(self, weights: str | os.PathLike, device: str = "auto", captioner: str | Captioner = "auto",
                 perceiver: Perceiver | None = None, max_model_pixels: int = DEFAULT_MAX_MODEL_PIXELS,
                 text_encoder: TextEncoder | None = None, tile: FusionTile | str | None = None) -> None:
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
        self.tile: FusionTile | None = (checkpoint_tile(self.metadata.extra) if tile is None else
                                        FusionTile.parse(tile) if isinstance(tile, str) else tile)
        self._labels: LabelTable | None = None

    @property
    def grounds_regions(self) -> bool:
        """True when the network matches captions to the pair's detected objects (region tokens)."""
        return bool(self.model.config.use_text and self.model.config.region_grounding)

    def region_tokens(self, regions: list[Region], frame: tuple[int, int]) -> RegionTokens:
        """The network's region input for one pair's objects (boxes in pixels of a (width, height) frame), the
        class names encoded once per fuser by the checkpoint's text encoder."""
        from tgif.model.region_grounding import LabelTable, region_tokens

        if self._labels is None:
            self._labels = LabelTable(self.text_encoder.encode)
        return region_tokens([regions], [frame], self._labels).to(self.device)

    @torch.inference_mode()
    def match_regions(self, text: torch.Tensor, mask: torch.Tensor, regions: RegionTokens) -> list[float]:
        """The probability that the captions (token features of both, as :meth:`encode`) name each region."""
        text, mask = self._on_device(text, mask)
        return [float(p) for p in self.model.region_grounding.match(text.float(), mask, regions)[0]]

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

    @property
    def perceiver(self) -> Perceiver:
        """Detector + segmenter for the maps (built on first use; without detector weights, segmentation only)."""
        if self._perceiver is None:
            self._perceiver = Perceiver(detector_optional=True)
        return self._perceiver

    @property
    def captioner(self) -> Captioner:
        """The caption drafter (built on first use from the name given)."""
        if isinstance(self._captioner, str):
            self._captioner = build_captioner(self._captioner)
        return self._captioner

    def draft_captions(self, pair: ImagePair, mode: str = "full") -> tuple[Caption, Caption]:
        """Draft a caption per source from its detection and segmentation maps."""
        drafted = self.session(pair).drafts(mode)
        return drafted[0].caption, drafted[1].caption

    def encode(self, caption_a: str, caption_b: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Token features of both captions concatenated: (1, L, D) and mask (1, L), truncated as in training."""
        return join_captions(self.encode_captions([caption_a, caption_b]))

    def encode_captions(self, captions: list[str]) -> list[torch.Tensor]:
        """Each caption's token features (L_i, D), truncated as in training, encoded in one batch."""
        tokens, mask = self.text_encoder.encode(captions)
        return [tokens[row][mask[row]][: self.max_tokens or None] for row in range(len(captions))]

    def fuse_luminance(self, y_a: np.ndarray, y_b: np.ndarray, text: torch.Tensor | None = None,
                       mask: torch.Tensor | None = None) -> tuple[np.ndarray, list[str]]:
        """Run the network on two (H, W) luminance planes in [0, 1]; tiles large inputs."""
        outputs, notes = self.fuse_luminance_texts(y_a, y_b, [(text, mask)])
        return outputs[0], notes

    @torch.inference_mode()
    def encode_pair(self, y_a: np.ndarray, y_b: np.ndarray) -> EncodedPair:
        """Stage 1 of the network on two (H, W) luminance planes in [0, 1]: the sources' features, per tile when
        a side is larger than the fusion tile (:attr:`tile`) or the planes are larger than ``max_model_pixels``
        (then in 512x512 tiles, unless the fusion tile bounds memory too); text-free, so reusable for every
        caption."""
        h, w = y_a.shape
        notes: list[str] = []
        needs_memory_tiles = h * w > self.max_model_pixels and (self.tile is None or
                                                                self.tile.size ** 2 > self.max_model_pixels)
        if needs_memory_tiles:
            size, overlap = TILE, OVERLAP
            notes.append(f"{w}x{h} fused in {TILE}x{TILE} tiles with {OVERLAP}-pixel overlaps to bound memory")
            logger.info(notes[-1])
        elif self.tile is not None and max(h, w) > self.tile.size:
            size, overlap = self.tile.size, self.tile.overlap
            notes.append(f"{w}x{h} fused in {size}x{size} tiles with {overlap}-pixel overlaps, the tiles this "
                         "checkpoint was tuned for")
            logger.info(notes[-1])
        else:
            size, overlap = max(h, w), 0
        starts = [(y0, x0) for y0 in _starts(h, size, overlap) for x0 in _starts(w, size, overlap)]
        tiles = []
        for y0, x0 in starts:
            window = (slice(y0, y0 + size), slice(x0, x0 + size))
            a, b = (y_a, y_b) if len(starts) == 1 else (y_a[window], y_b[window])
            ta = torch.from_numpy(np.ascontiguousarray(a))[None, None].to(self.device)
            tb = torch.from_numpy(np.ascontiguousarray(b))[None, None].to(self.device)
            tiles.append((y0, x0, a.shape, self.model.encode_sources(ta, tb)))
        return EncodedPair((h, w), tiles, notes, overlap)

    @property
    def steers_late(self) -> bool:
        """True when the model has a grounding head: a caption edit then steers through the head and decoder
        alone, over the trunk of the pair's drafted captions (:meth:`guide_pair`); without a head, captions reach
        the output only through the trunk, so every caption pair needs its own."""
        return bool(self.model.config.use_text and (self.model.config.grounding or self.model.config.region_grounding))

    @torch.inference_mode()
    def guide_pair(self, encoded: EncodedPair, text: torch.Tensor | None = None,
                   mask: torch.Tensor | None = None) -> list[GuidedFeatures]:
        """Stage 2a, the trunk, under one caption pair's features: its output per tile
        (:meth:`tgif.model.TGIFNet.guide_sources`), for :meth:`decode_pair`."""
        text, mask = self._on_device(text, mask)
        return [self.model.guide_sources(features, text, mask) for _, _, _, features in encoded.tiles]

    @torch.inference_mode()
    def decode_pair(self, encoded: EncodedPair, text: torch.Tensor | None = None,
                    mask: torch.Tensor | None = None, guided: list[GuidedFeatures] | None = None,
                    regions: RegionTokens | None = None) -> np.ndarray:
        """Stage 2 under one caption pair's features (``text`` None: the no-text path): the fused (H, W) plane in
        [0, 1], tiles blended with linear ramps.

        ``guided``: the trunk's output per tile from :meth:`guide_pair` (None: run the trunk under ``text``); only
        the grounding head and the decoder then run under ``text``. ``regions``: the pair's objects
        (:meth:`region_tokens`) for a region-grounding network, boxes in the pair's pixels.
        """
        text, mask = self._on_device(text, mask)
        if guided is None:
            guided = self.guide_pair(encoded, text, mask)
        planes = [(y0, x0, self.model.ground_and_decode(features, merged, text, mask)[0])
                  for (y0, x0, _, features), merged in zip(encoded.tiles, guided)]
        if len(planes) == 1:
            fused = planes[0][2]
        else:
            h, w = encoded.shape
            fused = planes[0][2].new_zeros(1, 1, h, w)
            total = planes[0][2].new_zeros(1, 1, h, w)
            ys = sorted({y0 for y0, _, _ in planes})
            xs = sorted({x0 for _, x0, _ in planes})
            for y0, x0, tile in planes:
                th, tw = tile.shape[-2:]
                weight = torch.from_numpy(np.outer(
                    _ramp(th, min(encoded.overlap, th), y0 == ys[0], y0 == ys[-1]),
                    _ramp(tw, min(encoded.overlap, tw), x0 == xs[0], x0 == xs[-1]))).to(tile)
                fused[..., y0:y0 + th, x0:x0 + tw] += tile * weight
                total[..., y0:y0 + th, x0:x0 + tw] += weight
            fused = fused / total.clamp_min(1e-6)
        plane = np.clip(fused[0, 0].float().cpu().numpy(), 0.0, 1.0)
        return self.emphasise(plane, text, mask, regions) if regions is not None else plane

    @torch.inference_mode()
    def emphasise(self, plane: np.ndarray, text: torch.Tensor | None, mask: torch.Tensor | None,
                  regions: RegionTokens) -> np.ndarray:
        """A region-grounding network's last step on a whole fused (H, W) plane in [0, 1]: the objects the
        captions (token features of both, as :meth:`encode`) name are brought out (the plane as given when the
        network does not ground regions or nothing is named)."""
        text, mask = self._on_device(text, mask)
        image = torch.from_numpy(np.ascontiguousarray(plane, dtype=np.float32)).to(self.device)[None, None]
        out, relevance = self.model.emphasise(image, text, mask, regions)
        return plane if relevance is None else np.clip(out[0, 0].float().cpu().numpy(), 0.0, 1.0)

    def _on_device(self, text: torch.Tensor | None,
                   mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        return (text.to(self.device) if text is not None else None,
                mask.to(self.device) if mask is not None else None)

    def fuse_luminance_texts(self, y_a: np.ndarray, y_b: np.ndarray,
                             texts: list[tuple[torch.Tensor | None, torch.Tensor | None]]
                             ) -> tuple[list[np.ndarray], list[str]]:
        """Fuse two (H, W) planes under each (text, mask) of ``texts``: the sources are encoded once (per tile)
        and only the text-guided decoder runs per caption pair. Returns one (H, W) plane per entry."""
        encoded = self.encode_pair(y_a, y_b)
        return [self.decode_pair(encoded, t, m) for t, m in texts], list(encoded.notes)

    def session(self, pair: ImagePair, task: str | TaskSpec | None = None) -> PairSession:
        """A :class:`tgif.session.PairSession` for ``pair`` with this model (perception and captions as set here)."""
        from tgif.session import PairSession

        return PairSession(self, pair, task)

    def fuse(self, pair: ImagePair, captions: tuple[str, str] | None = None, use_text: bool = True,
             mode: str = "full", reference_captions: tuple[str, str] | None = None) -> FusionResult:
        """Fuse one pair once (a throw-away :class:`~tgif.session.PairSession`); captions are drafted when not
        given. See :meth:`tgif.session.PairSession.fuse`."""
        return self.session(pair).fuse(captions, use_text, reference_captions=reference_captions, mode=mode)
