"""Training the region grounding: a caption that names one object of several brings out that one only.

Two stages over the shipped steering network's trunk, which stays frozen (so the drafted captions' fusion, and
with it every standard metric, is exactly the trunk's):

1. **Matcher** (text only, :func:`train_matcher`). Per IVF training frame, its detected objects are the
   region tokens and its drafted captions the text. A request phrase in training wording
   (:mod:`tgif.captions.steering`) names a reference: a class (any synonym), optionally a column, a row, or a
   size ("the large truck"); the regions it names are those of that class in that part of the frame, and
   every other region is a hard negative. Counterfactual examples of one frame (naming A, naming B) stand in
   one batch; absent references ("the dog on the left", a present class where none of it is), descriptive
   sentences ("There is a car on the left.") and drafts alone name nothing. Loss: binary cross-entropy of
   each region's match probability.
2. **Emphasis** (images, :func:`train_emphasis`). A pool of crops of frames with objects, each with the
   frozen trunk's fusion ``T`` under the frame's drafted captions (:func:`emphasis_pool`; the emphasis acts on
   the fused image, so the trunk runs once per crop). Per step a random subset of each crop's objects is
   named by imposing match probability 1 on them (the matcher is not needed here) and the others 0,
   counterfactual subsets of one crop in one batch. Target inside each named box: ``T`` with its contrast to
   the surrounding ring amplified by ``gain`` and compressed below :data:`WHITE_KNEE` (above
   :data:`BLACK_KNEE` for an object darker than its ring; :func:`bright_target`); unnamed objects' boxes are
   held to ``T`` explicitly (they change only where a named box overlaps them). Pixels outside the named
   boxes cannot change and nothing new can pass either knee
   (:class:`~tgif.model.region_grounding.RegionEmphasis`), so no loss term is needed for either.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from tgif.captions.steering import ABSENT_LABELS, TRAIN_TEMPLATES
from tgif.captions.wording import plural
from tgif.model import TGIFNet, load_tgif, save_tgif
from tgif.model.region_grounding import BLACK_KNEE, WHITE_KNEE, LabelTable, Region, RegionTokens, region_tokens
from tgif.model.tgif_net import TGIFConfig
from tgif.train.loop import append_csv
from tgif.train.steer import NEUTRAL_SENTENCES, CaptionTokens, Frame, _masked_mean, box_contrast, crop_objects

logger = logging.getLogger(__name__)

#: Training words for the classes a user names (the benchmark's words, assets/steering/words.txt, are others).
GROUND_WORDS: dict[str, tuple[str, ...]] = {
    "person": ("person", "pedestrian", "man", "woman", "human", "figure", "walker", "people", "child", "worker",
               "someone", "passer-by"),
    "car": ("car", "vehicle", "automobile", "taxi", "van", "hatchback"),
    "truck": ("truck", "lorry", "tanker", "semi-trailer"),
    "bus": ("bus", "minibus", "shuttle"),
    "bicycle": ("bicycle", "bike", "cyclist", "bicyclist"),
    "motorcycle": ("motorcycle", "motorbike", "moped", "motorcyclist"),
}
#: Training request phrasings: the steering objective's and more (none of the benchmark's phrasings).
GROUND_TEMPLATES: tuple[str, ...] = (*TRAIN_TEMPLATES,
    "Can you brighten the {obj}?", "Enhance the {obj}, please.", "Put the {obj} in the spotlight.",
    "I need the {obj} to be visible.", "Make sure the {obj} is easy to see.", "Boost the contrast of the {obj}.",
    "Accentuate the {obj}.", "Give the {obj} more emphasis.", "The {obj} is the key target.", "Look at the {obj}.",
    "Mark out the {obj}.", "Increase the visibility of the {obj}.", "Our target is the {obj}.",
    "Please highlight the {obj}.", "It is the {obj} that I care about.", "Focus on the {obj}.")
#: Training words for columns, rows and corners of the 3x3 grid (the benchmark's words are in assets/steering).
COLUMN_WORDS: dict[int, tuple[str, ...]] = {
    0: ("on the left", "on the left side", "to the left", "at the left", "towards the left", "in the left part"),
    1: ("in the centre", "in the middle", "in the center", "at the centre", "in the central part"),
    2: ("on the right", "on the right side", "to the right", "at the right", "towards the right",
        "in the right part"),
}
ROW_WORDS: dict[int, tuple[str, ...]] = {
    0: ("at the top", "in the upper part", "at the top of the frame"),
    2: ("at the bottom", "in the lower part", "at the bottom of the frame"),
}
CORNER_WORDS: dict[tuple[int, int], tuple[str, ...]] = {
    (0, 0): ("at the top left", "in the upper left"), (2, 0): ("at the top right", "in the upper right"),
    (0, 2): ("at the bottom left", "in the lower left"), (2, 2): ("at the bottom right", "in the lower right"),
}
SIZE_WORDS: dict[int, tuple[str, ...]] = {0: ("large", "big", "larger", "bigger"), 1: ("small", "little", "smaller")}
#: Sentences that describe an object without asking for it (they name nothing).
DESCRIPTIONS: tuple[str, ...] = ("There is a {obj}.", "A {obj} can be seen.", "The image contains a {obj}.",
                                 "It shows a {obj}.", "We can see a {obj}.", "A {obj} is visible.")
#: Above this the brightened target is compressed smoothly towards :data:`WHITE_KNEE`.
SOFT_START = 0.75


@dataclass(frozen=True)
class Reference:
    """What a request phrase points at: a class, and optionally a column, a row (0-2) and a size (0 largest,
    1 smallest). A column alone names that column in any row; a row alone names its centre ("the car at the
    bottom", as the app names the bottom centre)."""

    label: str
    column: int | None = None
    row: int | None = None
    size: int | None = None

    def names(self, region: Region, frame: tuple[float, float], sizes: tuple[float, float]) -> bool:
        """Whether ``region`` (in a frame of (width, height), its class's largest and smallest areas ``sizes``) is
        one this reference names."""
        if region.label != self.label:
            return False
        column, row = region.position(*frame)
        area = (region.box[2] - region.box[0]) * (region.box[3] - region.box[1])
        if self.size is not None and area != sizes[self.size]:
            return False
        if self.column is None and self.row is not None:  # a row alone is its centre, as the app names positions
            return column == 1 and row == self.row
        return (self.column is None or column == self.column) and (self.row is None or row == self.row)


def _class_areas(regions: Sequence[Region]) -> dict[str, tuple[float, float]]:
    areas: dict[str, list[float]] = {}
    for r in regions:
        areas.setdefault(r.label, []).append((r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))
    return {label: (max(a), min(a)) for label, a in areas.items()}


def named_regions(references: Sequence[Reference], regions: Sequence[Region], frame: tuple[float, float]) -> list[bool]:
    """Per region, whether any of ``references`` names it."""
    areas = _class_areas(regions)
    return [any(ref.names(r, frame, areas[r.label]) for ref in references) for r in regions]


def reference_words(reference: Reference, count: int, rng: np.random.Generator) -> str:
    """The words of a reference in training wording: "large truck on the left", "people at the top"."""
    word = str(rng.choice(GROUND_WORDS.get(reference.label, (reference.label,))))
    if count > 1 and reference.size is None and rng.random() < 0.5:
        word = plural(word)
    if reference.size is not None:
        word = f"{rng.choice(SIZE_WORDS[reference.size])} {word}"
    if reference.column is not None and reference.row is not None and (reference.column, reference.row) in CORNER_WORDS:
        return f"{word} {rng.choice(CORNER_WORDS[(reference.column, reference.row)])}"
    if reference.column is not None:
        return f"{word} {rng.choice(COLUMN_WORDS[reference.column])}"
    if reference.row is not None:
        return f"{word} {rng.choice(ROW_WORDS[reference.row])}"
    return word


def draw_reference(regions: Sequence[Region], frame: tuple[float, float], rng: np.random.Generator) -> Reference:
    """A reference to a random region of the frame: its class, with its column, row, corner, size or nothing."""
    target = regions[int(rng.integers(len(regions)))]
    column, row = target.position(*frame)
    same = [r for r in regions if r.label == target.label]
    areas = _class_areas(regions)[target.label]
    area = (target.box[2] - target.box[0]) * (target.box[3] - target.box[1])
    choice = rng.random()
    if len(same) > 1 and areas[0] > 1.5 * areas[1] and area in areas and choice < 0.15:
        return Reference(target.label, size=0 if area == areas[0] else 1)
    if choice < 0.3 and row != 1 and column != 1:
        return Reference(target.label, column=column, row=row)
    if choice < 0.75:
        return Reference(target.label, column=column)
    if choice < 0.85 and row != 1 and column == 1:
        return Reference(target.label, row=row)
    return Reference(target.label)


def absent_reference(regions: Sequence[Region], frame: tuple[float, float], rng: np.random.Generator) -> Reference:
    """A reference that names nothing in the frame: a class not in it, or a present class where none of it is."""
    present = {r.label for r in regions}
    if regions and rng.random() < 0.5:
        label = regions[int(rng.integers(len(regions)))].label
        taken = {r.position(*frame)[0] for r in regions if r.label == label}
        free = [c for c in range(3) if c not in taken]
        if free:
            return Reference(label, column=int(rng.choice(free)))
    absent = [label for label in (*ABSENT_LABELS, *GROUND_WORDS) if label not in present]
    return Reference(str(rng.choice(absent)), column=int(rng.integers(3)) if rng.random() < 0.6 else None)


@dataclass
class MatchExample:
    """Captions of one frame with a phrase (or none) and which of its regions the phrase names."""

    captions: tuple[str, str]
    regions: list[Region]
    frame: tuple[float, float]
    named: list[bool]


def _with_sentence(captions: tuple[str, str], sentence: str, rng: np.random.Generator,
                   replace_share: float = 0.15) -> tuple[str, str]:
    which = int(rng.integers(2))
    parts = list(captions)
    parts[which] = sentence if rng.random() < replace_share else f"{parts[which]} {sentence}".strip()
    return parts[0], parts[1]


def frame_regions(frame: Frame) -> list[Region]:
    """A training frame's merged detections as regions."""
    return [Region(label, tuple(float(v) for v in box)) for label, box in frame.objects]  # type: ignore[arg-type]


def match_examples(frame: Frame, rng: np.random.Generator, count: int = 2) -> list[MatchExample]:
    """``count`` counterfactual examples of one frame (each names another reference), plus one that names nothing
    (absent, descriptive, neutral or the drafts alone)."""
    regions = frame_regions(frame)
    size = (float(frame.y_a.shape[1]), float(frame.y_a.shape[0]))
    examples = []
    for _ in range(count if regions else 0):
        references = [draw_reference(regions, size, rng) for _ in range(1 if rng.random() < 0.85 else 2)]
        named = named_regions(references, regions, size)
        counts = [sum(1 for r in regions if ref.names(r, size, _class_areas(regions)[r.label])) for ref in references]
        objects = [reference_words(ref, n, rng) for ref, n in zip(references, counts)]
        template = str(rng.choice(GROUND_TEMPLATES))
        phrase = template.format(obj=" and the ".join(objects))
        examples.append(MatchExample(_with_sentence(frame.captions, phrase, rng), regions, size, named))
    kind = rng.random()
    if kind < 0.5:
        phrase = str(rng.choice(GROUND_TEMPLATES)).format(obj=reference_words(absent_reference(regions, size, rng), 1,
                                                                              rng))
        captions = _with_sentence(frame.captions, phrase, rng)
    elif kind < 0.75 and regions:
        described = draw_reference(regions, size, rng)
        captions = _with_sentence(frame.captions, str(rng.choice(DESCRIPTIONS)).format(
            obj=reference_words(described, 1, rng)), rng, 0.0)
    elif kind < 0.9:
        captions = _with_sentence(frame.captions, str(rng.choice(NEUTRAL_SENTENCES)), rng, 0.0)
    else:
        captions = frame.captions
    examples.append(MatchExample(captions, regions, size, [False] * len(regions)))
    return examples


@dataclass
class GroundSettings:
    """A region-grounding run (``tgif train --config configs/ivf_ground.yaml``; saved as ``settings.json``).

    Attributes:
        objective: always ``"ground"``.
        init: the checkpoint whose trunk is kept (its text grounding head, if any, is dropped).
        out_dir: run folder (``last.safetensors``, ``matcher_log.csv``, ``emphasis_log.csv``).
        match_frames: frames drawn for the matcher (each gives 2 counterfactual examples and one naming nothing).
        match_steps, match_batch, match_lr: the matcher's training.
        pool: crops the emphasis trains on (the trunk fuses each once).
        steps, batch_size, crop, lr: the emphasis's training (batch = crops; each crop is named under two
            counterfactual subsets of its objects).
        gain: contrast amplification of the named boxes' target (1 doubles the box-ring contrast).
        w_in, w_unnamed: loss weights: named boxes to the target; unnamed objects' boxes to the frozen output.
        max_tokens: tokens read per caption.
        seed: random seed.
    """

    init: str
    out_dir: str
    objective: str = "ground"
    task: str = "ivf"
    match_frames: int = 2400
    match_steps: int = 1500
    match_batch: int = 48
    match_lr: float = 2e-3
    pool: int = 1200
    steps: int = 3000
    batch_size: int = 8
    crop: int = 192
    lr: float = 2e-3
    gain: float = 1.0
    w_in: float = 1.0
    w_unnamed: float = 1.0
    max_tokens: int = 96
    seed: int = 0
    datasets: dict[str, float] = field(default_factory=lambda: {"roadscene_train": 1.0, "msrs_train": 2.0,
                                                                "msrs_train_128": 0.15})


def grounding_student(init: str) -> tuple[TGIFNet, Any]:
    """The network of ``init`` with a new region-grounding head instead of any text grounding head; every layer of
    the trunk frozen, the head trainable. Returns (student, the checkpoint's metadata)."""
    teacher, metadata = load_tgif(init)
    config = TGIFConfig.from_dict({**teacher.config.to_dict(), "grounding": False, "region_grounding": True})
    student = TGIFNet(config)
    kept = {k: v for k, v in teacher.state_dict().items() if not k.startswith("grounding.")}
    missing, unexpected = student.load_state_dict(kept, strict=False)
    if unexpected or [k for k in missing if not k.startswith("region_grounding.")]:
        raise RuntimeError(f"{init} does not fit the region-grounding network: missing {missing}")
    student.requires_grad_(False)
    student.region_grounding.requires_grad_(True)
    return student, metadata


def _batch_regions(examples: Sequence[MatchExample], table: LabelTable) -> RegionTokens:
    return region_tokens([e.regions for e in examples], [e.frame for e in examples], table)


def matcher_data(frames: Sequence[Frame], encoder: Any, settings: GroundSettings,
                 progress: bool = True) -> tuple[list[MatchExample], CaptionTokens]:
    """The matcher's examples (three per drawn frame: two counterfactual namings and one naming nothing, in that
    order) and their captions' token features, all encoded up front."""
    rng = np.random.default_rng(settings.seed)
    steerable = [f for f in frames if f.objects]
    picks = rng.choice(len(steerable), size=settings.match_frames, replace=True)
    examples = [e for i in picks for e in match_examples(steerable[int(i)], rng)]
    tokens = CaptionTokens(encoder, settings.max_tokens, cache_limit=len(examples) * 2 + 16)
    for start in tqdm(range(0, len(examples), 64), desc="encode captions", unit="batch", disable=not progress):
        tokens.batch([e.captions for e in examples[start:start + 64]], cache=True)
    return examples, tokens


def train_matcher(student: TGIFNet, examples: Sequence[MatchExample], tokens: CaptionTokens, encoder: Any,
                  settings: GroundSettings, out: Path, progress: bool = True) -> dict[str, float]:
    """Stage 1 (module docstring): train the head's matcher on captions alone (:func:`matcher_data`); returns the
    last 100 steps' mean loss and accuracy (a region counts as named at probability >= 0.5)."""
    rng = np.random.default_rng(settings.seed + 2)
    head = student.region_grounding
    table = LabelTable(encoder.encode)
    groups_total = len(examples) // 3
    matcher = [p for n, p in head.named_parameters() if not n.startswith("emphasis.")]
    optimizer = torch.optim.Adam(matcher, lr=settings.match_lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.match_steps, settings.match_lr / 20)
    log = out / "matcher_log.csv"
    log.unlink(missing_ok=True)
    recent: list[tuple[float, float]] = []
    for step in tqdm(range(settings.match_steps), desc="matcher", unit="step", disable=not progress):
        # counterfactual examples of a frame are consecutive: draw whole frames' groups
        groups = rng.choice(groups_total, size=max(1, settings.match_batch // 3), replace=False)
        batch = [e for g in groups for e in examples[3 * int(g):3 * int(g) + 3]]
        batch = [e for e in batch if e.regions]
        text, mask = tokens.batch([e.captions for e in batch], cache=True)
        regions = _batch_regions(batch, table)
        target = torch.zeros(regions.valid.shape)
        for i, e in enumerate(batch):
            target[i, : len(e.named)] = torch.tensor(e.named, dtype=torch.float32)
        terms = head.token_terms(text, mask)
        probabilities = head.match(text, mask, regions, terms)
        valid = regions.valid.float()
        bce = F.binary_cross_entropy(probabilities.clamp(1e-5, 1 - 1e-5), target, reduction="none")
        positive = target * valid
        loss = (bce * positive).sum() / positive.sum().clamp_min(1) + (bce * (valid - positive)).sum() / (
            valid - positive).sum().clamp_min(1)
        labels = token_labels(encoder, [e.captions for e in batch], settings.max_tokens, mask.shape[1])
        if labels is not None:  # what each token says teaches the token heads directly
            loss = loss + F.binary_cross_entropy_with_logits(terms["sentence_end"][mask], labels["end"][mask])
            for key in ("column", "row", "size"):
                loss = loss + F.nll_loss(torch.log(terms[key][mask].clamp_min(1e-6)), labels[key][mask])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            correct = (((probabilities >= 0.5).float() == target).float() * valid).sum() / valid.sum()
        recent = (recent + [(float(loss.detach()), float(correct))])[-100:]
        append_csv(log, {"step": step + 1, "loss": f"{float(loss.detach()):.5f}", "accuracy": f"{float(correct):.4f}"})
    return {"loss": float(np.mean([r[0] for r in recent])), "accuracy": float(np.mean([r[1] for r in recent]))}


#: Training labels of the token heads: the pieces (lower case, punctuation stripped) that say a column, row or size.
COLUMN_PIECES = {"left": 0, "centre": 1, "center": 1, "middle": 1, "central": 1, "right": 2}
ROW_PIECES = {"top": 0, "upper": 0, "bottom": 2, "lower": 2}
SIZE_PIECES = {"large": 0, "big": 0, "larger": 0, "bigger": 0, "small": 1, "little": 1, "smaller": 1}


def token_labels(encoder: Any, pairs: Sequence[tuple[str, str]], max_tokens: int,
                 length: int) -> dict[str, torch.Tensor] | None:
    """Per token of a batch laid out as :class:`CaptionTokens` lays it out (each caption cut to ``max_tokens``, the
    two concatenated): ``end`` (B, length) float, 1 on special tokens and sentence punctuation; ``column``,
    ``row``, ``size`` (B, length) long, the option a position or size word says, else the last ("none"). These
    train the head's token heads (training labels only: at inference the heads read features). None when the
    encoder cannot give its tokens' text."""
    labels = {"end": torch.zeros(len(pairs), length), "column": torch.full((len(pairs), length), 3),
              "row": torch.full((len(pairs), length), 3), "size": torch.full((len(pairs), length), 2)}
    for row, pair in enumerate(pairs):
        pieces: list[str | None] = []
        for caption in pair:
            found = encoder.token_pieces(caption)
            if found is None:
                return None
            pieces.extend(found[:max_tokens])
        for index, piece in enumerate(pieces[:length]):
            word = (piece or "").lower().strip(".,;:!?")
            labels["end"][row, index] = float(piece is None or (piece or " ")[-1] in ".!?;")
            for key, table in (("column", COLUMN_PIECES), ("row", ROW_PIECES), ("size", SIZE_PIECES)):
                if word in table:
                    labels[key][row, index] = table[word]
    return labels


def bright_target(teacher: torch.Tensor, box: Sequence[int], gain: float) -> torch.Tensor:
    """The named target of one (1, H, W) frozen output inside ``box``: pixels on the object's side of the ring mean
    move away from it by ``gain`` times their distance; brightened values above :data:`SOFT_START` are compressed
    smoothly so that they stay below :data:`WHITE_KNEE`, darkened ones below ``1 - SOFT_START`` so that they stay
    above :data:`BLACK_KNEE` (never past the frozen output itself). Returns the whole (1, H, W) target (the frozen
    output outside the box)."""
    target = teacher.clone()
    x1, y1, x2, y2 = box
    inner, ring = box_contrast(teacher, box)
    sign = 1.0 if float(inner - ring) >= 0 else -1.0
    patch = teacher[..., y1:y2, x1:x2]
    moved = patch + gain * sign * torch.relu(sign * (patch - ring[..., None, None]))
    if sign > 0:
        span = WHITE_KNEE - SOFT_START
        soft = SOFT_START + span * torch.tanh((moved - SOFT_START).clamp_min(0) / span)
        target[..., y1:y2, x1:x2] = torch.maximum(patch, torch.where(moved > SOFT_START, soft, moved))
    else:
        start = 1.0 - SOFT_START
        span = start - BLACK_KNEE
        soft = start - span * torch.tanh((start - moved).clamp_min(0) / span)
        target[..., y1:y2, x1:x2] = torch.minimum(patch, torch.where(moved < start, soft, moved))
    return target


def _box_masks(boxes: Sequence[Sequence[int]], size: tuple[int, int]) -> torch.Tensor:
    mask = torch.zeros(size)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = 1.0
    return mask


def emphasis_targets(teacher: torch.Tensor, named: Sequence[Sequence[Sequence[int]]],
                     unnamed: Sequence[Sequence[Sequence[int]]], gain: float
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """For (B, 1, S, S) frozen outputs and each sample's named and unnamed boxes: the target (module docstring),
    the named boxes' mask and the unnamed boxes' mask outside the named ones, each (B, 1, S, S)."""
    size = tuple(teacher.shape[-2:])
    inside = torch.stack([_box_masks(b, size) for b in named])[:, None]
    others = torch.stack([_box_masks(b, size) for b in unnamed])[:, None] * (1 - inside)
    target = torch.stack([teacher[i] if not named[i] else _targets(teacher[i], named[i], gain)
                          for i in range(len(named))])
    return target, inside, others


def emphasis_loss(fused: torch.Tensor, teacher: torch.Tensor, target: torch.Tensor, inside: torch.Tensor,
                  others: torch.Tensor, settings: GroundSettings) -> dict[str, torch.Tensor]:
    """Loss of (B, 1, S, S) outputs: the named boxes (``inside``) to ``target``, the unnamed ones (``others``) to
    the frozen output (:func:`emphasis_targets`)."""
    terms = {"in": _masked_mean((fused - target).abs(), inside),
             "unnamed": _masked_mean((fused - teacher).abs(), others)}
    terms["total"] = settings.w_in * terms["in"] + settings.w_unnamed * terms["unnamed"]
    return terms


def _targets(teacher: torch.Tensor, boxes: Sequence[Sequence[int]], gain: float) -> torch.Tensor:
    target = teacher
    for box in boxes:
        target = torch.where(_box_masks([box], tuple(teacher.shape[-2:])).bool()[None],
                             bright_target(teacher, box, gain), target)
    return target


def _crop_with_objects(frame: Frame, crop: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list]:
    """A crop (two uint8 planes) around a random object, with the objects at least half inside it."""
    planes = [frame.y_a, frame.y_b]
    height, width = planes[0].shape
    objects = frame.objects
    pad_h, pad_w = max(0, crop - height), max(0, crop - width)
    if pad_h or pad_w:
        widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
        planes = [np.pad(p, widths, mode="reflect") for p in planes]
        objects = [(label, (b[0] + pad_w // 2, b[1] + pad_h // 2, b[2] + pad_w // 2, b[3] + pad_h // 2))
                   for label, b in objects]
        height, width = planes[0].shape
    x1, y1, x2, y2 = objects[int(rng.integers(len(objects)))][1]
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    top = int(np.clip(rng.uniform(cy - crop * 0.8, cy - crop * 0.2), 0, height - crop))
    left = int(np.clip(rng.uniform(cx - crop * 0.8, cx - crop * 0.2), 0, width - crop))
    present = crop_objects(objects, top, left, (crop, crop))
    return planes[0][top:top + crop, left:left + crop], planes[1][top:top + crop, left:left + crop], present


@dataclass
class PoolCrop:
    """One crop the emphasis trains on: the frozen trunk's fusion (1, S, S) and the objects in it (integer boxes)."""

    teacher: torch.Tensor
    objects: list[tuple[str, tuple[int, int, int, int]]]


@torch.no_grad()
def emphasis_pool(student: TGIFNet, frames: Sequence[Frame], encoder: Any, settings: GroundSettings,
                  progress: bool = True) -> list[PoolCrop]:
    """``settings.pool`` crops around objects of ``frames`` (frames with more objects drawn more often), each
    fused once by the frozen trunk under its frame's drafted captions."""
    rng = np.random.default_rng(settings.seed + 1)
    tokens = CaptionTokens(encoder, settings.max_tokens)
    usable = [f for f in frames if f.objects]
    weights = np.array([f.weight * (1.0 + min(len(f.objects), 4)) for f in usable])
    weights /= weights.sum()
    student.eval()
    pool: list[PoolCrop] = []
    bar = tqdm(total=settings.pool, desc="emphasis crops", unit="crop", disable=not progress)
    while len(pool) < settings.pool:
        planes, objects, captions = [], [], []
        while len(planes) < min(8, settings.pool - len(pool)):
            frame = usable[int(rng.choice(len(usable), p=weights))]
            a, b, present = _crop_with_objects(frame, settings.crop, rng)
            if present:
                planes.append((a, b))
                objects.append(present)
                captions.append(frame.captions)
        y_a = torch.stack([torch.from_numpy(np.ascontiguousarray(p[0])).float().div(255)[None] for p in planes])
        y_b = torch.stack([torch.from_numpy(np.ascontiguousarray(p[1])).float().div(255)[None] for p in planes])
        features = student.encode_sources(y_a, y_b)
        text, mask = tokens.batch(captions)
        fused, _ = student.ground_and_decode(features, student.guide_sources(features, text, mask), text, mask)
        pool += [PoolCrop(fused[i], present) for i, present in enumerate(objects)]
        bar.update(len(planes))
    bar.close()
    return pool


def train_emphasis(student: TGIFNet, pool: Sequence[PoolCrop], encoder: Any, settings: GroundSettings,
                   out: Path, progress: bool = True) -> dict[str, float]:
    """Stage 2 (module docstring): train the head's emphasis on :func:`emphasis_pool` crops with the named boxes
    imposed; returns the last 100 steps' mean terms (``delta_in`` / ``delta_unnamed``: grey-level change inside the
    named boxes / in the unnamed objects' boxes; ``gain``: median relative change of the named boxes' contrast to
    their rings, and ``target_gain`` the target's)."""
    rng = np.random.default_rng(settings.seed + 3)
    head = student.region_grounding
    table = LabelTable(encoder.encode)
    optimizer = torch.optim.Adam(head.emphasis.parameters(), lr=settings.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, settings.steps, settings.lr / 10)
    log = out / "emphasis_log.csv"
    log.unlink(missing_ok=True)
    recent: list[dict[str, float]] = []
    size = (settings.crop, settings.crop)
    bar = tqdm(range(settings.steps), desc="emphasis", unit="step", disable=not progress)
    for step in bar:
        teachers, named, unnamed, sets, flags = [], [], [], [], []
        for index in rng.choice(len(pool), size=settings.batch_size, replace=False):
            crop = pool[int(index)]
            for _ in range(2):  # counterfactual: two subsets of the crop's objects named
                chosen = rng.random(len(crop.objects)) < 0.5
                if not chosen.any():
                    chosen[int(rng.integers(len(crop.objects)))] = True
                teachers.append(crop.teacher)
                named.append([box for (_, box), c in zip(crop.objects, chosen) if c])
                unnamed.append([box for (_, box), c in zip(crop.objects, chosen) if not c])
                sets.append([Region(label, tuple(float(v) for v in box)) for label, box in crop.objects])
                flags.append(chosen.astype(np.float32))
        teacher = torch.stack(teachers)
        regions = region_tokens(sets, [size] * len(sets), table)
        imposed = torch.zeros(regions.valid.shape)
        for i, chosen in enumerate(flags):
            imposed[i, : len(chosen)] = torch.from_numpy(chosen)
        fused, _ = student.emphasise(teacher, None, None, regions, imposed)
        target, inside, others = emphasis_targets(teacher, named, unnamed, settings.gain)
        terms = emphasis_loss(fused, teacher, target, inside, others, settings)
        optimizer.zero_grad(set_to_none=True)
        terms["total"].backward()
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            change = (fused - teacher).abs() * 255
            row = {k: float(v) for k, v in terms.items()}
            row["delta_in"] = float(_masked_mean(change, inside))
            row["delta_unnamed"] = float(_masked_mean(change, others))
            gains, target_gains = [], []
            for i, boxes in enumerate(named):
                for box in boxes:
                    before = float(torch.sub(*box_contrast(teacher[i], box)).abs())
                    if before > 2 / 255:
                        gains.append(float(torch.sub(*box_contrast(fused[i].detach(), box)).abs()) / before - 1)
                        target_gains.append(float(torch.sub(*box_contrast(target[i], box)).abs()) / before - 1)
            row["gain"] = float(np.median(gains)) if gains else 0.0
            row["target_gain"] = float(np.median(target_gains)) if target_gains else 0.0
        recent = (recent + [row])[-100:]
        append_csv(log, {"step": step + 1, **{k: f"{v:.5f}" for k, v in row.items()}})
        bar.set_postfix(d_in=f"{row['delta_in']:.1f}", gain=f"{row['gain']:+.2f}")
    return {k: float(np.mean([r[k] for r in recent])) for k in recent[0]} if recent else {}


def train_grounding(settings: GroundSettings, progress: bool = True, frames: list[Frame] | None = None,
                    text_encoder: Any = None) -> Path:
    """Both stages from ``settings.init``; writes ``last.safetensors`` in the run folder and returns its path.
    ``frames`` and ``text_encoder`` replace the shared training frames and the checkpoint's encoder (tests)."""
    from tgif import settings as tgif_settings
    from tgif.errors import DatasetError
    from tgif.pipeline import text_encoder_for
    from tgif.train.pack import DEFAULT_CAPTIONS_DIR
    from tgif.train.steer import load_frames

    torch.manual_seed(settings.seed)
    out = Path(settings.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))
    student, metadata = grounding_student(settings.init)
    encoder = text_encoder if text_encoder is not None else text_encoder_for(metadata.text_encoder)
    if frames is None:
        shared = tgif_settings.shared_dir()
        if shared is None or not (shared / "train").is_dir():
            raise DatasetError("shared/train not found; set TGIF_SHARED")
        frames = load_frames(shared / "train", DEFAULT_CAPTIONS_DIR, settings.datasets, progress)
    start = time.perf_counter()
    examples, tokens = matcher_data(frames, encoder, settings, progress)
    matcher = train_matcher(student, examples, tokens, encoder, settings, out, progress)
    logger.info("matcher: %s (%.0f s)", matcher, time.perf_counter() - start)
    emphasis = train_emphasis(student, emphasis_pool(student, frames, encoder, settings, progress), encoder,
                              settings, out, progress)
    logger.info("emphasis: %s (%.0f s)", emphasis, time.perf_counter() - start)
    extra = {**{k: v for k, v in metadata.extra.items() if k != "steer_settings"}, "objective": "ground",
             "ground_settings": asdict(settings), "base_checkpoint": Path(settings.init).name,
             "max_tokens": settings.max_tokens, "matcher": matcher,
             "emphasis": {k: round(v, 4) for k, v in emphasis.items()},
             "train_seconds": round(time.perf_counter() - start, 1)}
    return save_tgif(out / "last.safetensors", student, metadata.text_encoder, metadata.task, metadata.steps, extra)


def load_ground_settings(values: dict[str, Any]) -> GroundSettings:
    """Build :class:`GroundSettings` from a settings file's values; unknown keys are an error."""
    unknown = sorted(set(values) - set(GroundSettings.__dataclass_fields__))
    if unknown:
        raise ValueError(f"unknown grounding settings {unknown}; known: {sorted(GroundSettings.__dataclass_fields__)}")
    return GroundSettings(**values)
