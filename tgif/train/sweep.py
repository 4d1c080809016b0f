"""Loss-weight sweeps (``tgif sweep``): short runs per (gradient weight, SSIM weight), scored on held-out pairs.

Every setting trains from scratch for the same step budget (the rest of the settings from one config), and
its last weights are scored on the pack's held-out training pairs (never a test set) with the six paper
metrics, next to the Laplacian pyramid on the same pairs. The choice rule, in order:

1. *fidelity kept*: VIF and Qabf both no more than :data:`FIDELITY_TOLERANCE` below the pyramid's;
2. *wins*: the number of the six metrics on which the setting beats the pyramid;
3. *margin*: the mean relative difference to the pyramid over the six metrics.

Rows go to ``<out>/sweep.csv`` as each run ends; a sweep run again skips the settings already there, so an
interrupted sweep resumes where it stopped.

The same rule picks a checkpoint within one run (:func:`select_checkpoint`, ``select: true`` in a training
config): the weights of each validation are kept, and the one the rule prefers on the held-out pairs is the
run's result, which need not be the last; and it picks the tiles a trained model fuses in
(:func:`run_tile_sweep`, ``tgif sweep-tiles``), scored on held-out pairs at the resolution they are fused at.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from tgif.baselines.laplacian import base_rule_for_task, laplacian_luma
from tgif.errors import TgifError
from tgif.metrics import PAPER_METRICS, compute_metrics
from tgif.metrics.registry import is_better
from tgif.model import load_tgif
from tgif.pipeline import FusionTile, TGIFFuser
from tgif.train.data import PackDataset
from tgif.train.loop import TrainSettings, append_csv, train, validate

logger = logging.getLogger(__name__)

#: How far below the pyramid VIF and Qabf may be for a setting to count as keeping fidelity.
FIDELITY_TOLERANCE = 0.02


def reference_scores(dataset: PackDataset) -> dict[str, float]:
    """Mean metrics of the Laplacian pyramid over ``dataset``'s pairs (8-bit luminance, as :func:`validate`)."""
    rows = []
    for index in range(len(dataset)):
        item = dataset[index]
        y_a, y_b = item["y_a"][0].numpy(), item["y_b"][0].numpy()
        fused = np.clip(laplacian_luma(y_a, y_b, base=base_rule_for_task(dataset.task)), 0.0, 1.0)
        rows.append(compute_metrics(*(np.round(p * 255.0) for p in (fused, y_a, y_b))))
    return {name: float(np.mean([row[name] for row in rows])) for name in PAPER_METRICS}


def relative(name: str, value: float, reference: float) -> float:
    """How much better ``value`` is than ``reference``, relative (positive = better, in the metric's direction)."""
    gain = (value - reference) / abs(reference)
    return gain if is_better(name, 1.0, 0.0) else -gain


def score_row(scores: dict[str, float], reference: dict[str, float]) -> dict[str, Any]:
    """``wins`` over the reference, ``margin`` (mean relative difference) and ``fidelity_kept`` for one setting."""
    gains = {name: relative(name, scores[name], reference[name]) for name in PAPER_METRICS}
    return {"wins": sum(is_better(name, scores[name], reference[name]) for name in PAPER_METRICS),
            "margin": float(np.mean(list(gains.values()))),
            "fidelity_kept": int(all(gains[name] >= -FIDELITY_TOLERANCE for name in ("VIF", "Qabf")))}


def scored(scores: dict[str, float], reference: dict[str, float], digits: int | None = None) -> dict[str, Any]:
    """A table row's scores: the six metrics, the pyramid's (``ref_<metric>``) and :func:`score_row`'s verdict, the
    numbers rounded to ``digits`` when given."""
    def keep(value: float) -> float:
        return value if digits is None else round(value, digits)

    verdict = score_row(scores, reference)
    return {**{k: keep(v) for k, v in scores.items()}, **{f"ref_{k}": keep(v) for k, v in reference.items()},
            **verdict, "margin": keep(verdict["margin"])}


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best row of a sweep by the module's rule (fidelity kept, then wins, then margin)."""
    return max(rows, key=lambda r: (int(r["fidelity_kept"]), int(r["wins"]), float(r["margin"])))


def select_checkpoint(run_dir: str | os.PathLike, dataset: PackDataset) -> Path:
    """Pick a run's checkpoint by the module's choice rule: each validation's scores (``val.csv``) against the
    Laplacian pyramid on the same held-out pairs (``dataset``), among the validations whose weights were kept
    (``checkpoints/step_NNNNNN.safetensors``, :attr:`TrainSettings.select`). Copies the chosen one to
    ``selected.safetensors`` and writes every candidate's row, the choice marked, to ``selection.csv``.

    Raises:
        TgifError: the run kept no checkpoint that ``val.csv`` scores.
    """
    run = Path(run_dir)
    reference = reference_scores(dataset)
    rows = []
    with (run / "val.csv").open() as handle:
        for row in csv.DictReader(handle):
            step = int(row["step"])
            if (run / "checkpoints" / f"step_{step:06d}.safetensors").exists():
                rows.append({"step": step, **scored({name: float(row[name]) for name in PAPER_METRICS}, reference)})
    if not rows:
        raise TgifError(f"{run}: no kept checkpoint is scored in val.csv (train with select: true)")
    best = choose(rows)
    with (run / "selection.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*rows[0], "chosen"])
        writer.writeheader()
        writer.writerows({**row, "chosen": int(row is best)} for row in rows)
    selected = run / "selected.safetensors"
    shutil.copyfile(run / "checkpoints" / f"step_{best['step']:06d}.safetensors", selected)
    logger.info("selected step %d of %s: %d wins, margin %+.4f, fidelity kept %s", best["step"], run, best["wins"],
                best["margin"], bool(best["fidelity_kept"]))
    return selected


def read_sweep(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a ``sweep.csv``, numbers parsed."""
    with Path(path).open() as handle:
        rows = list(csv.DictReader(handle))
    ints = {"steps", "wins", "fidelity_kept"}
    return [{k: v if k == "setting" else int(v) if k in ints else float(v) for k, v in row.items()} for row in rows]


def read_tile_sweep(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The rows of a tile sweep's CSV (:func:`run_tile_sweep`), numbers parsed."""
    with Path(path).open() as handle:
        rows = list(csv.DictReader(handle))
    ints = {"size", "overlap", "wins", "fidelity_kept"}
    return [{k: v if k == "tile" else int(v) if k in ints else float(v) for k, v in row.items()} for row in rows]


def run_sweep(base: TrainSettings, grad_weights: list[float], ssim_weights: list[float], out_dir: str | os.PathLike,
              progress: bool = True) -> list[dict[str, Any]]:
    """Train ``base`` once per (gradient, SSIM) weight pair into ``<out>/g<grad>_s<ssim>``, score each, return rows.

    Each row: ``setting``, ``grad_weight``, ``ssim_weight``, ``steps``, the six metrics, the pyramid's six
    (``ref_<metric>``), ``wins``, ``margin`` and ``fidelity_kept``; written to ``<out>/sweep.csv`` as it ends.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = out / "sweep.csv"
    done = {row["setting"]: row for row in read_sweep(table)} if table.exists() else {}
    val_set = PackDataset(base.pack, "val")
    reference = reference_scores(val_set)
    rows = []
    for grad in grad_weights:
        for ssim in ssim_weights:
            name = f"g{grad:g}_s{ssim:g}"
            if name in done:
                rows.append(done[name])
                continue
            settings = replace(base, out_dir=str(out / name), grad_weight=grad, ssim_weight=ssim,
                               val_every=base.steps, checkpoint_every=base.steps)
            logger.info("sweep %s: %s", base.task, name)
            checkpoint = train(settings, progress=progress)
            model, _ = load_tgif(checkpoint, expected_text_encoder=val_set.text_encoder)
            scores = validate(model, val_set, torch.device("cpu"), base.use_text)  # the float16 weights shipped
            row = {"setting": name, "grad_weight": grad, "ssim_weight": ssim, "steps": base.steps,
                   **scored(scores, reference, digits=4)}
            append_csv(table, row)
            rows.append(row)
    return rows


def run_tile_sweep(weights: str | os.PathLike, dataset: PackDataset, tiles: list[FusionTile | None],
                   table: str | os.PathLike | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Score a checkpoint fused in each of ``tiles`` (None: whole images) on ``dataset``'s pairs.

    The pairs are fused as ``tgif fuse`` and ``tgif eval`` fuse them (:class:`~tgif.pipeline.TGIFFuser`, tiles
    blended with linear ramps) under the pack's caption tokens, and scored as :func:`validate` scores them,
    against the Laplacian pyramid on the same pairs. Each row: ``tile`` (``"whole"`` or ``SIZE/OVERLAP``),
    ``size``, ``overlap`` (0 and 0 for whole images), the six metrics, the pyramid's, ``wins``, ``margin`` and
    ``fidelity_kept``; written to ``table`` (CSV, replaced) when given.
    """
    fuser = TGIFFuser(weights, device="cpu", captioner="template", tile="0")
    reference = reference_scores(dataset)
    items = [dataset[index] for index in range(len(dataset))]
    rows = []
    for tile in tqdm(tiles, desc="tiles", unit="setting", disable=not progress):
        fuser.tile = tile
        metrics = []
        for item in items:
            y_a, y_b = item["y_a"][0].numpy(), item["y_b"][0].numpy()
            text = (item["text"][None], item["text_mask"][None]) if fuser.uses_text else (None, None)
            fused, _ = fuser.fuse_luminance(y_a, y_b, *text)
            metrics.append(compute_metrics(*(np.round(p * 255.0) for p in (fused, y_a, y_b))))
        scores = {name: float(np.mean([row[name] for row in metrics])) for name in PAPER_METRICS}
        rows.append({"tile": str(tile) if tile else "whole", "size": tile.size if tile else 0,
                     "overlap": tile.overlap if tile else 0, **scored(scores, reference)})
    if table is not None:
        Path(table).parent.mkdir(parents=True, exist_ok=True)
        Path(table).unlink(missing_ok=True)
        for row in rows:
            append_csv(Path(table), {**row, **{k: round(v, 6) for k, v in row.items() if isinstance(v, float)}})
    return rows
