"""The steering benchmark behind ``tgif steer``: does naming an object in a caption bring it out, there only?

Per IVF pair of a dataset on which the detector found a person or a car (detections from the
dataset's caption file, merged over both sources; the highest-scoring such object is the one
named), the pair is fused with its drafted captions (*neutral*) and with a phrase naming the
object and its position appended to caption 1 (*named*), once per phrasing, each over the trunk of the
drafted captions, as the app fuses an edit (:meth:`tgif.session.PairSession.scene_captions`). What a
user would see:

- ``delta_in``: mean |F_named - F_neutral| inside the object's box, in grey levels (0-255);
- ``delta_out``: the same outside the box dilated by 50% (half on each side);
- ``locality``: delta_in / delta_out, delta_out floored at :data:`DELTA_FLOOR` (a change of a hundredth of a
  grey level is none on an 8-bit output; an emphasis that leaves the outside exactly as it was would otherwise
  give an unbounded ratio);
- ``contrast_gain``: relative change of the box's contrast to its ring (the dilated box less the
  box), ``(|C_named| - |C_neutral|) / max(|C_neutral|, 1 grey level)`` with ``C = mean_box - mean_ring``.

Two controls per pair change nothing that is there: a phrase naming an absent class and a sentence
naming nothing; their mean |ΔF| over the whole frame is reported (``absent``, ``nothing``).
Medians over pairs are the headline numbers. The phrasings default to hand-written ones that the
training never saw (:data:`tgif.captions.steering.HELD_OUT_TEMPLATES`); any file of ``{label}`` /
``{position}`` templates can replace them (:func:`tgif.captions.steering.read_phrasings`).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from tgif.captions.steering import HELD_OUT_TEMPLATES, add_phrase, box_position, highlight_phrase
from tgif.errors import DatasetError
from tgif.model.region_grounding import RING_DILATION, grown_box, pixel_box  # the grown box bounds "inside + ring"

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

#: Classes the benchmark names (the ones a user of IVF cares about most).
STEER_LABELS: tuple[str, ...] = ("person", "car")
#: Control phrases: an absent class (with a position), and a sentence that names nothing.
ABSENT_PHRASE = "The dog {position} is what matters."
NOTHING_PHRASE = "This is a quiet night scene."
#: The least change (grey levels) a ratio of changes divides by: locality and selectivity.
DELTA_FLOOR = 0.01


@dataclass(frozen=True)
class SteerCase:
    """One pair and the object its named captions name (box in full-frame pixels, x1 y1 x2 y2), with every object
    detected in the pair (label, box) for a network that grounds captions in them."""

    pair_id: str
    label: str
    box: tuple[float, float, float, float]
    position: str
    captions: tuple[str, str]
    objects: tuple[tuple[str, tuple[float, float, float, float]], ...] = ()


def box_regions(box: Sequence[float], shape: tuple[int, int],
                dilation: float = RING_DILATION) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean (H, W) masks of a box (pixels whose centres lie in it, at least one), its ring (the box
    grown by ``dilation`` less the box) and the outside (everything beyond the grown box)."""
    ix1, iy1, ix2, iy2 = pixel_box(box, shape)
    inside = np.zeros(shape, bool)
    inside[iy1:iy2, ix1:ix2] = True
    gx1, gy1, gx2, gy2 = grown_box((ix1, iy1, ix2, iy2), shape, dilation)
    grown = np.zeros(shape, bool)
    grown[gy1:gy2, gx1:gx2] = True
    return inside, grown & ~inside, ~grown


def box_contrast(image: np.ndarray, inside: np.ndarray, ring: np.ndarray) -> float:
    """Mean over the box less mean over its ring, in the image's units (the box mean alone without a ring)."""
    inner = float(image[inside].mean())
    return inner - float(image[ring].mean()) if ring.any() else inner


def steer_stats(neutral: np.ndarray, named: np.ndarray, box: Sequence[float]) -> dict[str, float]:
    """The benchmark's numbers for one pair and phrasing; images (H, W) in [0, 1], box in pixels.

    Returns delta_in, delta_out (grey levels), locality, contrast_neutral, contrast_named (grey levels)
    and contrast_gain (relative; see the module docstring).
    """
    if neutral.shape != named.shape or neutral.ndim != 2:
        raise ValueError(f"neutral and named must be (H, W) of one shape, got {neutral.shape} and {named.shape}")
    inside, ring, outside = box_regions(box, neutral.shape)
    change = np.abs(named.astype(np.float64) - neutral.astype(np.float64)) * 255.0
    delta_in = float(change[inside].mean())
    delta_out = float(change[outside].mean()) if outside.any() else 0.0
    c_neutral = box_contrast(neutral.astype(np.float64) * 255.0, inside, ring)
    c_named = box_contrast(named.astype(np.float64) * 255.0, inside, ring)
    return {
        "delta_in": delta_in,
        "delta_out": delta_out,
        "locality": delta_in / max(delta_out, DELTA_FLOOR),
        "contrast_neutral": c_neutral,
        "contrast_named": c_named,
        "contrast_gain": (abs(c_named) - abs(c_neutral)) / max(abs(c_neutral), 1.0),
    }


def captioned_pairs(dataset: str | os.PathLike, captions_file: str | os.PathLike | None = None
                    ) -> Iterator[tuple[str, dict, dict, tuple[int, int]]]:
    """Each pair of an IVF dataset with its two sources' caption records (drafted caption, detections) and its
    (width, height): ``(pair id, record 1, record 2, size)``; the records from the dataset's caption file (default
    ``assets/captions/data/<dataset>.jsonl``).

    Raises:
        DatasetError: the dataset or its caption file is missing, a pair has no record, or the dataset is not IVF.
    """
    from PIL import Image

    from tgif.captions.dataset import read_caption_records
    from tgif.io.datasets import list_pairs, resolve_dataset

    folder = resolve_dataset(dataset)
    file = Path(captions_file) if captions_file else (
        Path(__file__).resolve().parents[1] / "assets" / "captions" / "data" / f"{folder.name}.jsonl")
    records = read_caption_records(file)
    for files in list_pairs(folder):
        keys = [(files.id, files.path_a.parent.name), (files.id, files.path_b.parent.name)]
        if any(key not in records for key in keys):
            raise DatasetError(f"{file}: no caption record for pair {files.id}")
        if records[keys[0]].get("task", "ivf") != "ivf":
            raise DatasetError(f"the steering benchmark runs on IVF pairs; {folder.name} is {records[keys[0]]['task']}")
        with Image.open(files.path_a) as image:
            size = image.size
        yield files.id, records[keys[0]], records[keys[1]], size


def steer_cases(dataset: str | os.PathLike, captions_file: str | os.PathLike | None = None,
                labels: Sequence[str] = STEER_LABELS, limit: int | None = None,
                caption_mode: str = "full") -> list[SteerCase]:
    """The pairs of an IVF dataset with a detected object of ``labels``, each with its most confident one.

    Detections and drafted captions come from the dataset's caption file (default
    ``assets/captions/data/<dataset>.jsonl``), merged over the two sources; the captions as ``caption_mode``
    drafts them (:func:`tgif.captions.template.restrict_caption`, for the ablation's variants).

    Raises:
        DatasetError: the dataset or its caption file is missing, or the dataset is not IVF.
    """
    from tgif.captions.template import restrict_caption
    from tgif.train.steer import merge_detections

    cases = []
    for pair_id, first, second, (width, height) in captioned_pairs(dataset, captions_file):
        detected = merge_detections(first["detections"], second["detections"])
        objects = [(label, box) for label, box in detected if label in labels]
        if not objects:
            continue
        label, box = objects[0]
        cases.append(SteerCase(pair_id, label, tuple(box), box_position(box, width, height),
                               (restrict_caption(first["caption"], caption_mode),
                                restrict_caption(second["caption"], caption_mode)),
                               tuple((lab, tuple(b)) for lab, b in detected)))
        if limit and len(cases) >= limit:
            break
    return cases


@dataclass
class SteerReport:
    """Rows (one per pair and phrasing), per-pair controls, and medians."""

    weights: str
    dataset: str
    phrasings: tuple[str, ...]
    rows: list[dict[str, float | str]] = field(default_factory=list)
    controls: list[dict[str, float | str]] = field(default_factory=list)

    def medians(self) -> dict[str, float]:
        """Medians over all rows (delta_in, delta_out, locality, contrast_gain) and controls (absent, nothing)."""
        out = {key: float(np.median([float(r[key]) for r in self.rows])) if self.rows else float("nan")
               for key in ("delta_in", "delta_out", "locality", "contrast_gain")}
        for key in ("absent", "nothing"):
            out[key] = float(np.median([float(r[key]) for r in self.controls])) if self.controls else float("nan")
        return out

    def to_json(self) -> dict:
        """Everything as plain JSON-serialisable data."""
        return {**asdict(self), "medians": self.medians()}


def run_steer_benchmark(weights: str | os.PathLike, dataset: str = "msrs_test",
                        phrasings: Sequence[str] = HELD_OUT_TEMPLATES, limit: int | None = None,
                        captions_file: str | os.PathLike | None = None, device: str = "cpu",
                        progress: bool = True, caption_mode: str = "full") -> SteerReport:
    """Fuse each case neutral, named (once per phrasing) and with both controls; see the module docstring.

    Each pair is one :class:`tgif.session.PairSession` whose scene is the drafted captions, as in the app: the
    sources are encoded and the trunk run once, and only the grounding head and the decoder run per caption (a
    model without a grounding head runs its trunk per caption too).
    """
    from tgif.pipeline import TGIFFuser
    from tgif.session import PairSession

    fuser = TGIFFuser(weights, device=device)
    if not fuser.uses_text:
        raise DatasetError(f"{weights} was trained without text; the steering benchmark needs a text model")
    cases = steer_cases(dataset, captions_file, limit=limit, caption_mode=caption_mode)
    if not cases:
        raise DatasetError(f"no pair of {dataset} has a detected {' or '.join(STEER_LABELS)}")
    from tgif.io.datasets import list_pairs, resolve_dataset

    files_by_id = {p.id: p for p in list_pairs(resolve_dataset(dataset))}
    report = SteerReport(str(weights), str(dataset), tuple(phrasings))
    for case in tqdm(cases, desc=f"steer {Path(str(weights)).stem}", unit="pair", disable=not progress):
        session = PairSession(fuser, files_by_id[case.pair_id].load(on_large="downscale"), "ivf")
        session.set_scene(case.captions)  # the drafts, as in the app: an edit steers over their trunk
        session.set_regions(list(case.objects))  # the objects the drafts were written from
        phrases = [highlight_phrase(case.label, case.position, phrasing) for phrasing in phrasings]
        controls = {"absent": ABSENT_PHRASE.format(position=case.position), "nothing": NOTHING_PHRASE}
        captions = [case.captions] + [(add_phrase(case.captions[0], p), case.captions[1])
                                      for p in (*phrases, *controls.values())]
        neutral, *others = session.fuse_texts(captions)
        for phrase, named in zip(phrases, others):
            report.rows.append({"pair": case.pair_id, "label": case.label, "position": case.position,
                                "phrase": phrase, **steer_stats(neutral, named, case.box)})
        changes = [float(np.abs(o.astype(np.float64) - neutral).mean() * 255.0) for o in others[len(phrases):]]
        report.controls.append({"pair": case.pair_id, **dict(zip(controls, changes))})
    return report


def format_report(report: SteerReport, per_pair: bool = True) -> str:
    """A markdown rendering: per-pair rows (when asked) and the medians."""
    lines = []
    if per_pair:
        lines += ["| pair | object | phrase | Δ in | Δ out | locality | contrast gain |",
                  "|---|---|---|---:|---:|---:|---:|"]
        for row in report.rows:
            lines.append(f"| {row['pair']} | {row['label']} {row['position']} | {row['phrase']} | "
                         f"{row['delta_in']:.2f} | {row['delta_out']:.2f} | {row['locality']:.1f}x | "
                         f"{100 * float(row['contrast_gain']):+.1f}% |")
        lines.append("")
    med = report.medians()
    lines += [f"Medians over {len(report.controls)} pairs x {len(report.phrasings)} phrasings "
              f"({Path(report.weights).name}, {report.dataset}):", "",
              "| Δ in (grey levels) | Δ out | locality | contrast gain | absent object: Δ | naming nothing: Δ |",
              "|---:|---:|---:|---:|---:|---:|",
              f"| {med['delta_in']:.2f} | {med['delta_out']:.2f} | {med['locality']:.1f}x | "
              f"{100 * med['contrast_gain']:+.1f}% | {med['absent']:.2f} | {med['nothing']:.2f} |"]
    return "\n".join(lines)


def write_csv(report: SteerReport, path: str | os.PathLike) -> Path:
    """Write the per-pair rows (controls joined by pair) to a CSV file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    controls = {c["pair"]: c for c in report.controls}
    with out.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["pair", "label", "position", "phrase", "delta_in", "delta_out", "locality",
                         "contrast_neutral", "contrast_named", "contrast_gain", "absent", "nothing"])
        for row in report.rows:
            control = controls[row["pair"]]
            writer.writerow([row["pair"], row["label"], row["position"], row["phrase"],
                             *(f"{float(row[k]):.4f}" for k in ("delta_in", "delta_out", "locality",
                                                               "contrast_neutral", "contrast_named",
                                                               "contrast_gain")),
                             f"{float(control['absent']):.4f}", f"{float(control['nothing']):.4f}"])
    return out


def steering_figure(weights: Sequence[str | os.PathLike], case: SteerCase, dataset: str = "msrs_test",
                    phrasing: str = HELD_OUT_TEMPLATES[0]) -> Figure:
    """One row per checkpoint: fused with the drafted captions, fused with the object named, and the text effect
    (named − neutral, signed, in grey levels), with the named box drawn on each panel."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from tgif.io.datasets import list_pairs, resolve_dataset
    from tgif.pipeline import TGIFFuser
    from tgif.session import PairSession

    files = {p.id: p for p in list_pairs(resolve_dataset(dataset))}[case.pair_id]
    pair = files.load(on_large="downscale")
    phrase = highlight_phrase(case.label, case.position, phrasing)
    fig = Figure(figsize=(12, 3.3 * len(weights)))
    axes = fig.subplots(len(weights), 3, squeeze=False)
    for row, path in enumerate(weights):
        session = PairSession(TGIFFuser(path, device="cpu"), pair, "ivf")
        session.set_scene(case.captions)
        session.set_regions(list(case.objects))
        outputs = session.fuse_texts([case.captions, (add_phrase(case.captions[0], phrase), case.captions[1])])
        effect = (outputs[1] - outputs[0]) * 255.0
        scale = max(2.0, float(np.percentile(np.abs(effect), 99.9)))
        stats = steer_stats(outputs[0], outputs[1], case.box)
        name = Path(str(path)).stem
        panels = [(outputs[0], "gray", 0, 1, f"{name}: drafted captions"),
                  (outputs[1], "gray", 0, 1, f"+ “{phrase}”"),
                  (effect, "coolwarm", -scale, scale,
                   f"text effect (±{scale:.0f} levels): box {stats['delta_in']:.1f}, outside {stats['delta_out']:.2f}, "
                   f"contrast {100 * stats['contrast_gain']:+.0f}%")]
        for ax, (image, cmap, vmin, vmax, title) in zip(axes[row], panels):
            ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
            x1, y1, x2, y2 = case.box
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, edgecolor="#ffbf00", linewidth=1))
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.93, wspace=0.03, hspace=0.12)
    return fig


# ---------------------------------------------------------------------------------------------- selectivity
#
# Naming one object of several: does that object change, and do the others stay put? Per IVF pair with two or
# more objects a caption can tell apart, each object is named in turn (phrasings and words from hand-written
# files the training never reads); per case the change inside the named box and inside the *other* object's box.

#: Classes the selectivity benchmark names.
SELECT_LABELS: tuple[str, ...] = ("person", "car", "truck", "bus", "bicycle", "motorcycle")
#: Objects named per pair at most (the most confident ones), and phrasings per named object.
SELECT_OBJECTS = 4
SELECT_PHRASINGS = 3
#: Controls: an absent object, and an absent class at a position.
ABSENT_CONTROLS: tuple[str, ...] = ("Make the tree on the left stand out.", "The dog is what matters.")
#: Grey level at and above which a pixel counts as burnt to white.
WHITE_LEVEL = 250
#: Objects smaller than this on a side (pixels) are not named (their box means are a handful of pixels).
MIN_SIDE = 6


@dataclass(frozen=True)
class SelectivityCase:
    """One pair's objects (label, box in pixels, position as the app names it) and its drafted captions."""

    pair_id: str
    dataset: str
    objects: tuple[tuple[str, tuple[float, float, float, float], str], ...]
    captions: tuple[str, str]

    def others(self, index: int) -> list[int]:
        """The objects a caption naming object ``index`` must leave alone and can be told apart from: another
        class, or the same class in another column, whose box does not overlap the named one."""
        label, box, _ = self.objects[index]
        found = []
        for j, (other, other_box, _) in enumerate(self.objects):
            if j == index or _overlap(box, other_box):
                continue
            if other != label or _column(box, self) != _column(other_box, self):
                found.append(j)
        return found


def _overlap(a: Sequence[float], b: Sequence[float]) -> bool:
    return min(a[2], b[2]) > max(a[0], b[0]) and min(a[3], b[3]) > max(a[1], b[1])


def _column(box: Sequence[float], case: SelectivityCase) -> str:
    position = next(p for _, b, p in case.objects if tuple(b) == tuple(box))
    return "left" if "left" in position else "right" if "right" in position else "centre"


def selectivity_cases(dataset: str | os.PathLike, captions_file: str | os.PathLike | None = None,
                      limit: int | None = None) -> list[SelectivityCase]:
    """The pairs of an IVF dataset with at least two objects of :data:`SELECT_LABELS` that a caption can tell
    apart (:meth:`SelectivityCase.others`); detections and drafts from the dataset's caption file
    (:func:`captioned_pairs`).

    Raises:
        DatasetError: the dataset or its caption file is missing.
    """
    from tgif.io.datasets import resolve_dataset
    from tgif.train.steer import merge_detections

    name = resolve_dataset(dataset).name
    cases = []
    for pair_id, first, second, (width, height) in captioned_pairs(dataset, captions_file):
        objects = [(label, tuple(box), box_position(box, width, height))
                   for label, box in merge_detections(first["detections"], second["detections"])
                   if label in SELECT_LABELS and min(box[2] - box[0], box[3] - box[1]) >= MIN_SIDE][:SELECT_OBJECTS]
        case = SelectivityCase(pair_id, name, tuple(objects),  # type: ignore[arg-type]
                               (first["caption"], second["caption"]))
        if any(case.others(i) for i in range(len(objects))):
            cases.append(case)
        if limit and len(cases) >= limit:
            break
    return cases


def selectivity_stats(neutral: np.ndarray, named: np.ndarray, sources_max: np.ndarray, box: Sequence[float],
                      other: Sequence[float], all_boxes: Sequence[Sequence[float]]) -> dict[str, float]:
    """The numbers of one case; images (H, W) in [0, 1], boxes in pixels.

    Returns ``delta_named`` / ``delta_other`` (mean |named - neutral| in each box, grey levels), ``selectivity``
    (their ratio), ``gain_named`` / ``gain_other`` (relative change of each box's contrast to its ring, as
    :func:`steer_stats`), ``delta_outside`` (outside every object's box grown by 50%) and ``white_new`` (share
    of the named box at or above :data:`WHITE_LEVEL` where neither source is).
    """
    first, second = steer_stats(neutral, named, box), steer_stats(neutral, named, other)
    outside = np.ones(neutral.shape, bool)
    for b in all_boxes:
        outside &= box_regions(b, neutral.shape)[2]
    change = np.abs(named.astype(np.float64) - neutral.astype(np.float64)) * 255.0
    inside = box_regions(box, neutral.shape)[0]
    white = (named * 255.0 >= WHITE_LEVEL - 0.5) & (sources_max * 255.0 < WHITE_LEVEL - 0.5)
    burnt = white & (neutral * 255.0 < WHITE_LEVEL - 0.5)
    return {
        "delta_named": first["delta_in"],
        "delta_other": second["delta_in"],
        "selectivity": first["delta_in"] / max(second["delta_in"], DELTA_FLOOR),
        "gain_named": first["contrast_gain"],
        "gain_other": second["contrast_gain"],
        "delta_outside": float(change[outside].mean()) if outside.any() else 0.0,
        "white_new": float(burnt[inside].mean()),
        "white_sources": float(white[inside].mean()),
    }


@dataclass
class SelectivityReport:
    """Rows (one per named object, other object and phrasing), controls per pair, and medians."""

    weights: str
    datasets: tuple[str, ...]
    rows: list[dict[str, float | str]] = field(default_factory=list)
    controls: list[dict[str, float | str]] = field(default_factory=list)

    KEYS = ("delta_named", "delta_other", "selectivity", "gain_named", "gain_other", "delta_outside", "white_new",
            "white_sources")

    def medians(self, same_class: bool | None = None) -> dict[str, float]:
        """Medians of :attr:`KEYS` over all rows, or over the same-class (True) / other-class (False) rows, with the
        row count ``cases``; controls ``absent`` and ``nothing`` over all pairs."""
        rows = [r for r in self.rows if same_class is None or bool(r["same_class"]) == same_class]
        out = {k: float(np.median([float(r[k]) for r in rows])) if rows else float("nan") for k in self.KEYS}
        out["cases"] = float(len(rows))
        for key in ("absent", "nothing"):
            out[key] = float(np.median([float(c[key]) for c in self.controls])) if self.controls else float("nan")
        return out


def selectivity_phrase(label: str, position: str, index: int, phrasings: Sequence[str],
                       words: dict[str, tuple[str, ...]]) -> str:
    """The ``index``-th phrase for an object: phrasings in turn, and the class name and position in turn with the
    words a user might say instead (``words``)."""
    label_words = (label, *words.get(label, ()))
    position_words = (position, *words.get(position, ()))
    template = phrasings[index % len(phrasings)]
    return template.format(label=label_words[index % len(label_words)],
                           position=position_words[(index // len(label_words)) % len(position_words)])


def run_selectivity(weights: str | os.PathLike, datasets: Sequence[str] = ("msrs_test", "roadscene_test"),
                    phrasings: Sequence[str] | None = None, words: dict[str, tuple[str, ...]] | None = None,
                    limit: int | None = None, device: str = "cpu", progress: bool = True) -> SelectivityReport:
    """Name each object of each case in turn (:data:`SELECT_PHRASINGS` phrasings each) and measure every other
    object it can be told apart from; plus the controls per pair (module section comment)."""
    from tgif.captions.steering import SELECTIVITY_PHRASINGS, SELECTIVITY_WORDS, read_phrasings, read_words
    from tgif.io.datasets import list_pairs, resolve_dataset
    from tgif.pipeline import TGIFFuser
    from tgif.session import PairSession

    phrasings = tuple(phrasings) if phrasings else read_phrasings(SELECTIVITY_PHRASINGS)
    words = words if words is not None else read_words(SELECTIVITY_WORDS)
    fuser = TGIFFuser(weights, device=device)
    if not fuser.uses_text:
        raise DatasetError(f"{weights} was trained without text; the selectivity benchmark needs a text model")
    report = SelectivityReport(str(weights), tuple(datasets))
    counter = 0
    for dataset in datasets:
        cases = selectivity_cases(dataset, limit=limit)
        files_by_id = {p.id: p for p in list_pairs(resolve_dataset(dataset))}
        for case in tqdm(cases, desc=f"selectivity {dataset}", unit="pair", disable=not progress):
            pair = files_by_id[case.pair_id].load(on_large="downscale")
            session = PairSession(fuser, pair, "ivf")
            session.set_scene(case.captions)
            session.set_regions([(label, box) for label, box, _ in case.objects])
            luminances = session.luminances()
            sources_max = np.maximum(luminances[0], luminances[1])
            boxes = [box for _, box, _ in case.objects]
            plans = []
            for index, (label, _, position) in enumerate(case.objects):
                if not case.others(index):
                    continue
                for _ in range(SELECT_PHRASINGS):
                    plans.append((index, selectivity_phrase(label, position, counter, phrasings, words)))
                    counter += 1
            controls = [*ABSENT_CONTROLS, NOTHING_PHRASE]
            captions = [case.captions] + [(add_phrase(case.captions[0], p), case.captions[1])
                                          for p in [phrase for _, phrase in plans] + controls]
            neutral, *outputs = session.fuse_texts(captions)
            for (index, phrase), named in zip(plans, outputs):
                label, box, position = case.objects[index]
                for other in case.others(index):
                    stats = selectivity_stats(neutral, named, sources_max, box, case.objects[other][1], boxes)
                    report.rows.append({"dataset": dataset, "pair": case.pair_id, "named": f"{label} {position}",
                                        "other": f"{case.objects[other][0]} {case.objects[other][2]}",
                                        "same_class": case.objects[other][0] == label, "phrase": phrase, **stats})
            changes = [float(np.abs(o.astype(np.float64) - neutral).mean() * 255.0) for o in outputs[len(plans):]]
            report.controls.append({"dataset": dataset, "pair": case.pair_id, "absent": max(changes[:2]),
                                    "nothing": changes[2]})
    return report


def median_cells(m: dict[str, float]) -> str:
    """The cells of one row of medians of the selectivity table (:meth:`SelectivityReport.medians`): the case count
    through the controls, each cell closed by ``|``."""
    return (f"{int(m['cases'])} | {m['delta_named']:.2f} | {m['delta_other']:.2f} | {m['selectivity']:.1f}x | "
            f"{100 * m['gain_named']:+.1f}% | {100 * m['gain_other']:+.1f}% | {m['delta_outside']:.2f} | "
            f"{100 * m['white_new']:.2f}% | {100 * m['white_sources']:.2f}% | {m['absent']:.2f} | {m['nothing']:.2f} |")


def format_selectivity(report: SelectivityReport, per_case: bool = False) -> str:
    """Markdown: per-case rows (when asked), then medians over all cases, the same-class subset and the rest."""
    lines = []
    if per_case:
        lines += ["| pair | named | other | phrase | Δ named | Δ other | selectivity | gain named | gain other |",
                  "|---|---|---|---|---:|---:|---:|---:|---:|"]
        for r in report.rows:
            lines.append(f"| {r['pair']} | {r['named']} | {r['other']} | {r['phrase']} | "
                         f"{float(r['delta_named']):.2f} | {float(r['delta_other']):.2f} | "
                         f"{float(r['selectivity']):.1f}x | "
                         f"{100 * float(r['gain_named']):+.1f}% | {100 * float(r['gain_other']):+.1f}% |")
        lines.append("")
    lines += [f"Selectivity ({Path(report.weights).name}, {', '.join(report.datasets)}; medians; absent object and "
              f"naming nothing: mean |Δ| over the frame, {len(report.controls)} pairs):", "",
              "| cases | n | Δ named | Δ other | selectivity | gain named | gain other | Δ outside | burnt white | "
              "white over sources | absent: Δ | nothing: Δ |", "|---|" + "---:|" * 11]
    for title, subset in (("all", None), ("same class, left vs right", True), ("other class", False)):
        lines.append(f"| {title} | {median_cells(report.medians(subset))}")
    return "\n".join(lines)


def write_selectivity_csv(report: SelectivityReport, path: str | os.PathLike) -> Path:
    """Write the per-case rows to a CSV file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    keys = ["dataset", "pair", "named", "other", "same_class", "phrase", *SelectivityReport.KEYS]
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in report.rows:
            writer.writerow({k: (f"{float(row[k]):.4f}" if k in SelectivityReport.KEYS else row[k]) for k in keys})
    return out


def selectivity_figure(weights: Sequence[str | os.PathLike], case: SelectivityCase, first: int, second: int,
                       phrasing: str = "Draw the eye to the {label} {position}.") -> Figure:
    """One row per checkpoint: fused with the drafted captions, with object ``first`` named, with object ``second``
    named, and the two text effects (named − drafted), both boxes drawn on every panel (the named one in amber)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    from tgif.io.datasets import list_pairs, resolve_dataset
    from tgif.pipeline import TGIFFuser
    from tgif.session import PairSession

    files = {p.id: p for p in list_pairs(resolve_dataset(case.dataset))}[case.pair_id]
    pair = files.load(on_large="downscale")
    phrases = [highlight_phrase(case.objects[i][0], case.objects[i][2], phrasing) for i in (first, second)]
    fig = Figure(figsize=(15, 2.9 * len(weights)))
    axes = fig.subplots(len(weights), 5, squeeze=False)
    for row, path in enumerate(weights):
        session = PairSession(TGIFFuser(path, device="cpu"), pair, "ivf")
        session.set_scene(case.captions)
        session.set_regions([(label, box) for label, box, _ in case.objects])
        neutral, named_a, named_b = session.fuse_texts(
            [case.captions] + [(add_phrase(case.captions[0], p), case.captions[1]) for p in phrases])
        effects = [(named_a - neutral) * 255.0, (named_b - neutral) * 255.0]
        scale = max(2.0, *(float(np.percentile(np.abs(e), 99.9)) for e in effects))
        name = Path(str(path)).stem
        panels = [(neutral, "gray", 0, 1, f"{name}: drafted captions", None),
                  (named_a, "gray", 0, 1, f"+ “{phrases[0]}”", first),
                  (named_b, "gray", 0, 1, f"+ “{phrases[1]}”", second),
                  (effects[0], "coolwarm", -scale, scale, f"effect of naming {case.objects[first][0]} "
                                                          f"{case.objects[first][2]} (±{scale:.0f})", first),
                  (effects[1], "coolwarm", -scale, scale, f"effect of naming {case.objects[second][0]} "
                                                          f"{case.objects[second][2]} (±{scale:.0f})", second)]
        for ax, (image, cmap, vmin, vmax, title, named) in zip(axes[row], panels):
            ax.imshow(image, cmap=cmap, vmin=vmin, vmax=vmax)
            for index in (first, second):
                x1, y1, x2, y2 = case.objects[index][1]
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.2,
                                       edgecolor="#ffbf00" if index == named else "#40c0ff"))
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=0.92, wspace=0.03, hspace=0.15)
    return fig
