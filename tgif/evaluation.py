"""Run fusion methods over datasets and score them the way papers do.

For every pair: fuse, save the result as an 8-bit PNG, read it back, and compute the metrics
on the grey levels of the saved file against the sources' grey levels (see
:mod:`tgif.metrics.reading`). The per-dataset score is the mean over images (the standard
deviation is reported too). No min-max stretching is applied to outputs.
"""

from __future__ import annotations

import csv
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from tgif.baselines import get_baseline
from tgif.io.datasets import list_pairs, resolve_dataset
from tgif.io.image import save_image
from tgif.io.pair import ImagePair
from tgif.metrics import best_value, compute_metrics, gray_levels_of, read_gray_levels, resolve_metric_names
from tgif.parallel import gather, is_main, shard

if TYPE_CHECKING:
    from tgif.pipeline import TGIFFuser

logger = logging.getLogger(__name__)

FuseFn = Callable[[ImagePair], np.ndarray]


@dataclass
class EvalResult:
    """Per-image metrics of one method on one dataset.

    Attributes:
        dataset: dataset name.
        method: method name.
        metric_names: the metric columns, in order.
        rows: one dict per image: ``id``, each metric, and ``fuse_s`` (fusion seconds).
        csv_path: where the per-image CSV was written, if anywhere.
    """

    dataset: str
    method: str
    metric_names: tuple[str, ...]
    rows: list[dict[str, float | str]] = field(default_factory=list)
    csv_path: Path | None = None

    def values(self, metric: str) -> np.ndarray:
        """All per-image values of one metric."""
        return np.array([float(row[metric]) for row in self.rows])

    def mean(self) -> dict[str, float]:
        """Mean over images of each metric (NaN-aware)."""
        return {m: float(np.nanmean(self.values(m))) for m in self.metric_names}

    def std(self) -> dict[str, float]:
        """Population standard deviation over images of each metric (NaN-aware)."""
        return {m: float(np.nanstd(self.values(m))) for m in self.metric_names}

    def write_csv(self, path: str | os.PathLike) -> Path:
        """Write the per-image rows as CSV (id, metrics..., fuse_s) and return the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=["id", *self.metric_names, "fuse_s"])
            writer.writeheader()
            for row in self.rows:
                writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})
        self.csv_path = path
        return path


def evaluate(
    dataset: str | os.PathLike,
    method: str,
    *,
    fuse_fn: FuseFn | None = None,
    label: str | None = None,
    metrics: str | Iterable[str] | None = None,
    out_dir: str | os.PathLike | None = None,
    limit: int | None = None,
    progress: bool = True,
) -> EvalResult:
    """Fuse every pair of a dataset with one method and score it.

    Args:
        dataset: dataset name under ``<shared>/data`` or a dataset folder.
        method: a baseline name (see :mod:`tgif.baselines`), or a label when ``fuse_fn`` is given.
        fuse_fn: ``pair -> fused image`` to evaluate instead of a baseline.
        label: name used in tables and output paths (default: ``method``).
        metrics: metric names (default: EN, SD, SF, AG, VIF, Qabf).
        out_dir: where to write ``<dataset>/<method>/<id>.png`` and ``<dataset>/<method>.csv``;
            None keeps the images in a temporary folder and writes no CSV.
        limit: evaluate only the first ``limit`` pairs (sorted by id).
        progress: show a tqdm progress bar.

    Under ``torchrun`` the pairs are split between the processes (:mod:`tgif.parallel`); every
    process returns all rows, in id order, and only rank 0 writes the CSV.
    """
    names = resolve_metric_names(metrics)
    folder = resolve_dataset(dataset)
    fuse = fuse_fn if fuse_fn is not None else get_baseline(method).fuse
    pairs = list_pairs(folder)[: limit if limit else None]
    order = {files.id: index for index, files in enumerate(pairs)}
    label = label or method
    result = EvalResult(folder.name, label, names)
    with tempfile.TemporaryDirectory(prefix="tgif-eval-") as tmp:
        image_dir = Path(out_dir) / folder.name / label if out_dir is not None else Path(tmp)
        mine = shard(pairs)  # under torchrun each process takes a share; alone, all of them
        for files in tqdm(mine, desc=f"{folder.name} / {label}", unit="pair", disable=not progress or not is_main()):
            pair = files.load()
            start = time.perf_counter()
            fused = fuse(pair)
            seconds = time.perf_counter() - start
            saved = save_image(image_dir / f"{files.id}.png", fused)
            scores = compute_metrics(
                read_gray_levels(saved), gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels), names
            )
            result.rows.append({"id": files.id, **scores, "fuse_s": seconds})
    result.rows = sorted(gather(result.rows), key=lambda row: order[str(row["id"])])
    if out_dir is not None and is_main():
        result.write_csv(Path(out_dir) / folder.name / f"{label}.csv")
    return result


def markdown_table(results: list[EvalResult], digits: int = 2) -> str:
    """A markdown table, one row per method: ``mean ± std`` of each metric, best mean in bold.

    All results must share a dataset and metric columns.
    """
    if not results:
        return ""
    names = results[0].metric_names
    means = [r.mean() for r in results]
    stds = [r.std() for r in results]
    best = {m: best_value(m, (mean[m] for mean in means)) for m in names}
    header = f"| {results[0].dataset} ({len(results[0].rows)} pairs) | " + " | ".join(names) + " |"
    lines = [header, "|---|" + "---:|" * len(names)]
    for result, mean, std in zip(results, means, stds):
        cells = []
        for m in names:
            text = f"{mean[m]:.{digits}f} ± {std[m]:.{digits}f}"
            if len(results) > 1 and np.round(mean[m], digits) == np.round(best[m], digits):
                text = f"**{text}**"
            cells.append(text)
        lines.append(f"| {result.method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


CAPTION_VARIANTS: tuple[str, ...] = ("true", "empty", "swapped", "absent", "none")
#: The ``absent`` variant's caption: objects and conditions no test scene has (``{modality}`` filled in).
ABSENT_CAPTION = ("A bright, high-contrast {modality} image of a sunny beach: two dogs run past a red boat on the "
                  "left and a bicycle leans on a palm tree on the right, all in sharp focus.")
CAPTIONS_DIR = Path(__file__).resolve().parents[1] / "assets" / "captions" / "data"


def tgif_fuse_fn(dataset: str | os.PathLike, fuser: TGIFFuser, variant: str = "true",
                 captions_file: str | os.PathLike | None = None) -> FuseFn:
    """A ``pair -> image`` function fusing with TGIF and the dataset's stored captions.

    Args:
        variant: ``true`` (each pair's own captions), ``empty`` (two empty captions), ``swapped``
            (the captions of the next pair in id order, i.e. of another scene), ``absent``
            (:data:`ABSENT_CAPTION`: objects that are not in the scene) or ``none`` (the network's
            no-text path).
        captions_file: caption JSONL (default ``assets/captions/data/<dataset>.jsonl``); when it
            is missing, captions are drafted from the maps.
    """
    if variant not in CAPTION_VARIANTS:
        raise ValueError(f"caption variant must be one of {CAPTION_VARIANTS}, got {variant!r}")
    from tgif.captions.dataset import modality_name, read_caption_file
    from tgif.io.datasets import dataset_modalities
    from tgif.session import PairSession
    from tgif.tasks import spec_for_folders

    folder = resolve_dataset(dataset)
    path = Path(captions_file) if captions_file else CAPTIONS_DIR / f"{folder.name}.jsonl"
    stored = read_caption_file(path) if path.exists() else None
    mod_a, mod_b = dataset_modalities(folder)
    spec = spec_for_folders((mod_a, mod_b))  # None for folders outside the task table: the pair's task then
    files_by_id = {files.id: files for files in list_pairs(folder)}
    ids = list(files_by_id)

    def fuse(pair: ImagePair) -> np.ndarray:
        session = PairSession(fuser, pair, spec)
        if variant == "none":
            return session.fuse(use_text=False).image
        if variant == "empty":
            return session.fuse(("", "")).image
        if variant == "absent":
            names = (modality_name(mod_a), modality_name(mod_b))
            return session.fuse((ABSENT_CAPTION.format(modality=names[0]),
                                 ABSENT_CAPTION.format(modality=names[1]))).image
        source_id = ids[(ids.index(pair.id) + 1) % len(ids)] if variant == "swapped" else pair.id
        if stored is not None:
            captions = (stored[(source_id, mod_a)], stored[(source_id, mod_b)])
        elif source_id == pair.id:  # no caption file: draft them
            captions = session.drafted_captions()
        else:  # for "swapped", from the other pair's images
            captions = PairSession(fuser, files_by_id[source_id].load(), spec).drafted_captions()
        return session.fuse(captions).image

    return fuse
