"""Region grounding: which of the pair's detected objects a caption points at, and an emphasis there only.

A caption that names one object of several ("highlight the person on the left" with people on the left and
on the right) must change that object and leave the others as they were. A pixel-level relevance
(:mod:`tgif.model.text_grounding`) learns "warm things" rather than "this thing". Here the network takes the
pipeline's detected objects as *region tokens*, as public methods ground text with a detector (Text-DiFuse,
``shared/notes/steering.md``), and matches the caption's words to them:

1. Each region is described by its class, its place in the frame (column and row of a 3x3 grid, as the app
   names positions) and whether it is the largest or smallest of its class.
2. Which class a caption token means is read by embedding similarity: the cosine of the token's features to
   the features of every class name of the detector's vocabulary (:data:`VOCABULARY`, each name encoded alone
   by the same frozen text encoder), a softmax over them with a learned temperature and a learned "no class"
   option. So a word never seen in training ("sedan", "guy") means "car", "person" through the encoder's own
   features, not through a word list. Small learned heads read, from each token's own features, which column,
   row or size it says (or none), whether it asks for something ("highlight", "matters": a *request*, unlike
   "it shows a car": read from the sentence's mean token feature, the encoder's own sentence embedding) and
   whether it ends a sentence. A noun takes the position words within its phrase (from :data:`PHRASE_BEFORE`
   tokens before it to :data:`PHRASE_AFTER` after, in its sentence) and its sentence's request. A token names
   region r with probability
   ``p(t, r) = class(t, r) * column(t, r) * row(t, r) * size(t, r) * request(t)`` and the region is named
   when any token names it: ``p_r = 1 - prod_t (1 - p(t, r))`` (noisy-OR).
3. Each region with match probability p gets ``gate(p) = clamp((p - 0.5) / 0.25, 0, 1)`` of the emphasis,
   which acts on the fused image inside that region's box only (:class:`RegionEmphasis`): a small learned
   tone head reads the box's pixels, their difference to the mean of the ring around the box and the box's
   feathered mask, and changes each pixel within ``[min(pixel, BLACK_KNEE), max(pixel, WHITE_KNEE)]`` (so
   nothing new burns to white or is crushed to black). A region the caption does not name gets exactly no emphasis, and
   no region named means the trunk's own fusion. Acting on the decoded image, not on the decoder's input,
   keeps the decoder's spatial mixing from carrying a named object's emphasis to its neighbours, and lets a
   caption that only names objects reuse the decoded image.

The matcher reads only text features and region descriptors, so it is trained on captions alone
(:mod:`tgif.train.grounding`); the emphasis is trained on the trunk's fused images with the named boxes
imposed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

#: Columns and rows of the 3x3 grid positions are named on (:func:`tgif.captions.wording.position_phrase`).
COLUMNS = ("left", "centre", "right")
ROWS = ("top", "middle", "bottom")
#: The detector's classes (COCO, as YOLO names them): the vocabulary a caption word is classified into.
VOCABULARY: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)
#: A noun's phrase: the tokens from this many before it to this many after it (in its sentence) say where it is.
PHRASE_BEFORE = 2
PHRASE_AFTER = 6
#: The emphasis never brightens a pixel past this (about 242 grey levels) unless it already is brighter ...
WHITE_KNEE = 0.95
#: ... nor darkens one past this (about 13 grey levels) unless it already is darker.
BLACK_KNEE = 0.05
#: The ring a box's contrast is measured against: the box grown by this share of its width and height, less it.
RING_DILATION = 0.5
#: A region whose match probability is below this gets no emphasis, one at or above ``MATCH_FULL`` all of it
#: (see :func:`match_gate`).
MATCH_THRESHOLD = 0.5
MATCH_FULL = 0.75


@dataclass(frozen=True)
class Region:
    """One detected object as the grounding reads it: class name, box (x1, y1, x2, y2) in pixels of the frame."""

    label: str
    box: tuple[float, float, float, float]

    def position(self, width: float, height: float) -> tuple[int, int]:
        """(column, row) of the box centre on the 3x3 grid over a width x height frame."""
        x1, y1, x2, y2 = self.box
        column = min(2, max(0, int(3 * (x1 + x2) / 2 / width))) if width > 0 else 1
        row = min(2, max(0, int(3 * (y1 + y2) / 2 / height))) if height > 0 else 1
        return column, row

    def describe(self, width: float, height: float) -> str:
        """ "person on the left", as the app's chips name objects."""
        from tgif.captions.wording import part_phrase

        column, row = self.position(width, height)
        return f"{self.label} {part_phrase(ROWS[row], COLUMNS[column])}"


@dataclass
class RegionTokens:
    """A batch of region sets as the network reads them (R regions per sample, padded).

    Attributes:
        vocabulary: (C, D) text-encoder features of the class names (:func:`label_table`).
        labels: (B, R) long, each region's class as an index into ``vocabulary``.
        boxes: (B, R, 4) boxes in pixels of the network input (x1, y1, x2, y2).
        columns, rows: (B, R) long, grid column and row of each box centre in the whole frame.
        sizes: (B, R, 2) float, 1 where the region is the largest (index 0) / smallest (1) of its class.
        valid: (B, R) bool, False on padding.
        names: per sample, each region's description ("person on the left"), for display.
    """

    vocabulary: torch.Tensor
    labels: torch.Tensor
    boxes: torch.Tensor
    columns: torch.Tensor
    rows: torch.Tensor
    sizes: torch.Tensor
    valid: torch.Tensor
    names: list[list[str]]

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RegionTokens:
        """On ``device`` (label features and boxes in ``dtype`` when given)."""
        return replace(self, vocabulary=self.vocabulary.to(device, dtype), labels=self.labels.to(device),
                       boxes=self.boxes.to(device, dtype), columns=self.columns.to(device), rows=self.rows.to(device),
                       sizes=self.sizes.to(device, dtype), valid=self.valid.to(device))


def region_tokens(sets: Sequence[Sequence[Region]], frames: Sequence[tuple[float, float]],
                  vocabulary: LabelTable) -> RegionTokens:
    """Batch region sets: ``sets[b]`` the regions of sample b in a frame of ``frames[b]`` = (width, height), their
    boxes in that frame's pixels; ``vocabulary`` the class names' features (:class:`LabelTable`).

    Raises:
        ValueError: a label outside the vocabulary, or ``sets`` and ``frames`` of different lengths.
    """
    if len(sets) != len(frames):
        raise ValueError(f"{len(sets)} region sets for {len(frames)} frames")
    count = max(1, max((len(s) for s in sets), default=0))
    batch = len(sets)
    labels = torch.zeros(batch, count, dtype=torch.long)
    boxes = torch.zeros(batch, count, 4)
    columns = torch.ones(batch, count, dtype=torch.long)
    rows = torch.ones(batch, count, dtype=torch.long)
    sizes = torch.zeros(batch, count, 2)
    valid = torch.zeros(batch, count, dtype=torch.bool)
    names: list[list[str]] = []
    for b, (regions, (width, height)) in enumerate(zip(sets, frames)):
        names.append([r.describe(width, height) for r in regions])
        areas: dict[str, list[float]] = {}
        for r in regions:
            areas.setdefault(r.label, []).append(_area(r.box))
        for i, r in enumerate(regions):
            labels[b, i] = vocabulary.index(r.label)
            boxes[b, i] = torch.tensor(r.box, dtype=torch.float32)
            columns[b, i], rows[b, i] = r.position(width, height)
            same = areas[r.label]
            sizes[b, i, 0] = float(_area(r.box) >= max(same))
            sizes[b, i, 1] = float(_area(r.box) <= min(same))
            valid[b, i] = True
    return RegionTokens(vocabulary.features, labels, boxes, columns, rows, sizes, valid, names)


def _area(box: Sequence[float]) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


def label_feature(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A class name's feature (D,) from its encoding alone (L, D) with mask (L,): the mean over its word pieces,
    without the encoder's first and last (special) tokens when it has more than two."""
    real = features[mask]
    return (real[1:-1] if real.shape[0] > 2 else real).mean(dim=0)


def match_gate(probability: torch.Tensor) -> torch.Tensor:
    """How much emphasis a region with match probability p gets: 0 up to :data:`MATCH_THRESHOLD` (an even chance
    changes nothing), rising linearly to 1 at :data:`MATCH_FULL`."""
    return ((probability - MATCH_THRESHOLD) / (MATCH_FULL - MATCH_THRESHOLD)).clamp(0.0, 1.0)


def pixel_box(box: Sequence[float], shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """A box (x1, y1, x2, y2) in pixels as integer bounds of the pixels whose centres lie in it (at least one),
    clipped to the (height, width) frame."""
    height, width = shape
    x1 = min(width - 1, max(0, math.floor(float(box[0]))))
    y1 = min(height - 1, max(0, math.floor(float(box[1]))))
    return x1, y1, max(x1 + 1, min(width, math.ceil(float(box[2])))), max(y1 + 1, min(height, math.ceil(float(box[3]))))


def grown_box(box: Sequence[float], shape: tuple[int, int],
              dilation: float = RING_DILATION) -> tuple[int, int, int, int]:
    """The box grown by ``dilation`` of its width and height (half on each side), as integer pixel bounds
    (floor / ceil) clipped to the (height, width) frame."""
    x1, y1, x2, y2 = box
    dx, dy = (x2 - x1) * dilation / 2, (y2 - y1) * dilation / 2
    height, width = shape
    return (max(0, math.floor(x1 - dx)), max(0, math.floor(y1 - dy)),
            min(width, math.ceil(x2 + dx)), min(height, math.ceil(y2 + dy)))


def ring_mean(image: torch.Tensor, box: tuple[int, int, int, int], dilation: float = RING_DILATION) -> torch.Tensor:
    """Mean of a (..., H, W) image over the ring around an integer ``box``: the box grown by ``dilation``
    (:func:`grown_box`) less the box; the box's mean when the ring is empty. Shape (...)."""
    x1, y1, x2, y2 = box
    gx1, gy1, gx2, gy2 = grown_box(box, tuple(image.shape[-2:]), dilation)
    inner = image[..., y1:y2, x1:x2].sum(dim=(-2, -1))
    count = (x2 - x1) * (y2 - y1)
    ring = (gx2 - gx1) * (gy2 - gy1) - count
    if ring <= 0:
        return inner / count
    return (image[..., gy1:gy2, gx1:gx2].sum(dim=(-2, -1)) - inner) / ring


class RegionEmphasis(nn.Module):
    """Brings named objects out of their surroundings in a fused image (module docstring, step 3).

    Per named region, inside its box only: a small convolutional head reads the box's pixels ``F``, ``F - m``
    (``m`` the mean of the ring around the box) and the box's mask (feathered over :attr:`feather` pixels at
    its edges, so the box leaves no seam) and gives a change per pixel, scaled by the region's gate and the
    mask; the result is clamped to ``[min(F, BLACK_KNEE), max(F, WHITE_KNEE)]``. So pixels outside the named
    boxes never change and nothing crosses :data:`WHITE_KNEE` or :data:`BLACK_KNEE` that was not already past
    it. Regions are applied one after another (overlapping boxes see the earlier ones' result). A new head
    changes nothing (its last layer is zero).

    Shapes: image (B, 1, H, W), boxes (B, R, 4) in pixels, gates (B, R) in [0, 1] -> (B, 1, H, W).
    """

    def __init__(self, hidden: int = 16, feather: int = 4) -> None:
        """A head of ``hidden`` channels; masks feathered over ``feather`` pixels inside each box's edges."""
        super().__init__()
        self.feather = feather
        self.net = nn.Sequential(nn.Conv2d(3, hidden, 3, padding=1), nn.GELU(),
                                 nn.Conv2d(hidden, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, 1, 1))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def mask(self, height: int, width: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(height, width) weight of a box's pixels: 1 inside, falling linearly to 1/(2 feather) at its edges."""
        def ramp(n: int) -> torch.Tensor:
            index = torch.arange(n, device=device, dtype=dtype)
            return ((torch.minimum(index, n - 1 - index) + 0.5) / max(self.feather, 1)).clamp(max=1.0)

        return ramp(height)[:, None] * ramp(width)[None, :]

    def forward(self, image: torch.Tensor, boxes: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Emphasise each region with a positive gate (class docstring)."""
        if image.ndim != 4 or image.shape[1] != 1:
            raise ValueError(f"image must be (B, 1, H, W), got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        planes = []
        for b in range(image.shape[0]):
            plane = image[b:b + 1]
            for r in torch.nonzero(gates[b] > 0).flatten().tolist():
                x1, y1, x2, y2 = pixel_box(boxes[b, r].tolist(), (height, width))
                patch = plane[..., y1:y2, x1:x2]
                mean = ring_mean(plane, (x1, y1, x2, y2))[..., None, None]
                weight = self.mask(y2 - y1, x2 - x1, image.device, image.dtype).expand_as(patch)
                change = self.net(torch.cat([patch, patch - mean, weight], dim=1))
                moved = torch.minimum(torch.maximum(patch + gates[b, r] * weight * change,
                                                    torch.clamp(patch, max=BLACK_KNEE)),
                                      torch.clamp(patch, min=WHITE_KNEE))
                inside = F.pad(torch.ones_like(moved), (x1, width - x2, y1, height - y2))
                plane = plane * (1.0 - inside) + F.pad(moved, (x1, width - x2, y1, height - y2))  # exact values
            planes.append(plane)
        return torch.cat(planes)


class RegionGrounding(nn.Module):
    """Matches caption tokens to region tokens and emphasises the named regions in the fused image (module
    docstring).

    Shapes: image (B, 1, H, W), tokens (B, L, D), mask (B, L) bool, regions with R regions
    -> (image', relevance (B, 1, H, W), probabilities (B, R)).
    """

    def __init__(self, text_dim: int, key_dim: int = 64) -> None:
        """Grounding on ``text_dim``-wide tokens."""
        super().__init__()
        self.norm_text = nn.LayerNorm(text_dim)
        hidden = 2 * key_dim
        self.reader = nn.Sequential(nn.Linear(text_dim, hidden), nn.GELU(), nn.Dropout(0.1))
        # what each token says of itself: column (left, centre, right, none), row (top, middle, bottom, none),
        # size (largest, smallest, none), request (1), sentence end (1)
        self.column = nn.Linear(hidden, 4)
        self.row = nn.Linear(hidden, 4)
        self.size = nn.Linear(hidden, 3)
        self.sentence_end = nn.Linear(hidden, 1)
        # whether a sentence asks for something, from its mean token feature (the encoder's sentence embedding)
        self.request = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, hidden), nn.GELU(), nn.Dropout(0.1),
                                     nn.Linear(hidden, 1))
        self.class_scale = nn.Parameter(torch.tensor(20.0))
        self.no_class = nn.Parameter(torch.tensor(10.0))
        self.emphasis = RegionEmphasis()

    def token_terms(self, tokens: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """What each token says: probabilities ``column`` (B, L, 4), ``row`` (B, L, 4), ``size`` (B, L, 3) of itself,
        ``request`` (B, L) of its sentence (from the sentence's mean token feature), the logit ``sentence_end``
        (B, L), its features at unit length ``unit`` (B, L, D), and ``mask`` as given."""
        read = self.reader(self.norm_text(tokens))
        sentence_end = self.sentence_end(read)[..., 0]
        _, sentence = self.reach(sentence_end, mask)
        pooled = (sentence.to(tokens.dtype) @ tokens) / sentence.sum(-1, keepdim=True).clamp_min(1).to(tokens.dtype)
        return {"column": torch.softmax(self.column(read), dim=-1), "row": torch.softmax(self.row(read), dim=-1),
                "size": torch.softmax(self.size(read), dim=-1), "request": torch.sigmoid(self.request(pooled))[..., 0],
                "sentence_end": sentence_end, "unit": F.normalize(tokens, dim=-1), "mask": mask}

    @staticmethod
    def reach(sentence_end: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, L) masks of what token t reads from token u: ``phrase`` (u in t's sentence, from
        :data:`PHRASE_BEFORE` before to :data:`PHRASE_AFTER` after) and ``sentence`` (u in t's sentence). A token
        whose end logit is positive closes its sentence (it belongs to the one it ends)."""
        ends = (sentence_end > 0) & mask
        sentence = torch.cumsum(ends.long(), dim=1) - ends.long()  # an end token stays in the sentence it ends
        same = (sentence[:, :, None] == sentence[:, None, :]) & mask[:, None, :] & mask[:, :, None]
        index = torch.arange(mask.shape[1], device=mask.device)
        offset = index[None, :] - index[:, None]  # u - t
        near = (offset >= -PHRASE_BEFORE) & (offset <= PHRASE_AFTER)
        return same & near[None], same

    def match(self, tokens: torch.Tensor, mask: torch.Tensor, regions: RegionTokens,
              terms: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """(B, R) probability that the caption names each region (0 on padding regions and without real tokens);
        ``terms``: :meth:`token_terms` when already computed."""
        terms = terms if terms is not None else self.token_terms(tokens, mask)
        log_p = self.mention_log_probability(terms, regions)  # (B, R, L)
        log_p = log_p.masked_fill(~mask[:, None, :], float("-inf"))
        # noisy-OR over tokens: 1 - prod(1 - p), in log space for the product
        none = torch.log1p(-log_p.exp().clamp(max=1.0 - 1e-6)).sum(dim=-1)
        return (1.0 - none.exp()) * regions.valid.to(none.dtype)

    def mention_log_probability(self, terms: dict[str, torch.Tensor], regions: RegionTokens) -> torch.Tensor:
        """(B, R, L) log-probability that token t names region r (module docstring, step 2)."""
        # which class each token means: softmax over the vocabulary's cosines and a "no class" option
        cosine = torch.einsum("bld,cd->blc", terms["unit"], F.normalize(regions.vocabulary, dim=-1))
        logits = torch.cat([self.class_scale * cosine, self.no_class.expand(*cosine.shape[:2], 1)], dim=-1)
        log_classes = F.log_softmax(logits, dim=-1)  # (B, L, C + 1)
        log_class = torch.gather(log_classes, 2, regions.labels[:, None, :].expand(-1, log_classes.shape[1], -1))
        log_class = log_class.transpose(1, 2)  # (B, R, L)
        phrase, _ = self.reach(terms["sentence_end"], terms["mask"])

        def said(options: torch.Tensor, index: torch.Tensor | None, fits: torch.Tensor | None) -> torch.Tensor:
            # (B, R, L): p(the phrase names the region's option) noisy-OR p(the phrase names none of the options)
            named = options[..., :-1][:, None] * phrase[..., None]  # (B, Lt, Lu, K)
            strongest = named.amax(dim=2)  # (B, Lt, K): the most any word of t's phrase says each option
            unsaid = torch.where(phrase, options[:, None, :, -1], torch.ones_like(named[..., 0])).amin(dim=2)
            if index is not None:
                chosen = torch.gather(strongest[:, None].expand(-1, index.shape[1], -1, -1), 3,
                                      index[:, :, None, None].expand(-1, -1, strongest.shape[1], 1))[..., 0]
            else:  # sizes: a region may be both the largest and the smallest of its class
                chosen = torch.einsum("blk,brk->brl", strongest, fits)
            free = unsaid[:, None, :].expand_as(chosen)
            return torch.log((chosen + free - chosen * free).clamp_min(1e-6))

        log_column = said(terms["column"], regions.columns, None)
        log_row = said(terms["row"], regions.rows, None)
        # as the app names positions (tgif.captions.wording.part_phrase), a row said without a column means that
        # row's centre ("the car at the bottom"), while a column alone means that column in any row
        no_column = 1.0 - (terms["column"][:, None, :, :-1] * phrase[..., None]).amax(dim=2).amax(dim=-1)  # (B, L)
        row_said = (terms["row"][:, None, :, :-1] * phrase[..., None]).amax(dim=2).amax(dim=-1)
        off_centre = (regions.columns != 1).to(no_column.dtype)[:, :, None]  # (B, R, 1)
        log_column = log_column + torch.log((1.0 - off_centre * (no_column * row_said)[:, None, :]).clamp_min(1e-6))
        log_size = said(terms["size"], None, regions.sizes)
        return log_class + log_column + log_row + log_size + torch.log(terms["request"].clamp_min(1e-6))[:, None, :]

    @staticmethod
    def relevance(probabilities: torch.Tensor, regions: RegionTokens, shape: tuple[int, int]) -> torch.Tensor:
        """(B, 1, H, W) relevance of an (H, W) image: each region's gated match over its box's pixels (as
        :func:`pixel_box` bounds them, the pixels the emphasis acts on), the largest where boxes overlap."""
        gates = match_gate(probabilities) * regions.valid.to(probabilities.dtype)
        relevance = gates.new_zeros(gates.shape[0], 1, *shape)
        for b, r in torch.nonzero(gates > 0).tolist():
            x1, y1, x2, y2 = pixel_box(regions.boxes[b, r].tolist(), shape)
            relevance[b, 0, y1:y2, x1:x2] = torch.clamp(relevance[b, 0, y1:y2, x1:x2], min=float(gates[b, r]))
        return relevance

    def forward(self, image: torch.Tensor, tokens: torch.Tensor | None, mask: torch.Tensor | None,
                regions: RegionTokens, probabilities: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Emphasise the regions the caption names in a (B, 1, H, W) fused image; returns (image', relevance,
        probabilities). ``probabilities``: the match imposed instead of read from ``tokens`` (training the
        emphasis)."""
        if probabilities is None:
            probabilities = self.match(tokens, mask, regions)
        gates = match_gate(probabilities) * regions.valid.to(probabilities.dtype)
        relevance = self.relevance(probabilities, regions, tuple(image.shape[-2:]))
        if not bool((gates > 0).any()):
            return image, relevance, probabilities
        return self.emphasis(image, regions.boxes.to(image.dtype), gates.to(image.dtype)), relevance, probabilities


class LabelTable:
    """The class names a caption word is classified into, with their text-encoder features.

    Args:
        encode: a text encoder's ``encode`` (list of strings -> (features (N, L, D), mask (N, L))).
        labels: the names (default :data:`VOCABULARY`); :meth:`index` adds one it has not seen.
    """

    def __init__(self, encode: Callable[[list[str]], tuple[torch.Tensor, torch.Tensor]],
                 labels: Sequence[str] = VOCABULARY) -> None:
        self._encode = encode
        self.labels: list[str] = []
        self.features = torch.zeros(0, 0)
        self.add(labels)

    def add(self, labels: Sequence[str]) -> None:
        """Encode the names not in the table yet, each alone (:func:`label_feature`)."""
        new = [label for label in dict.fromkeys(labels) if label not in self.labels]
        if not new:
            return
        features, mask = self._encode(new)
        rows = torch.stack([label_feature(features[i], mask[i]) for i in range(len(new))]).float()
        self.features = rows if not self.labels else torch.cat([self.features, rows])
        self.labels.extend(new)

    def index(self, label: str) -> int:
        """The row of ``label`` (encoded and added when new)."""
        if label not in self.labels:
            self.add([label])
        return self.labels.index(label)
