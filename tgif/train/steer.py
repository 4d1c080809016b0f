"""The steering objective: train the IVF network so that a caption naming an object brings it out, there only.

The paper's loss (|F - max| + 20 gradient) does not depend on the caption, so nothing rewards the
network for reading it. This objective makes the *target* depend on the text (as OmniFuse and
TextFusion do; ``shared/notes/steering.md``), fine-tuning a trained checkpoint (the teacher):

- Per training crop, two caption pairs: *neutral* (the drafted captions, sometimes with a sentence
  that names nothing, e.g. "The scene is a road at night.") and *named* (the drafted captions
  with a phrase that names a random subset of the objects in the crop, with their crop-relative
  position, in varied wording: :mod:`tgif.captions.steering`). Some named captions name an
  absent class, or a present class where none of it is: they must change nothing.
- Targets, from the frozen teacher's output ``T`` on the crop with the drafted captions:
  inside each named box ``T* = T + gain * s * relu(s * (T - r))``, with ``r`` the teacher's mean
  over the ring between the box and the box dilated by 50% and ``s`` the sign of the box's
  contrast ``mean_box(T) - r`` (the object moves further from its surroundings); everywhere else,
  and for the neutral and absent-object captions everywhere, ``T`` itself.
- Loss (region means, so a small box weighs as much as the frame):
  ``w_out |F_named - T|_out + w_in |F_named - T*|_in + w_ring |F_named - T|_ring
  + w_out |F_neutral - T| + w_cf |F_named - F_neutral|_out + w_grad (Sobel terms outside)
  + w_margin relu((1 + margin) C_T - C_named) + w_ground BCE(relevance, boxes)`` where ``C`` is the
  signed box-ring contrast and the last term teaches the grounding head
  (:mod:`tgif.model.text_grounding`) to point at the named boxes (pooled to its resolution) and
  nowhere for the neutral and absent captions, balanced between inside and outside.
  ``_out`` is the crop outside every named box dilated by 50%; the two captions of a crop form a
  counterfactual pair in one batch.

The source encoders are frozen (their features do not depend on text, and the teacher shares them),
so a step encodes each crop once and decodes it three times (teacher, neutral, named). Captions are
encoded on the fly by the checkpoint's frozen text encoder, read up to ``max_tokens`` tokens each.

Data: the IVF training frames of ``shared/train`` (RoadScene, MSRS full-size and the 128-pixel
MSRS frames resized to 170x128) with the detections of both sources from the caption files
(``assets/captions/train``), merged by class and overlap.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tgif.captions.dataset import read_caption_records
from tgif.captions.steering import ABSENT_LABELS, LABEL_SYNONYMS, POSITION_SYNONYMS, box_position, object_phrase
from tgif.captions.template import restrict_caption
from tgif.errors import DatasetError
from tgif.model import TGIFNet, load_tgif, save_tgif
from tgif.model.region_grounding import grown_box, ring_mean
from tgif.model.tgif_net import TGIFConfig
from tgif.text import CAPTION_TOKENS
from tgif.train.loop import append_csv, load_state, log_row, save_state, truncate_csv
from tgif.train.losses import sobel_magnitude

logger = logging.getLogger(__name__)

#: Loss terms logged per step (grey-level change inside / outside named boxes, named vs neutral).
STEER_TERMS = ("total", "out", "in", "ring", "neutral", "cf", "grad", "margin", "ground", "delta_in", "delta_out")
#: Sentences that name nothing, added to neutral captions now and then.
NEUTRAL_SENTENCES: tuple[str, ...] = (
    "The scene is a road at night.",
    "A street scene.",
    "Keep the details of both images.",
    "An ordinary view of the surroundings.",
    "Fuse the two images naturally.",
    "The image shows a road and some buildings.",
)
#: Datasets (in shared/train) and their frame sampling weight per pair.
STEER_DATASETS: dict[str, float] = {"roadscene_train": 1.0, "msrs_train": 2.0, "msrs_train_128": 0.15}
#: Frames of these datasets are decoded to this (height, width), boxes scaled along.
DECODE_SIZE: dict[str, tuple[int, int]] = {"msrs_train_128": (128, 170)}


@dataclass
class SteerSettings:
    """A steering fine-tune (``tgif train --config configs/ivf_steer.yaml``; saved as ``settings.json``).

    Attributes:
        objective: always ``"steer"`` (what makes ``tgif train`` pick this loop).
        task: the task of the teacher checkpoint (``ivf``).
        init: the teacher checkpoint the student starts from.
        out_dir: run folder (``last.safetensors``, ``last_state.pt``, ``log.csv``).
        steps, batch_size, crop, lr, seed: as in :class:`tgif.train.loop.TrainSettings` (batch = crops); ``lr``
            is the fine-tuning rate of the teacher's layers, after a linear warm-up of ``warmup`` steps and
            with a cosine decay to a tenth.
        head_lr: learning rate of the new grounding head.
        freeze_trunk: train the grounding head only: every layer of the teacher stays as it was, so a caption
            the head does not ground (relevance below the gate everywhere) gives the teacher's output exactly.
        head_init: a checkpoint whose grounding head starts the student's (empty: a new head, emphasis at zero).
        trunk_from, trunk_mix: when ``trunk_from`` names a checkpoint of the same network (e.g. an earlier steering
            run whose trunk was fine-tuned), the teacher becomes ``init + trunk_mix * (trunk_from - init)``,
            layer by layer (weight-space ensembling, WiSE-FT: Wortsman et al., CVPR 2022), before the student is
            built from it: part of what that fine-tune changed, at part of its cost in the base's strengths.
        warmup: warm-up steps.
        max_tokens: tokens read per caption by the student (the teacher reads what it was trained with).
        gain: contrast amplification of the inside target (1 doubles the box-ring contrast).
        margin: the named box's contrast must exceed the teacher's by this fraction.
        w_out, w_in, w_ring, w_cf, w_grad, w_margin, w_ground: loss weights (module docstring).
        w_neutral: weight of the neutral captions' anchor to the teacher (None: ``w_out``).
        loss_schedule: ``{step: {setting: value}}``: from that step on, these loss settings (weights, ``gain``,
            ``margin``) replace the ones above, e.g. a second phase that asks for more contrast once the
            grounding head points at the right pixels.
        p_absent: share of named captions that name an absent class or a wrong position.
        p_phrase_only: share of named captions where the phrase replaces the drafted caption.
        p_neutral_extra: share of neutral captions with a sentence that names nothing.
        checkpoint_every: steps between checkpoints.
        captions_dir: folder of the training caption files.
        caption_mode: the caption mode of the drafted captions (the paper's Table 5 variants; the full-mode
            caption files less what the mode may not use: :func:`tgif.captions.template.restrict_caption`).
    """

    init: str
    out_dir: str
    objective: str = "steer"
    task: str = "ivf"
    steps: int = 4000
    batch_size: int = 2
    crop: int = 160
    lr: float = 1e-4
    head_lr: float = 1e-3
    freeze_trunk: bool = False
    head_init: str = ""
    trunk_from: str = ""
    trunk_mix: float = 1.0
    warmup: int = 200
    seed: int = 0
    max_tokens: int = CAPTION_TOKENS
    gain: float = 1.0
    margin: float = 0.3
    w_out: float = 4.0
    w_in: float = 1.0
    w_ring: float = 0.25
    w_cf: float = 1.0
    w_grad: float = 0.25
    w_margin: float = 1.0
    w_ground: float = 1.0
    w_neutral: float | None = None
    loss_schedule: dict[int, dict[str, float]] = field(default_factory=dict)
    p_absent: float = 0.2
    p_phrase_only: float = 0.15
    p_neutral_extra: float = 0.25
    checkpoint_every: int = 250
    captions_dir: str = ""
    caption_mode: str = "full"
    datasets: dict[str, float] = field(default_factory=lambda: dict(STEER_DATASETS))


# ---------------------------------------------------------------------------------------------- frames


@dataclass
class Frame:
    """One training pair with its objects: uint8 luminance planes, drafted captions, merged detections."""

    key: str
    y_a: np.ndarray
    y_b: np.ndarray
    captions: tuple[str, str]
    objects: list[tuple[str, tuple[float, float, float, float]]]
    weight: float


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merge_detections(*lists: Sequence[dict[str, Any]], iou: float = 0.5) -> list[tuple[str, tuple[float, ...]]]:
    """Merge the detections of both sources: highest score first, a box of the same class overlapping a kept one
    by more than ``iou`` is dropped. Returns ``[(label, (x1, y1, x2, y2)), ...]``."""
    items = sorted((d for group in lists for d in group), key=lambda d: -float(d["score"]))
    kept: list[tuple[str, tuple[float, ...]]] = []
    for item in items:
        box = tuple(float(v) for v in item["box"])
        if all(label != item["label"] or _iou(box, other) <= iou for label, other in kept):
            kept.append((item["label"], box))
    return kept


def load_frames(train_root: str | os.PathLike, captions_dir: str | os.PathLike,
                datasets: dict[str, float] | None = None, progress: bool = True,
                caption_mode: str = "full") -> list[Frame]:
    """Load the steering frames: every pair of ``datasets`` with its drafted captions (as ``caption_mode`` drafts
    them) and merged detections.

    Raises:
        DatasetError: a dataset or caption file is missing, or a pair has no caption.
    """
    import cv2

    from tgif.io import list_pairs, to_uint8

    frames: list[Frame] = []
    for dataset, weight in (datasets or STEER_DATASETS).items():
        records = read_caption_records(Path(captions_dir) / f"{dataset}.jsonl")
        for files in tqdm(list_pairs(Path(train_root) / dataset), desc=f"steer frames {dataset}", unit="pair",
                          disable=not progress):
            keys = [(files.id, files.path_a.parent.name), (files.id, files.path_b.parent.name)]
            missing = [k for k in keys if k not in records]
            if missing:
                raise DatasetError(f"{dataset}: no caption record for {missing[0]}")
            planes = [to_uint8(y) for y in files.load(on_large="downscale").luminances()]
            height, width = planes[0].shape
            objects = merge_detections(records[keys[0]]["detections"], records[keys[1]]["detections"])
            if dataset in DECODE_SIZE:
                new_h, new_w = DECODE_SIZE[dataset]
                planes = [cv2.resize(p, (new_w, new_h), interpolation=cv2.INTER_CUBIC) for p in planes]
                sx, sy = new_w / width, new_h / height
                objects = [(label, (b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy)) for label, b in objects]
            frames.append(Frame(f"{dataset}/{files.id}", planes[0], planes[1],
                                (restrict_caption(records[keys[0]]["caption"], caption_mode),
                                 restrict_caption(records[keys[1]]["caption"], caption_mode)), objects, weight))
    return frames


# ---------------------------------------------------------------------------------------------- examples


@dataclass
class SteerExample:
    """One crop with its counterfactual captions and the regions the loss needs.

    Attributes:
        y_a, y_b: float32 (1, S, S) in [0, 1].
        drafted: the drafted captions (the teacher's input).
        neutral: captions that name nothing (drafted, sometimes with a neutral sentence).
        named: captions with a steering phrase (which may name something absent).
        boxes: named boxes in crop pixels (x1, y1, x2, y2), integers; empty when nothing present is named.
        others: boxes of the objects in the crop that the named caption does not name (hard negatives).
    """

    y_a: torch.Tensor
    y_b: torch.Tensor
    drafted: tuple[str, str]
    neutral: tuple[str, str]
    named: tuple[str, str]
    boxes: list[tuple[int, int, int, int]]
    others: list[tuple[int, int, int, int]] = field(default_factory=list)


def _crop_window(frame: Frame, crop: int, rng: np.random.Generator) -> tuple[int, int]:
    """Top-left of a crop; it contains the centre of a random steerable object when the frame has one."""
    height, width = frame.y_a.shape
    steerable = [box for label, box in frame.objects if label in LABEL_SYNONYMS]
    max_top, max_left = max(0, height - crop), max(0, width - crop)
    if not steerable:
        return int(rng.integers(0, max_top + 1)), int(rng.integers(0, max_left + 1))
    x1, y1, x2, y2 = steerable[int(rng.integers(len(steerable)))]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top = int(np.clip(rng.uniform(cy - crop * 0.85, cy - crop * 0.15), 0, max_top))
    left = int(np.clip(rng.uniform(cx - crop * 0.85, cx - crop * 0.15), 0, max_left))
    return top, left


def crop_objects(objects: Sequence[tuple[str, tuple[float, ...]]], top: int, left: int, size: tuple[int, int],
                 min_visible: float = 0.5) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Objects whose box is at least ``min_visible`` inside the (height, width) window at (top, left),
    as integer boxes clipped to the window, in window coordinates."""
    height, width = size
    found = []
    for label, (x1, y1, x2, y2) in objects:
        cx1, cy1 = max(x1 - left, 0.0), max(y1 - top, 0.0)
        cx2, cy2 = min(x2 - left, float(width)), min(y2 - top, float(height))
        area = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        visible = max(0.0, cx2 - cx1) * max(0.0, cy2 - cy1)
        if area > 0 and visible / area >= min_visible and cx2 - cx1 >= 2 and cy2 - cy1 >= 2:
            found.append((label, (int(math.floor(cx1)), int(math.floor(cy1)),
                                  int(math.ceil(cx2)), int(math.ceil(cy2)))))
    return found


def _with_phrase(captions: tuple[str, str], phrase: str, rng: np.random.Generator,
                 phrase_only: float) -> tuple[str, str]:
    """Put ``phrase`` into one caption (appended, or replacing it with probability ``phrase_only``)."""
    which = int(rng.integers(2))
    parts = list(captions)
    parts[which] = phrase if rng.random() < phrase_only else f"{parts[which]} {phrase}".strip()
    return parts[0], parts[1]


def make_example(frame: Frame, settings: SteerSettings, rng: np.random.Generator) -> SteerExample:
    """Draw one training crop of ``frame`` with its drafted, neutral and named captions and named boxes."""
    crop = settings.crop
    planes = [frame.y_a, frame.y_b]
    height, width = planes[0].shape
    pad_h, pad_w = max(0, crop - height), max(0, crop - width)
    objects = frame.objects
    if pad_h or pad_w:
        widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        planes = [np.pad(p, widths, mode="reflect") for p in planes]
        objects = [(label, (b[0] + pad_w // 2, b[1] + pad_h // 2, b[2] + pad_w // 2, b[3] + pad_h // 2))
                   for label, b in objects]
        frame = Frame(frame.key, planes[0], planes[1], frame.captions, objects, frame.weight)
    top, left = _crop_window(frame, crop, rng)
    y_a, y_b = (torch.from_numpy(np.ascontiguousarray(p[top:top + crop, left:left + crop])).float().div_(255)[None]
                for p in planes)
    present = crop_objects(objects, top, left, (crop, crop))
    steerable = [(label, box, box_position(box, crop, crop)) for label, box in present if label in LABEL_SYNONYMS]

    neutral = frame.captions
    if rng.random() < settings.p_neutral_extra:
        neutral = _with_phrase(neutral, str(rng.choice(NEUTRAL_SENTENCES)), rng, 0.0)

    boxes: list[tuple[int, int, int, int]] = []
    if steerable and rng.random() >= settings.p_absent:
        phrases = []
        for _ in range(1 if rng.random() < 0.8 else 2):
            label, _, position = steerable[int(rng.integers(len(steerable)))]
            if rng.random() < 0.7:  # name the class at that position: every such object of it is meant
                group = [box for lab, box, pos in steerable if lab == label and pos == position]
                phrases.append(object_phrase(label, position, rng))
            else:  # name the class alone: all of it in the crop is meant
                group = [box for lab, box, _ in steerable if lab == label]
                phrases.append(object_phrase(label, None, rng))
            boxes.extend(box for box in group if box not in boxes)
        phrase = " ".join(dict.fromkeys(phrases))
    else:
        phrase = _absent_phrase(present, steerable, crop, rng)
    named = _with_phrase(frame.captions, phrase, rng, settings.p_phrase_only)
    others = [box for _, box in present if box not in boxes]
    return SteerExample(y_a, y_b, frame.captions, neutral, named, boxes, others)


def _absent_phrase(present: Sequence[tuple[str, Any]], steerable: Sequence[tuple[str, Any, str]], crop: int,
                   rng: np.random.Generator) -> str:
    """A phrase naming nothing in the crop: an absent class, or a present class where none of it is."""
    positions = list(POSITION_SYNONYMS)
    if steerable and rng.random() < 0.5:
        label = steerable[int(rng.integers(len(steerable)))][0]
        taken = {pos for lab, _, pos in steerable if lab == label}
        free = [pos for pos in positions if pos not in taken and not _near(pos, taken)]
        if free:
            return object_phrase(label, str(rng.choice(free)), rng)
    labels_here = {label for label, _ in present}
    absent = [label for label in ABSENT_LABELS if label not in labels_here]
    return object_phrase(str(rng.choice(absent)), str(rng.choice(positions)) if rng.random() < 0.7 else None, rng)


def _near(position: str, taken: set[str]) -> bool:
    """Whether ``position`` shares a row or column word with a taken one ("at the top left" vs "on the left"):
    such a phrase is ambiguous, so it is never used as an absent one."""
    words = set(position.split()) - {"at", "the", "on", "in", "centre"}
    return any(words & (set(other.split()) - {"at", "the", "on", "in", "centre"}) for other in taken)


# ---------------------------------------------------------------------------------------------- targets and loss


def region_masks(boxes: Sequence[Sequence[int]], size: tuple[int, int],
                 dilation: float = 0.5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inside, ring, outside) float32 (H, W) masks: the boxes, their dilation by ``dilation`` less the boxes,
    and the rest of the frame. With no boxes the whole frame is outside."""
    inside = np.zeros(size, np.float32)
    grown = np.zeros(size, np.float32)
    for box in boxes:
        x1, y1, x2, y2 = box
        inside[y1:y2, x1:x2] = 1.0
        gx1, gy1, gx2, gy2 = grown_box(box, size, dilation)
        grown[gy1:gy2, gx1:gx2] = 1.0
    return inside, grown - inside, 1.0 - grown


def box_contrast(image: torch.Tensor, box: Sequence[int], dilation: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean inside the box, mean over its ring) of a (..., H, W) image; the ring is the box dilated by
    ``dilation`` less the box (:func:`~tgif.model.region_grounding.ring_mean`)."""
    x1, y1, x2, y2 = box
    return image[..., y1:y2, x1:x2].mean(dim=(-2, -1)), ring_mean(image, tuple(box), dilation)


def steer_target(teacher: torch.Tensor, boxes: Sequence[Sequence[int]], gain: float) -> torch.Tensor:
    """The named target of one (1, H, W) teacher output: inside each box the pixels on the object's side of the
    ring mean move away from it by ``gain`` times their distance (module docstring); clamped to [0, 1]."""
    target = teacher.clone()
    for box in boxes:
        x1, y1, x2, y2 = box
        inner_mean, ring_mean = box_contrast(teacher, box)
        sign = 1.0 if float(inner_mean - ring_mean) >= 0 else -1.0
        patch = teacher[..., y1:y2, x1:x2]
        moved = patch + gain * sign * torch.relu(sign * (patch - ring_mean[..., None, None]))
        target[..., y1:y2, x1:x2] = torch.maximum(target[..., y1:y2, x1:x2], moved) if sign > 0 else \
            torch.minimum(target[..., y1:y2, x1:x2], moved)
    return target.clamp(0.0, 1.0)


def _masked_mean(error: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of (B, 1, H, W) ``error`` over each sample's ``mask``, averaged over the samples that have one."""
    weight = mask.sum(dim=(1, 2, 3))
    per = (error * mask).sum(dim=(1, 2, 3)) / weight.clamp_min(1.0)
    has = (weight > 0).float()
    return (per * has).sum() / has.sum().clamp_min(1.0)


def grounding_loss(relevance: torch.Tensor, inside: torch.Tensor, unnamed: torch.Tensor) -> torch.Tensor:
    """Balanced binary cross-entropy of a (B, 1, h, w) relevance map against the (B, 1, S, S) inside mask,
    average-pooled to (h, w): the means over the named boxes, over the unnamed objects' boxes (target 0)
    and over the rest, summed."""
    target = F.adaptive_avg_pool2d(inside, relevance.shape[-2:])
    hard = (F.adaptive_avg_pool2d(unnamed, relevance.shape[-2:]) > 0.25).float()
    bce = F.binary_cross_entropy(relevance.clamp(1e-6, 1 - 1e-6), target, reduction="none")
    positive = (target > 0.5).float()
    return (_masked_mean(bce, positive) + _masked_mean(bce, hard * (1.0 - positive))
            + _masked_mean(bce, (1.0 - positive) * (1.0 - hard)))


def box_mask(boxes: Sequence[Sequence[int]], size: tuple[int, int]) -> np.ndarray:
    """float32 (H, W) mask of the union of integer boxes (x1, y1, x2, y2)."""
    mask = np.zeros(size, np.float32)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = 1.0
    return mask


def steering_loss(named: torch.Tensor, neutral: torch.Tensor, teacher: torch.Tensor,
                  boxes: Sequence[Sequence[Sequence[int]]], settings: SteerSettings,
                  relevance: torch.Tensor | None = None,
                  others: Sequence[Sequence[Sequence[int]]] | None = None) -> dict[str, torch.Tensor]:
    """The steering loss of a batch (module docstring); inputs (B, 1, S, S), ``boxes`` per sample, the
    grounding head's relevance (2B, 1, h, w) for the named then the neutral captions (None: no such term),
    and per sample the boxes of the objects the caption does not name (their pixels count as a region of
    their own in the outside terms, so that an unnamed object next to a named one is held still)."""
    size = tuple(named.shape[-2:])
    masks = [region_masks(b, size) for b in boxes]
    inside, ring, outside = (torch.from_numpy(np.stack([m[k] for m in masks]))[:, None].to(named.device)
                             for k in range(3))
    others = others if others is not None else [[] for _ in boxes]
    unnamed = torch.from_numpy(np.stack([box_mask(o, size) for o in others]))[:, None].to(named.device)
    unnamed = unnamed * (1.0 - inside)
    target = torch.stack([steer_target(teacher[i], boxes[i], settings.gain) for i in range(len(boxes))])
    everywhere = torch.ones_like(outside)
    terms: dict[str, torch.Tensor] = {
        "out": _masked_mean((named - teacher).abs(), outside) + _masked_mean((named - teacher).abs(), unnamed),
        "in": _masked_mean((named - target).abs(), inside),
        "ring": _masked_mean((named - teacher).abs(), ring),
        "neutral": _masked_mean((neutral - teacher).abs(), everywhere),
        "cf": _masked_mean((named - neutral).abs(), outside),
    }
    grad_teacher = sobel_magnitude(teacher)
    terms["grad"] = (_masked_mean((sobel_magnitude(named) - grad_teacher).abs(), outside)
                     + _masked_mean((sobel_magnitude(neutral) - grad_teacher).abs(), everywhere))
    margins = []
    for i, sample_boxes in enumerate(boxes):
        for box in sample_boxes:
            t_in, t_ring = box_contrast(teacher[i], box)
            f_in, f_ring = box_contrast(named[i], box)
            sign = 1.0 if float(t_in - t_ring) >= 0 else -1.0
            wanted = (1.0 + settings.margin) * sign * (t_in - t_ring)
            margins.append(torch.relu(wanted - sign * (f_in - f_ring)).sum())
    terms["margin"] = torch.stack(margins).mean() if margins else named.new_zeros(())
    terms["ground"] = (grounding_loss(relevance, torch.cat([inside, torch.zeros_like(inside)]),
                                      torch.cat([unnamed, unnamed]))
                       if relevance is not None else named.new_zeros(()))
    w_neutral = settings.w_out if settings.w_neutral is None else settings.w_neutral
    terms["total"] = (settings.w_out * terms["out"] + w_neutral * terms["neutral"] + settings.w_in * terms["in"]
                      + settings.w_ring * terms["ring"] + settings.w_cf * terms["cf"]
                      + settings.w_grad * terms["grad"] + settings.w_margin * terms["margin"]
                      + settings.w_ground * terms["ground"])
    with torch.no_grad():
        change = (named - neutral).abs() * 255.0
        terms["delta_in"] = _masked_mean(change, inside)
        terms["delta_out"] = _masked_mean(change, outside)
    return terms


# ---------------------------------------------------------------------------------------------- text


class CaptionTokens:
    """Token features of caption pairs, as the network reads them: each caption cut to ``max_tokens``,
    the two concatenated, the batch zero-padded with a mask. Drafted captions are cached (bounded)."""

    def __init__(self, encoder: Any, max_tokens: int, cache_limit: int = 4096) -> None:
        self.encoder, self.max_tokens, self.cache_limit = encoder, max_tokens, cache_limit
        self._cache: dict[str, torch.Tensor] = {}

    def _tokens(self, captions: Sequence[str], cache: bool) -> list[torch.Tensor]:
        todo = [c for c in dict.fromkeys(captions) if c not in self._cache]
        fresh: dict[str, torch.Tensor] = {}
        if todo:
            features, mask = self.encoder.encode(todo)
            for row, caption in enumerate(todo):
                fresh[caption] = features[row, mask[row]][: self.max_tokens].float()
            if cache and len(self._cache) + len(fresh) <= self.cache_limit:
                self._cache.update(fresh)
        return [self._cache.get(c, fresh.get(c)) for c in captions]  # type: ignore[misc]

    def batch(self, pairs: Sequence[tuple[str, str]], cache: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, D) features and (B, L) mask for caption pairs (caption a's tokens, then caption b's)."""
        flat = self._tokens([c for pair in pairs for c in pair], cache)
        rows = [torch.cat([flat[2 * i], flat[2 * i + 1]]) for i in range(len(pairs))]
        length = max(r.shape[0] for r in rows)
        text = torch.zeros(len(rows), length, rows[0].shape[1])
        mask = torch.zeros(len(rows), length, dtype=torch.bool)
        for i, row in enumerate(rows):
            text[i, : row.shape[0]] = row
            mask[i, : row.shape[0]] = True
        return text, mask


# ---------------------------------------------------------------------------------------------- model


def mix_weights(model: TGIFNet, other: TGIFNet, alpha: float) -> TGIFNet:
    """Set every weight ``w`` of ``model`` to ``w + alpha * (w_other - w)`` (``other``'s extra layers, such as a
    grounding head, are ignored); returns ``model``.

    Raises:
        ValueError: ``alpha`` outside [0, 1], or a layer of ``model`` that ``other`` lacks or shapes differently.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"trunk_mix must be in [0, 1], got {alpha}")
    theirs = other.state_dict()
    mixed = {}
    for name, value in model.state_dict().items():
        if name not in theirs or theirs[name].shape != value.shape:
            raise ValueError(f"cannot mix weights: {name} is missing or shaped differently in the other network")
        mixed[name] = value + alpha * (theirs[name].to(value.dtype) - value)
    model.load_state_dict(mixed)
    return model


def student_from_teacher(teacher: TGIFNet, freeze_trunk: bool = False, head_init: str = "") -> TGIFNet:
    """A copy of ``teacher`` with a grounding head (whose emphasis starts at zero, so the student starts as the
    teacher, unless ``head_init`` names a checkpoint whose head it takes) and frozen source encoders (every
    layer but the head with ``freeze_trunk``)."""
    config = TGIFConfig.from_dict({**teacher.config.to_dict(), "grounding": True})
    student = TGIFNet(config)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    extra = [k for k in missing if not k.startswith("grounding.")]
    if extra or unexpected:
        raise RuntimeError(f"teacher weights do not fit the student: missing {extra}, unexpected {unexpected}")
    if head_init:
        source, _ = load_tgif(head_init)
        if not source.config.grounding:
            raise ValueError(f"head_init {head_init} has no grounding head")
        student.grounding.load_state_dict(source.grounding.state_dict())
    frozen = [student] if freeze_trunk else [student.encoder_a, student.encoder_b]
    for module in frozen:
        module.requires_grad_(False)
    student.grounding.requires_grad_(True)
    return student


def train_steering(settings: SteerSettings, resume: bool = False, progress: bool = True,
                   frames: list[Frame] | None = None, text_encoder: Any = None) -> Path:
    """Fine-tune ``settings.init`` with the steering objective; returns the last checkpoint's path.

    ``frames`` and ``text_encoder`` replace the shared training frames and the checkpoint's encoder (tests).
    """
    from tgif import settings as tgif_settings
    from tgif.pipeline import text_encoder_for
    from tgif.train.pack import DEFAULT_CAPTIONS_DIR

    random.seed(settings.seed)
    torch.manual_seed(settings.seed)
    rng = np.random.default_rng(settings.seed)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))

    teacher, metadata = load_tgif(settings.init)
    if settings.trunk_from:
        mix_weights(teacher, load_tgif(settings.trunk_from)[0], settings.trunk_mix)
    teacher.eval().requires_grad_(False)
    encoder = text_encoder if text_encoder is not None else text_encoder_for(metadata.text_encoder)
    student = student_from_teacher(teacher, settings.freeze_trunk, settings.head_init)
    if frames is None:
        shared = tgif_settings.shared_dir()
        if shared is None or not (shared / "train").is_dir():
            raise DatasetError("shared/train not found; set TGIF_SHARED")
        frames = load_frames(shared / "train", settings.captions_dir or DEFAULT_CAPTIONS_DIR, settings.datasets,
                             progress, settings.caption_mode)
    weights = np.array([f.weight for f in frames], np.float64)
    weights /= weights.sum()
    teacher_tokens = CaptionTokens(encoder, int(metadata.extra.get("max_tokens", 0)) or settings.max_tokens)
    student_tokens = CaptionTokens(encoder, settings.max_tokens)
    head = [p for n, p in student.named_parameters() if n.startswith("grounding.")]
    trunk = [p for n, p in student.named_parameters() if p.requires_grad and not n.startswith("grounding.")]
    groups = [{"params": trunk, "lr": settings.lr}] if trunk else []
    optimizer = torch.optim.Adam([*groups, {"params": head, "lr": settings.head_lr}])

    def schedule(done: int) -> float:
        if done < settings.warmup:
            return (done + 1) / settings.warmup
        progress_done = (done - settings.warmup) / max(1, settings.steps - settings.warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress_done)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    step = 0
    state_path = out / "last_state.pt"
    if resume and state_path.exists():
        state = load_state(state_path, student, optimizer, scheduler)
        step = int(state["step"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        truncate_csv(out / "log.csv", step)  # rows an interrupted run wrote after its last checkpoint
        logger.info("resumed %s at step %d", out, step)

    def save(step_done: int) -> Path:
        extra = {**metadata.extra, "objective": "steer", "steer_settings": asdict(settings),
                 "base_checkpoint": Path(settings.init).name, "base_steps": metadata.steps,
                 "max_tokens": settings.max_tokens}
        path = save_tgif(out / "last.safetensors", student, metadata.text_encoder, metadata.task,
                         metadata.steps + step_done, extra)
        save_state(state_path, student, optimizer, scheduler, step_done,
                   numpy_rng=json.dumps(rng.bit_generator.state))
        return path

    student.train()
    for module in (student.encoder_a, student.encoder_b):
        module.eval()
    bar = tqdm(total=settings.steps, initial=step, desc="steer", unit="step", disable=not progress)
    start = time.perf_counter()
    last = out / "last.safetensors"
    while step < settings.steps:
        examples = [make_example(frames[int(rng.choice(len(frames), p=weights))], settings, rng)
                    for _ in range(settings.batch_size)]
        y_a = torch.stack([e.y_a for e in examples])
        y_b = torch.stack([e.y_b for e in examples])
        with torch.no_grad():
            features = student.encode_sources(y_a, y_b)
            t_text, t_mask = teacher_tokens.batch([e.drafted for e in examples], cache=True)
            teacher.train()  # unclamped, like the student's training output (no dropout or batch norm anywhere)
            target = teacher.guide_and_decode(features, t_text, t_mask)
            teacher.eval()
        s_text, s_mask = student_tokens.batch([e.named for e in examples] + [e.neutral for e in examples])
        fused, relevance = student.guide_and_ground(features.repeat(2), s_text, s_mask)
        batch = len(examples)
        terms = steering_loss(fused[:batch], fused[batch:], target, [e.boxes for e in examples],
                              loss_settings(settings, step), relevance, [e.others for e in examples])
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        append_csv(out / "log.csv", log_row(step, terms, STEER_TERMS, scheduler.get_last_lr()[0],
                                            time.perf_counter() - start))
        bar.set_postfix(loss=f"{terms['total'].item():.4f}", d_in=f"{terms['delta_in'].item():.1f}",
                        d_out=f"{terms['delta_out'].item():.2f}")
        if step % settings.checkpoint_every == 0 or step == settings.steps:
            last = save(step)
    bar.close()
    return last


#: Settings a ``loss_schedule`` entry may change.
SCHEDULED = ("gain", "margin", "w_out", "w_in", "w_ring", "w_cf", "w_grad", "w_margin", "w_ground", "w_neutral")


def loss_settings(settings: SteerSettings, step: int) -> SteerSettings:
    """The settings in force at ``step`` (0-based): the ``loss_schedule`` entries at or before it, applied in order."""
    overrides: dict[str, float] = {}
    for start in sorted(k for k in settings.loss_schedule if k <= step):
        overrides.update(settings.loss_schedule[start])
    return replace(settings, **overrides) if overrides else settings


def load_steer_settings(values: dict[str, Any]) -> SteerSettings:
    """Build :class:`SteerSettings` from a settings file's values; unknown keys are an error."""
    known = set(SteerSettings.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown steering settings {unknown}; known: {sorted(known)}")
    schedule = {int(k): dict(v) for k, v in (values.get("loss_schedule") or {}).items()}
    for start, entry in schedule.items():
        bad = sorted(set(entry) - set(SCHEDULED))
        if bad:
            raise ValueError(f"loss_schedule step {start}: {bad} cannot be scheduled; allowed: {list(SCHEDULED)}")
    return SteerSettings(**{**values, "loss_schedule": schedule})

