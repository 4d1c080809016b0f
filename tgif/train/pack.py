"""Training packs: one file per task with every training pair's luminance planes and caption token features.

A pack is built once from ``shared/train`` and the caption files (``<captions_dir>/<dataset>.jsonl``),
so a training step never runs the text encoder and the pack can be carried to a GPU machine.
It is written with ``torch.save`` and holds only plain tensors, lists, dicts, strings and numbers,
so ``torch.load(path, weights_only=True)`` reads it (:func:`load_pack`).

What goes in, per task:

- IVF: ``roadscene_train`` (171) + ``msrs_train`` (30, full size) + ``msrs_train_128`` (750 whole MSRS
  frames squashed to 128x128 by their source; stored as they are and resized to 170x128 (bicubic)
  when decoded, which undoes the 4:3 squash).
- MEF: ``mef_train`` (60) + synthetic exposure brackets from ``natural`` (1 per image). MFF: ``mff_train`` (71) +
  synthetic defocus pairs from ``natural`` (2 per image). See :mod:`tgif.train.synthetic`; the synthetic pairs'
  captions are drafted here (template captioner, YOLO + classic segmenter), and no ground truth is stored.
- MIF has no training set: the IVF model is used zero-shot.

Each source becomes its luminance (Y of colour images via :mod:`tgif.io`, grey as is), quantised to
uint8. Sources whose longer side exceeds ``crop_source_max_side`` are first downscaled to it (area
interpolation, on the float plane). Planes are stored as encoded image bytes (1-D uint8 tensors):
``png`` (lossless) or ``jpeg:<quality>``. Caption features are the encoder's token features truncated
to ``max_tokens`` and stored as float16, or as int8 with one float16 scale per token (symmetric,
``scale = max|x| / 127``; about 1% relative error), which halves the size.

Sampling weights: every pair of a main dataset weighs 1; the pairs of an auxiliary set
(``msrs_train_128``, the synthetic pairs) together weigh ``auxiliary_weight`` times the main
pairs together (default 1: e.g. each of the 750 small MSRS frames weighs 201/750; MEF 0.5: the 100
brackets weigh half the real training pairs).

Validation: pairs spread evenly over one dataset per task are held out (:data:`VAL_COUNT` of them, or
``val_count``: 4 of ``msrs_train`` for IVF, 12 of ``mef_train`` for MEF, 4 of ``mff_train`` for MFF). The MEF
loss weights are chosen on its 12; the first MEF pack's 4 were too few to rank settings whose scores differ by
about 1% (the model card says what they got wrong). MFF keeps 4, the split its shipped model was trained
with: a 12-pair sweep (``val_count=12``) chose the same loss weights.

Size: :data:`PACK_PRESETS` keeps the large packs small. IVF (951 pairs, 1892 distinct captions) would
take ~99 MiB of raw uint8 planes and ~88 MiB of float16 tokens; its preset stores JPEG (quality 90) planes
and int8 tokens. Every preset keeps :data:`tgif.text.CAPTION_TOKENS` tokens per caption, more than a drafted
caption has (the first packs cut IVF captions to 48). MFF (271 pairs, half of its bytes synthetic) uses
JPEG 90 planes and int8 tokens; MEF stays lossless (PNG planes, float16 tokens).

Layout (a dict): ``format``, ``task``, ``text_encoder`` (the encoder's name), ``text_dim``,
``max_tokens``, ``text_dtype``, ``image_codec``, ``crop_source_max_side``; ``planes`` (list of encoded
planes); ``captions`` (distinct caption strings), ``caption_spans`` (C, 2) int64 (first token row,
token count), ``tokens`` (N, D) float16/int8, ``token_scales`` (N,) float16 or None; ``pairs`` (dict
of per-pair lists: ``id``, ``dataset``; int64 tensors ``plane_a``, ``plane_b``, ``size`` (P, 2)
(height, width) to decode to, ``caption_a``, ``caption_b``; float32 ``weight``); ``val`` (int64 indices of the
held-out pairs).

Build from the command line: ``python -m tgif.train.pack ivf runs/packs/ivf.pt`` (see ``--help``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from tqdm import tqdm

from tgif import settings
from tgif.captions.base import Captioner
from tgif.captions.dataset import read_caption_file
from tgif.errors import DatasetError, UnknownNameError
from tgif.io import PairFiles, list_pairs, load_image, luminance, to_uint8
from tgif.io.image import fit_within
from tgif.text import CAPTION_TOKENS, TextEncoder, build_text_encoder
from tgif.train.synthetic import make_exposure_pair, make_multifocus_pair, pair_seed

logger = logging.getLogger(__name__)

#: Version 2 dropped the synthetic pairs' ground-truth planes, which no loss reads.
PACK_FORMAT = "tgif-train-pack/2"
DEFAULT_CAPTIONS_DIR = Path(__file__).resolve().parents[2] / "assets" / "captions" / "train"

#: Real datasets of each task (in ``shared/train``).
TASK_DATASETS: dict[str, tuple[str, ...]] = {
    "ivf": ("roadscene_train", "msrs_train", "msrs_train_128"),
    "mef": ("mef_train",),
    "mff": ("mff_train",),
}
#: Datasets whose pairs together weigh ``auxiliary_weight`` times the main pairs together.
SYNTHETIC_MFF = "mff_synthetic"
SYNTHETIC_MEF = "mef_synthetic"
AUXILIARY_DATASETS: frozenset[str] = frozenset({"msrs_train_128", SYNTHETIC_MFF, SYNTHETIC_MEF})
#: (height, width) some datasets are decoded to: msrs_train_128 back to the 4:3 aspect of MSRS.
DECODE_SIZE: dict[str, tuple[int, int]] = {"msrs_train_128": (128, 170)}
#: Where the default validation pairs come from, and how many (12 spread this way include the 4).
VAL_DATASET: dict[str, str] = {"ivf": "msrs_train", "mef": "mef_train", "mff": "mff_train"}
VAL_COUNT: dict[str, int] = {"ivf": 4, "mef": 12, "mff": 4}
#: Folder of sharp, well-exposed images for synthetic pairs; per task that has them, the synthetic set's name,
#: the modality folder names its captions use, and its maker (whose result starts with the two sources).
NATURAL_DATASET = "natural"
SYNTHETIC_SETS: dict[str, tuple[str, tuple[str, str], Callable[[np.ndarray, int], tuple]]] = {
    "mff": (SYNTHETIC_MFF, ("a", "b"), make_multifocus_pair),
    "mef": (SYNTHETIC_MEF, ("under", "over"), make_exposure_pair),
}
ENCODE_BATCH = 64


@dataclass(frozen=True)
class PackSettings:
    """How a pack is stored (see the module docstring)."""

    crop_source_max_side: int = 640
    max_tokens: int = CAPTION_TOKENS
    text_dtype: str = "float16"
    image_codec: str = "png"
    auxiliary_weight: float = 1.0
    synthetic_per_image: int = 2


#: Per-task storage defaults (compact planes and tokens for the two large packs).
PACK_PRESETS: dict[str, PackSettings] = {
    "ivf": PackSettings(text_dtype="int8", image_codec="jpeg:90"),
    "mef": PackSettings(synthetic_per_image=1, auxiliary_weight=0.5),
    "mff": PackSettings(text_dtype="int8", image_codec="jpeg:90"),
}


@dataclass
class PackSummary:
    """What :func:`build_pack` wrote."""

    path: Path
    task: str
    pairs_by_dataset: dict[str, int]
    val_ids: list[str]
    captions: int
    truncated_captions: int
    mebibytes: float
    seconds: float


_PAIR_FIELDS = ("id", "dataset", "plane_a", "plane_b", "size", "caption_a", "caption_b")


@dataclass
class _Builder:
    """Accumulates planes, captions and pairs while a pack is built."""

    codec: str
    planes: list[torch.Tensor] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    caption_index: dict[str, int] = field(default_factory=dict)
    pairs: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in _PAIR_FIELDS})

    def add_plane(self, plane: np.ndarray) -> int:
        self.planes.append(encode_plane(plane, self.codec))
        return len(self.planes) - 1

    def add_caption(self, caption: str) -> int:
        if caption not in self.caption_index:
            self.caption_index[caption] = len(self.captions)
            self.captions.append(caption)
        return self.caption_index[caption]

    def add_pair(self, dataset: str, pair_id: str, planes: tuple[int, int], size: tuple[int, int],
                 captions: tuple[str, str]) -> None:
        values = (pair_id, dataset, *planes, list(size), self.add_caption(captions[0]), self.add_caption(captions[1]))
        for key, value in zip(_PAIR_FIELDS, values):
            self.pairs[key].append(value)

    def pair_table(self, auxiliary_weight: float) -> dict[str, Any]:
        """The pairs as lists (ids, dataset names) and int64 tensors, with their sampling weights."""
        table: dict[str, Any] = {k: torch.tensor(v, dtype=torch.int64) for k, v in self.pairs.items()
                                 if k not in ("id", "dataset")}
        return {"id": self.pairs["id"], "dataset": self.pairs["dataset"], **table,
                "weight": _weights(self.pairs["dataset"], auxiliary_weight)}

    def keys(self) -> list[str]:
        """``dataset/id`` of every pair."""
        return [f"{d}/{i}" for d, i in zip(self.pairs["dataset"], self.pairs["id"])]


# --- storage helpers (shared with tgif.train.data) --------------------------------------------------------------


def encode_plane(plane: np.ndarray, codec: str) -> torch.Tensor:
    """Encode a uint8 (H, W) plane as ``png`` or ``jpeg:<quality>`` bytes in a 1-D uint8 tensor."""
    if codec == "png":
        ok, data = cv2.imencode(".png", plane, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    elif codec.startswith("jpeg:") and codec[5:].isdigit() and 1 <= int(codec[5:]) <= 100:
        ok, data = cv2.imencode(".jpg", plane, [cv2.IMWRITE_JPEG_QUALITY, int(codec[5:])])
    else:
        raise UnknownNameError(f"unknown image codec {codec!r}; use 'png' or 'jpeg:<quality 1-100>'")
    if not ok:
        raise ValueError(f"could not encode a plane of shape {plane.shape} as {codec}")
    return torch.from_numpy(data.reshape(-1).copy())


def decode_plane(data: torch.Tensor, size: tuple[int, int] | None = None) -> np.ndarray:
    """Decode a stored plane to uint8 (H, W); resize (bicubic) to ``size`` = (height, width) when it differs."""
    plane = cv2.imdecode(data.numpy(), cv2.IMREAD_GRAYSCALE)
    if plane is None:
        raise ValueError("a stored plane could not be decoded")
    if size is not None and plane.shape != tuple(size):
        plane = cv2.resize(plane, (int(size[1]), int(size[0])), interpolation=cv2.INTER_CUBIC)
    return plane


def quantize_tokens(features: torch.Tensor, dtype: str) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Store float (N, D) token features as float16, or as int8 with one float16 scale per token."""
    if dtype == "float16":
        return features.half(), None
    if dtype == "int8":
        scale = (features.abs().amax(dim=1) / 127.0).clamp_min(1e-8).half()
        values = torch.round(features / scale.float()[:, None]).clamp(-127, 127).to(torch.int8)
        return values, scale
    raise UnknownNameError(f"unknown text dtype {dtype!r}; use 'float16' or 'int8'")


def dequantize_tokens(values: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
    """Inverse of :func:`quantize_tokens`: float32 (N, D)."""
    return values.float() if scale is None else values.float() * scale.float()[:, None]


def load_pack(path: str | os.PathLike) -> dict[str, Any]:
    """Read a pack with ``torch.load(weights_only=True)`` and check its format tag."""
    pack = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(pack, dict) or pack.get("format") != PACK_FORMAT:
        raise DatasetError(f"{path}: not a training pack ({PACK_FORMAT})")
    return pack


# --- what goes in ---------------------------------------------------------------------------------------------


def _train_root(train_root: str | os.PathLike | None) -> Path:
    if train_root is not None:
        return Path(train_root)
    shared = settings.shared_dir()
    if shared is None or not (shared / "train").is_dir():
        raise DatasetError("shared/train not found; set TGIF_SHARED or pass train_root")
    return shared / "train"


def _check_task(task: str) -> str:
    key = task.strip().lower()
    if key not in TASK_DATASETS:
        raise UnknownNameError(
            f"no training pack for task {task!r}; choose from {', '.join(TASK_DATASETS)}"
            " (MIF has no training set: the IVF model is used zero-shot)"
        )
    return key


def list_task_pairs(task: str, train_root: str | os.PathLike | None = None) -> dict[str, list[PairFiles]]:
    """The real pairs a task's pack holds, per dataset (synthetic pairs not included)."""
    root = _train_root(train_root)
    return {name: list_pairs(root / name) for name in TASK_DATASETS[_check_task(task)]}


def default_val_ids(task: str, pairs: dict[str, list[PairFiles]], count: int | None = None) -> list[str]:
    """``count`` pair keys (``dataset/id``; default the task's :data:`VAL_COUNT`, fewer when the dataset has no
    more than that), spread evenly over the task's validation dataset.

    Raises:
        DatasetError: ``count`` is below 1 or leaves no pair of that dataset for training.
    """
    task = _check_task(task)
    dataset = VAL_DATASET[task]
    ids = [p.id for p in pairs[dataset]]
    if count is not None and not 1 <= count < len(ids):
        raise DatasetError(f"val_count must be between 1 and {len(ids) - 1} ({dataset} has {len(ids)} pairs), "
                           f"got {count}")
    if count is None:  # the default leaves at least one pair of the dataset to train on
        count = max(1, min(VAL_COUNT[task], len(ids) - 1))
    return [f"{dataset}/{ids[(2 * k + 1) * len(ids) // (2 * count)]}" for k in range(count)]


def read_captions(captions_dir: str | os.PathLike, dataset: str) -> dict[tuple[str, str], str]:
    """Read ``<captions_dir>/<dataset>.jsonl`` into {(id, modality folder): caption}."""
    return read_caption_file(Path(captions_dir) / f"{dataset}.jsonl")


def _caption_of(captions: dict[tuple[str, str], str], dataset: str, pair_id: str, path: Path) -> str:
    key = (pair_id, path.parent.name)
    if key not in captions:
        raise DatasetError(f"no caption for {dataset}/{key[1]}/{pair_id} in {dataset}.jsonl; caption the dataset first")
    return captions[key]


def _add_real_pairs(builder: _Builder, dataset: str, pairs: list[PairFiles], captions_dir: Path,
                    max_side: int, progress: bool) -> None:
    captions = read_captions(captions_dir, dataset)
    for files in tqdm(pairs, desc=f"pack {dataset}", unit="pair", disable=not progress):
        texts = (_caption_of(captions, dataset, files.id, files.path_a),
                 _caption_of(captions, dataset, files.id, files.path_b))
        planes = [to_uint8(fit_within(y, max_side)) for y in files.load(on_large="downscale").luminances()]
        size = DECODE_SIZE.get(dataset, planes[0].shape)
        builder.add_pair(dataset, files.id, (builder.add_plane(planes[0]), builder.add_plane(planes[1])),
                         size, texts)


def _add_synthetic_pairs(builder: _Builder, task: str, natural_dir: Path, per_image: int, max_side: int,
                         perceiver: Any, captioner: Captioner | None, progress: bool) -> None:
    """Add ``per_image`` synthetic pairs of ``task`` per image (:data:`SYNTHETIC_SETS`), captioned like the real
    sources (default: YOLO + classic segmenter, template captioner). Perception and captioning are imported here
    so that training code that only reads packs does not load them."""
    from tgif.captions import TemplateCaptioner
    from tgif.captions.dataset import caption_image, modality_name
    from tgif.perception import Perceiver, YoloDetector

    dataset, folders, make_pair = SYNTHETIC_SETS[task]
    perceiver = perceiver or Perceiver(YoloDetector(), "classic")
    captioner = captioner or TemplateCaptioner()
    paths = sorted(p for p in natural_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    if not paths:
        raise DatasetError(f"no images in {natural_dir} for synthetic {task.upper()} pairs")
    for path in tqdm(paths, desc=f"pack {dataset}", unit="img", disable=not progress):
        rgb = fit_within(load_image(path, on_large="downscale").pixels, max_side)
        for k in range(per_image):
            sources = make_pair(rgb, pair_seed(path.stem, k))[:2]
            texts = tuple(caption_image(image, modality=modality_name(folder), task=task, perceiver=perceiver,
                                        captioner=captioner).caption.text
                          for image, folder in zip(sources, folders))
            planes = tuple(builder.add_plane(to_uint8(luminance(image))) for image in sources)
            builder.add_pair(dataset, f"{path.stem}_{k}", planes, rgb.shape[:2], texts)


def _encode_captions(captions: list[str], encoder: TextEncoder, max_tokens: int,
                     progress: bool) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Return float32 token features (N, D) of all captions, their (start, length) spans, and how many were cut."""
    rows: list[torch.Tensor] = []
    truncated = 0
    for start in tqdm(range(0, len(captions), ENCODE_BATCH), desc="encode captions", unit="batch",
                      disable=not progress):
        features, mask = encoder.encode(captions[start:start + ENCODE_BATCH])
        for row in range(features.shape[0]):
            tokens = features[row, mask[row]]
            truncated += int(tokens.shape[0] > max_tokens)
            rows.append(tokens[:max_tokens].float())
    lengths = torch.tensor([len(r) for r in rows], dtype=torch.int64)
    starts = torch.cumsum(lengths, 0) - lengths
    features = torch.cat(rows) if rows else torch.zeros(0, encoder.dim)
    return features, torch.stack([starts, lengths], dim=1), truncated


def _weights(datasets: list[str], auxiliary_weight: float) -> torch.Tensor:
    auxiliary = [d in AUXILIARY_DATASETS for d in datasets]
    n_aux = sum(auxiliary)
    n_main = len(datasets) - n_aux
    aux_each = auxiliary_weight * n_main / n_aux if n_aux and n_main else 1.0
    return torch.tensor([aux_each if a else 1.0 for a in auxiliary], dtype=torch.float32)


def _val_indices(keys: list[str], val_ids: Sequence[str]) -> torch.Tensor:
    index = {key: i for i, key in enumerate(keys)}
    unknown = [v for v in val_ids if v not in index]
    if unknown:
        raise DatasetError(f"validation ids not in the pack: {unknown[:5]} (use 'dataset/id')")
    return torch.tensor(sorted(index[v] for v in val_ids), dtype=torch.int64)


def build_pack(
    task: str,
    out_path: str | os.PathLike,
    *,
    train_root: str | os.PathLike | None = None,
    captions_dir: str | os.PathLike = DEFAULT_CAPTIONS_DIR,
    text_encoder: str | TextEncoder = "minilm",
    crop_source_max_side: int | None = None,
    max_tokens: int | None = None,
    text_dtype: str | None = None,
    image_codec: str | None = None,
    auxiliary_weight: float | None = None,
    synthetic_per_image: int | None = None,
    val_ids: Sequence[str] | None = None,
    val_count: int | None = None,
    perceiver: Any = None,
    captioner: Captioner | None = None,
    progress: bool = True,
) -> PackSummary:
    """Build the training pack of ``task`` (``ivf``, ``mef`` or ``mff``) and write it to ``out_path``.

    Args:
        train_root: folder holding the datasets (default ``<shared>/train``).
        captions_dir: folder of ``<dataset>.jsonl`` caption files.
        text_encoder: a registered encoder name (:func:`tgif.text.build_text_encoder`) or an encoder.
        crop_source_max_side, max_tokens, text_dtype, image_codec, auxiliary_weight, synthetic_per_image:
            storage settings; None takes the task's :data:`PACK_PRESETS` value.
        val_ids: held-out pairs as ``dataset/id``; None for :func:`default_val_ids`.
        val_count: how many :func:`default_val_ids` holds out when ``val_ids`` is None (default
            :data:`VAL_COUNT`).
        perceiver: perception for the synthetic pairs' captions (default: YOLO + classic segmenter).
        captioner: captioner for them (default: the template captioner).
        progress: show tqdm progress bars.

    Raises:
        UnknownNameError: a task without training data (MIF) or an unknown codec/dtype/encoder.
        DatasetError: missing data or captions.
        ValueError: both ``val_ids`` and ``val_count``.
    """
    if val_ids is not None and val_count is not None:
        raise ValueError("pass val_ids or val_count, not both")
    start = time.perf_counter()
    task = _check_task(task)
    preset = PACK_PRESETS[task]
    overrides = {"crop_source_max_side": crop_source_max_side, "max_tokens": max_tokens, "text_dtype": text_dtype,
                 "image_codec": image_codec, "auxiliary_weight": auxiliary_weight,
                 "synthetic_per_image": synthetic_per_image}
    config = replace(preset, **{k: v for k, v in overrides.items() if v is not None})
    quantize_tokens(torch.zeros(1, 1), config.text_dtype)  # fail early on a bad dtype
    encode_plane(np.zeros((1, 1), np.uint8), config.image_codec)  # and on a bad codec
    encoder = build_text_encoder(text_encoder) if isinstance(text_encoder, str) else text_encoder
    root = _train_root(train_root)
    real = list_task_pairs(task, root)
    val = list(val_ids) if val_ids is not None else default_val_ids(task, real, val_count)  # fails before the work
    builder = _Builder(config.image_codec)
    for dataset, pairs in real.items():
        _add_real_pairs(builder, dataset, pairs, Path(captions_dir), config.crop_source_max_side, progress)
    if task in SYNTHETIC_SETS and config.synthetic_per_image > 0:
        _add_synthetic_pairs(builder, task, root / NATURAL_DATASET / "rgb", config.synthetic_per_image,
                             config.crop_source_max_side, perceiver, captioner, progress)
    features, spans, truncated = _encode_captions(builder.captions, encoder, config.max_tokens, progress)
    tokens, scales = quantize_tokens(features, config.text_dtype)
    pack = {
        "format": PACK_FORMAT,
        "task": task,
        "text_encoder": encoder.name,
        "text_dim": int(encoder.dim),
        "max_tokens": config.max_tokens,
        "text_dtype": config.text_dtype,
        "image_codec": config.image_codec,
        "crop_source_max_side": config.crop_source_max_side,
        "planes": builder.planes,
        "captions": builder.captions,
        "caption_spans": spans,
        "tokens": tokens,
        "token_scales": scales,
        "pairs": builder.pair_table(config.auxiliary_weight),
        "val": _val_indices(builder.keys(), val),
    }
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(pack, out)
    counts = {d: builder.pairs["dataset"].count(d) for d in dict.fromkeys(builder.pairs["dataset"])}
    summary = PackSummary(out, task, counts, val, len(builder.captions), truncated, out.stat().st_size / 2**20,
                          time.perf_counter() - start)
    logger.info("%s pack: %s pairs, %d captions (%d truncated to %d tokens), %.1f MiB, %.0f s -> %s", task, counts,
                summary.captions, truncated, config.max_tokens, summary.mebibytes, summary.seconds, out)
    return summary
