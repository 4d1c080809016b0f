"""Regenerate ``docs/RESULTS.md`` and ``docs/figures/`` from the committed weights and ``shared/data``.

One call (``tgif results``; under ``torchrun`` the evaluations are split between processes)
evaluates every method on every dataset (per-image CSVs and mean
tables under ``results/``), the ablation checkpoints and the caption-sensitivity variants on
msrs_test, times the pipeline, draws the figures, and writes the markdown with the paper's
numbers beside ours. Nothing in RESULTS.md is typed by hand.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tgif.evaluation import EvalResult, evaluate, tgif_fuse_fn
from tgif.io.datasets import dataset_task, list_datasets, list_pairs, resolve_dataset
from tgif.io.image import load_image
from tgif.metrics import PAPER_METRICS, best_value, is_better
from tgif.model.checkpoint import read_metadata
from tgif.parallel import is_main
from tgif.settings import REPO_WEIGHTS_DIR
from tgif.visualize import error_map, metrics_figure

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_DIR = REPO_WEIGHTS_DIR
ABLATION_DIR = WEIGHTS_DIR / "ablation"

Row = tuple[float, float, float, float, float, float]

#: Published numbers (EN, SD, SF, AG, VIF, Qabf). TGIF rows: the paper's Tables 1-5; FILM rows: the FILM
#: README (Zhao et al., ICML 2024), measured with the same CDDFuse evaluator.
PAPER_ROWS: dict[str, dict[str, Row]] = {
    "msrs_test": {"TGIF (paper, MSRS)": (6.62, 42.00, 11.53, 3.64, 0.83, 0.67),
                  "CDDFuse (paper, MSRS)": (6.70, 43.39, 11.56, 3.74, 1.05, 0.69),
                  "FILM (README, MSRS)": (6.72, 43.64, 11.55, 3.72, 1.06, 0.70)},
    "roadscene_test": {"FILM (README, RoadScene)": (7.43, 49.26, 17.33, 6.59, 0.69, 0.62)},
    "harvard_mri_ct": {"TGIF (paper, Harvard)": (4.45, 65.26, 23.35, 5.16, 0.78, 0.76)},
    "harvard_mri_pet": {"TGIF (paper, Harvard)": (4.45, 65.26, 23.35, 5.16, 0.78, 0.76)},
    "harvard_mri_spect": {"TGIF (paper, Harvard)": (4.45, 65.26, 23.35, 5.16, 0.78, 0.76)},
    "mef": {"TGIF (paper, SICE)": (6.82, 54.06, 19.80, 5.24, 1.49, 0.78),
            "FILM (README, MEFB)": (7.32, 68.98, 20.94, 6.14, 0.98, 0.77)},
    "mff_lytro": {"TGIF (paper, RealMFF)": (7.14, 56.64, 15.52, 5.34, 1.54, 0.74),
                  "FILM (README, Lytro)": (7.56, 59.15, 19.57, 6.97, 0.98, 0.74)},
    "mff_mffw": {"TGIF (paper, RealMFF)": (7.14, 56.64, 15.52, 5.34, 1.54, 0.74)},
}
#: Paper Table 5 (IVF, MSRS); rows the paper gives, by our ablation names.
PAPER_ABLATION: dict[str, Row] = {
    "no text": (6.36, 40.89, 11.03, 3.52, 0.61, 0.53),
    "full": (6.62, 42.00, 11.53, 3.64, 0.83, 0.67),
}
#: (title, datasets, note) of the paper's Tables 1-4.
TABLES: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("Table 1 · IVF", ("msrs_test", "roadscene_test"), "TGIF IVF model, stored template captions."),
    ("Table 2 · MIF, zero-shot with the IVF model", ("harvard_mri_ct", "harvard_mri_pet", "harvard_mri_spect"),
     "The paper reports one Harvard number; it is repeated beside each of our three Harvard sets."),
    ("Table 3 · MEF", ("mef",), "The paper's MEF test set is SICE; ours is a different MEF benchmark."),
    ("Table 4 · MFF", ("mff_lytro", "mff_mffw"), "The paper's MFF test set is RealMFF; ours are Lytro and MFFW."),
)
ABLATION_CAPTIONS = REPO_ROOT / "assets" / "captions" / "ablation"
#: Ablation checkpoints (``weights/ablation/tgif_ivf_<key>.safetensors``): table name, caption variant, and the
#: msrs_test caption file drafted the way that model's training captions were (None: the stored full captions).
ABLATION_RUNS: tuple[tuple[str, str, str, Path | None], ...] = (
    ("notext", "no text", "none", None),
    ("nodet", "captions without the detection map", "true",
     ABLATION_CAPTIONS / "image_segmentation" / "msrs_test.jsonl"),
    ("noseg", "captions without the segmentation map", "true",
     ABLATION_CAPTIONS / "image_detection" / "msrs_test.jsonl"),
    ("full", "full", "true", None),
)
#: The ablation with the steering objective: each text variant's checkpoint fine-tuned by the head-only steering
#: recipe (``configs/ablation/ivf_<key>_steer.yaml``): key, table name, caption mode of its drafted captions.
ABLATION_STEER_RUNS: tuple[tuple[str, str, str], ...] = (
    ("nodet", "captions without the detection map", "image+segmentation"),
    ("noseg", "captions without the segmentation map", "image+detection"),
    ("full", "full", "full"),
)
#: Caption-sensitivity variants of the main IVF model on msrs_test.
SENSITIVITY_VARIANTS: tuple[tuple[str, str], ...] = (
    ("true", "true captions"), ("empty", "empty captions"), ("swapped", "another pair's captions"),
    ("absent", "captions naming absent objects"), ("none", "text path off"),
)
QUALITATIVE: tuple[tuple[str, str], ...] = (("ivf", "msrs_test"), ("mif", "harvard_mri_pet"), ("mef", "mef"),
                                            ("mff", "mff_lytro"))


@dataclass
class ResultsSettings:
    """What :func:`build_results` does.

    Attributes:
        docs_dir: where ``RESULTS.md`` and ``figures/`` go.
        results_dir: per-image CSVs, fused PNGs and mean tables.
        datasets: datasets to evaluate (default: every dataset in shared/data).
        limit: first N pairs per dataset only (for quick checks; the docs say so).
        bench: run the speed benchmark (slow on CPU).
        progress: tqdm bars.
    """

    docs_dir: Path = REPO_ROOT / "docs"
    results_dir: Path = REPO_ROOT / "results"
    datasets: Sequence[str] | None = None
    limit: int | None = None
    bench: bool = True
    progress: bool = True


def _fmt(mean: float, std: float | None = None, bold: bool = False) -> str:
    text = f"{mean:.2f}" if std is None else f"{mean:.2f} ± {std:.2f}"
    return f"**{text}**" if bold else text


def comparison_table(results: Sequence[EvalResult], paper: dict[str, Row] | None = None) -> str:
    """Markdown: our methods (mean ± std over images) and published rows; best mean per column in bold
    (our rows and published rows compared alike, values rounded to 2 decimals)."""
    names = PAPER_METRICS
    paper = paper or {}
    ours = [(r.method, r.mean(), r.std()) for r in results]
    published = [(label, dict(zip(names, row, strict=True)), None) for label, row in paper.items()]
    rows = ours + published
    best = {m: best_value(m, (round(values[m], 2) for _, values, _ in rows)) for m in names}
    count = len(results[0].rows) if results else 0
    lines = [f"| {results[0].dataset if results else ''} ({count} pairs) | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for label, values, std in rows:
        cells = [_fmt(values[m], std[m] if std else None, round(values[m], 2) == best[m]) for m in names]
        lines.append(f"| {label if std else '*' + label + '*'} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def standing(results: Sequence[EvalResult], paper: dict[str, Row] | None = None, ours: str = "tgif") -> str:
    """Markdown bullets: where ``ours`` beats or trails each other method, the best other method per metric,
    and each published row, metric by metric (means, compared at full precision)."""
    names = PAPER_METRICS
    by_method = {r.method: r.mean() for r in results}
    if ours not in by_method:
        return ""
    mine = by_method[ours]
    others = {m: v for m, v in by_method.items() if m != ours and "[" not in m}

    def verdict(label: str, theirs: dict[str, float]) -> str:
        ahead = [m for m in names if is_better(m, mine[m], theirs[m])]
        deltas = ", ".join(f"{m} {mine[m] - theirs[m]:+.{3 if m in ('VIF', 'Qabf') else 2}f}" for m in names)
        return f"- vs {label}: ahead on {len(ahead)} of {len(names)} ({', '.join(ahead) or 'none'}); {deltas}"

    lines = [verdict(label, values) for label, values in others.items()]
    if len(others) > 1:
        best = {m: best_value(m, (values[m] for values in others.values())) for m in names}
        lines.append(verdict("the best of them per metric", best))
    lines += [verdict(f"*{label}*", dict(zip(names, row, strict=True))) for label, row in (paper or {}).items()]
    return "\n".join(lines)


def _paper_rows_table(title: str, ours: dict[str, dict[str, float]], paper: dict[str, Row]) -> str:
    names = PAPER_METRICS
    lines = [f"| {title} | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for label, values in ours.items():
        lines.append(f"| {label} | " + " | ".join(f"{values[m]:.2f}" for m in names) + " |")
    for label, row in paper.items():
        lines.append(f"| *paper: {label}* | " + " | ".join(f"{v:.2f}" for v in row) + " |")
    return "\n".join(lines)


def write_summary(results: Sequence[EvalResult], path: Path) -> Path:
    """``method, <metric>_mean, <metric>_std, ...`` for one dataset."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["method", "pairs", *[f"{m}_{s}" for m in PAPER_METRICS for s in ("mean", "std")]])
        for result in results:
            mean, std = result.mean(), result.std()
            writer.writerow([result.method, len(result.rows),
                             *[f"{v:.6f}" for m in PAPER_METRICS for v in (mean[m], std[m])]])
    return path


def output_change(results_dir: Path, dataset: str, reference: str, label: str) -> dict[str, float]:
    """How far ``label``'s fused images are from ``reference``'s: mean |Δ| and max |Δ| in grey levels,
    and the share of pixels that changed (luminance, 8-bit files)."""
    ref_dir, other_dir = results_dir / dataset / reference, results_dir / dataset / label
    means, maxima, changed = [], [], []
    for path in sorted(ref_dir.glob("*.png")):
        a = np.round(_luma(load_image(path).pixels) * 255)
        b = np.round(_luma(load_image(other_dir / path.name).pixels) * 255)
        diff = np.abs(a - b)
        means.append(diff.mean())
        maxima.append(diff.max())
        changed.append((diff > 0).mean())
    return {"mean_abs": float(np.mean(means)), "max_abs": float(np.max(maxima)),
            "changed": float(np.mean(changed))}


def _luma(pixels: np.ndarray) -> np.ndarray:
    from tgif.io.color import luminance

    return luminance(pixels) if pixels.ndim == 3 else pixels


# ------------------------------------------------------------------------------------------------ figures


def qualitative_figure(results_dir: Path, dataset: str, methods: Sequence[str], pair_id: str | None = None) -> Figure:
    """Sources, each method's result, and TGIF's |F − source| maps for one pair."""
    files = {f.id: f for f in list_pairs(dataset)}
    pair_id = pair_id or next(iter(files))
    pair = files[pair_id].load()
    tgif = load_image(results_dir / dataset / "tgif" / f"{pair_id}.png").pixels
    panels: list[tuple[str, np.ndarray]] = [(f"source 1 ({files[pair_id].path_a.parent.name})", pair.a.pixels),
                                            (f"source 2 ({files[pair_id].path_b.parent.name})", pair.b.pixels)]
    panels += [(m, load_image(results_dir / dataset / m / f"{pair_id}.png").pixels) for m in methods]
    panels += [("|TGIF − source 1|", error_map(tgif, pair.a.pixels) / 255.0),
               ("|TGIF − source 2|", error_map(tgif, pair.b.pixels) / 255.0)]
    columns = 4
    rows = (len(panels) + columns - 1) // columns
    height, width = pair.shape
    fig = Figure(figsize=(3.2 * columns, 3.2 * rows * height / width + 0.4 * rows))
    axes = fig.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (title, image) in zip(axes.flat, panels, strict=False):
        ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
    fig.suptitle(f"{dataset} / {pair_id}", fontsize=10)
    fig.tight_layout()
    return fig


def distribution_figure(results: Sequence[EvalResult]) -> Figure:
    """Per-image metric distributions (box plots), one panel per metric, one box per method."""
    fig = Figure(figsize=(12, 6))
    axes = fig.subplots(2, 3)
    labels = [r.method for r in results]
    for ax, name in zip(axes.flat, PAPER_METRICS, strict=True):
        ax.boxplot([r.values(name) for r in results], showmeans=True)
        ax.set_xticks(range(1, len(labels) + 1), labels, rotation=20, fontsize=8)
        ax.set_title(name, fontsize=10)
    fig.suptitle(f"{results[0].dataset}: per-image metrics ({len(results[0].rows)} pairs; triangle = mean)")
    fig.tight_layout()
    return fig


def curves_figure(log_csv: Path, val_csv: Path | None, title: str) -> Figure:
    """Training loss (smoothed) and validation VIF/Qabf of a committed training log."""
    with log_csv.open() as handle:
        log = list(csv.DictReader(handle))
    fig = Figure(figsize=(11, 3.6))
    ax_loss, ax_val = fig.subplots(1, 2)
    steps = np.array([int(r["step"]) for r in log])
    loss = np.array([float(r["total"]) for r in log])
    window = max(1, len(loss) // 60)
    smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
    ax_loss.plot(steps, loss, alpha=0.25, linewidth=0.5)
    ax_loss.plot(steps[window - 1:], smooth, label=f"loss (mean of {window} logged steps)")
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("step")
    ax_loss.legend(fontsize=8)
    ax_loss.set_title("training loss")
    if val_csv is not None and val_csv.exists():
        with val_csv.open() as handle:
            val = list(csv.DictReader(handle))
        vsteps = [int(r["step"]) for r in val]
        for name in PAPER_METRICS:
            first = float(val[0][name]) or 1.0
            ax_val.plot(vsteps, [float(r[name]) / first for r in val], marker=".", label=name)
        ax_val.set_title("held-out metrics (relative to the first check)")
        ax_val.set_xlabel("step")
        ax_val.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def _save(fig: Figure, path: Path) -> Path:
    if is_main():  # under torchrun only rank 0 writes
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    return path


# ------------------------------------------------------------------------------------------------ the run


def build_results(settings: ResultsSettings | None = None,
                  log: Callable[[str], None] = logger.info) -> Path:
    """Evaluate, benchmark, draw and write ``<docs_dir>/RESULTS.md``; returns its path."""
    from tgif.pipeline import TGIFFuser, default_weights

    settings = settings or ResultsSettings()
    started = time.perf_counter()
    docs, out = Path(settings.docs_dir), Path(settings.results_dir)
    figures = docs / "figures"
    datasets = list(settings.datasets or list_datasets())
    if not datasets:
        from tgif.errors import DatasetError

        raise DatasetError("no datasets found; set TGIF_SHARED to the folder holding data/")
    opts = {"out_dir": out, "limit": settings.limit, "progress": settings.progress}
    fusers: dict[str, TGIFFuser] = {}

    def fuser_for(path: Path) -> TGIFFuser:
        if str(path) not in fusers:
            fusers[str(path)] = TGIFFuser(path, device="auto")
        return fusers[str(path)]

    by_dataset: dict[str, list[EvalResult]] = {}
    throughput: dict[str, float] = {}
    for dataset in datasets:
        folder = resolve_dataset(dataset)
        task = dataset_task(folder) or "ivf"
        key = folder.name
        log(f"evaluating {key}")
        results = [evaluate(folder, "tgif", fuse_fn=tgif_fuse_fn(folder, fuser_for(default_weights(task))), **opts)]
        throughput[key] = len(results[0].rows) / max(sum(float(r["fuse_s"]) for r in results[0].rows), 1e-9)
        results += [evaluate(folder, name, **opts) for name in ("laplacian", "max", "average")]
        if is_main():
            write_summary(results, out / key / "summary.csv")
        by_dataset[key] = results

    sections: list[str] = []
    for title, names, note in TABLES:
        present = [d for d in names if d in by_dataset]
        if not present:
            continue
        sections.append(f"### {title}\n\n{note}\n")
        for d in present:
            sections.append(comparison_table(by_dataset[d], PAPER_ROWS.get(d)) + "\n")
            summary = standing(by_dataset[d], PAPER_ROWS.get(d))
            if summary:
                sections.append(f"TGIF on {d}, mean against mean:\n\n{summary}\n")
    listed = {d for _, names, _ in TABLES for d in names}
    others = [d for d in by_dataset if d not in listed]
    if others:
        sections.append("### Other datasets\n")
        sections += [comparison_table(by_dataset[d]) + "\n" for d in others]

    ablation_md, sensitivity_md = "", ""
    if "msrs_test" in by_dataset:
        ablation: dict[str, dict[str, float]] = {}
        budgets: dict[str, int] = {}
        for key, label, variant, captions in ABLATION_RUNS:
            path = ABLATION_DIR / f"tgif_ivf_{key}.safetensors"
            if path.exists():
                log(f"ablation: {label}")
                budgets[label] = read_metadata(path).steps
                fuse = tgif_fuse_fn(resolve_dataset("msrs_test"), fuser_for(path), variant, captions)
                ablation[label] = evaluate("msrs_test", f"ablation-{key}", fuse_fn=fuse, **opts).mean()
        if ablation:
            paper = {k: v for k, v in PAPER_ABLATION.items()}
            if len(set(budgets.values())) == 1:
                title = f"msrs_test, {next(iter(budgets.values())):,} steps each, same seed"
            else:  # say so rather than hide it
                title = "msrs_test, UNEQUAL budgets: " + ", ".join(f"{k} {v:,}" for k, v in budgets.items())
            ablation_md = _paper_rows_table(title, ablation, paper)
            _save(metrics_figure(ablation, highlight="full", metrics=PAPER_METRICS,
                                 title="Ablation on msrs_test (same training budget and seed)"),
                  figures / "ablation.png")
        sens_rows: list[str] = []
        main = fuser_for(default_weights("ivf"))
        reference = by_dataset["msrs_test"][0]
        for variant, label in SENSITIVITY_VARIANTS:
            log(f"caption sensitivity: {label}")
            name = "tgif" if variant == "true" else f"tgif[{variant}]"
            result = reference if variant == "true" else evaluate(
                "msrs_test", name, fuse_fn=tgif_fuse_fn("msrs_test", main, variant), **opts)
            change = output_change(out, "msrs_test", "tgif", name)
            mean = result.mean()
            moved = f"{change['mean_abs']:.2f} | {change['max_abs']:.0f} | {change['changed'] * 100:.1f}%"
            sens_rows.append(f"| {label} | " + " | ".join(f"{mean[m]:.3f}" for m in PAPER_METRICS) + f" | {moved} |")
        sensitivity_md = ("| captions (same model, msrs_test) | " + " | ".join(PAPER_METRICS)
                          + " | mean abs change vs true (grey levels) | max abs change | pixels changed |\n"
                          + "|---|" + "---:|" * (len(PAPER_METRICS) + 3) + "\n" + "\n".join(sens_rows))
        _save(distribution_figure(by_dataset["msrs_test"]), figures / "distribution_msrs_test.png")

    steering_md = selectivity_md = ""
    if "msrs_test" in by_dataset and is_main():
        steering_md = steering_section(figures, settings.limit, settings.progress, log)
        selectivity_md = selectivity_section(figures, settings.limit, settings.progress, log)
        ablation_md += ablation_steering_section(settings.limit, settings.progress, log)

    qualitative = []
    for task, dataset in QUALITATIVE:
        if dataset in by_dataset:
            qualitative.append(_save(qualitative_figure(out, dataset, ["tgif", "laplacian", "max", "average"]),
                                     figures / f"qualitative_{task}.png"))
    curves = []
    for stem, title in (("ivf_base", "TGIF IVF training (fusion loss)"), ("ivf", "TGIF IVF steering fine-tune"),
                        ("mef", "TGIF MEF training"), ("mff_stage1", "TGIF MFF training, stage 1 (128x128 crops)"),
                        ("mff", "TGIF MFF training, stage 2 (256x256 crops, from stage 1)")):
        log_csv = WEIGHTS_DIR / "logs" / f"tgif_{stem}_train.csv"
        if log_csv.exists():
            curves.append(_save(curves_figure(log_csv, WEIGHTS_DIR / "logs" / f"tgif_{stem}_val.csv", title),
                                figures / f"curves_{stem}.png"))

    speed_md = ""
    if settings.bench and is_main():
        from tgif.bench import PIPELINE_STAGES, bench_pipeline

        log("benchmarking the pipeline")
        speed = bench_pipeline()
        rows = []
        for device, by_size in speed.items():
            for size, row in by_size.items():
                rows.append(f"| {device} | {size} | " + " | ".join(f"{row[s] * 1000:.0f}" for s in PIPELINE_STAGES)
                            + f" | **{row['total'] * 1000:.0f}** | {row['peak_mib']:.0f} |")
        speed_md = ("| device | size | " + " | ".join(f"{s} ms" for s in PIPELINE_STAGES)
                    + " | total ms | peak MiB |\n|---|---|" + "---:|" * (len(PIPELINE_STAGES) + 2) + "\n"
                    + "\n".join(rows))
        (out / "bench_pipeline.json").write_text(json.dumps(speed, indent=1))

    markdown = _render(settings, sections, ablation_md, sensitivity_md, speed_md, throughput, qualitative, curves,
                       figures, docs, time.perf_counter() - started, steering_md, sweep_section(),
                       tile_sweep_section(), selectivity_md)
    path = docs / "RESULTS.md"
    if is_main():
        docs.mkdir(parents=True, exist_ok=True)
        path.write_text(markdown)
    return path


def _device_line() -> str:
    import torch

    from tgif.bench import cpu_description

    line = (f"CPU: {cpu_description()}, {os.cpu_count()} cores, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads)")
    if torch.cuda.is_available():
        line += f"; GPU: {torch.cuda.get_device_name(0)}"
    else:
        line += "; no GPU was available to this run, so there is no GPU table"
    return line


#: The IVF checkpoints the steering table compares: the fusion-only teacher, the steering fine-tune with its pixel
#: grounding head, and the region grounding that replaced that head.
STEERING_WEIGHTS = (("before: fusion loss only (20k steps)", WEIGHTS_DIR / "tgif_ivf_base.safetensors"),
                    ("steering fine-tune, pixel grounding head", WEIGHTS_DIR / "tgif_ivf_steer.safetensors"),
                    ("region grounding (shipped)", WEIGHTS_DIR / "tgif_ivf.safetensors"))


def steering_section(figures: Path, limit: int | None = None, progress: bool = False,
                     log: Callable[[str], None] = logger.info) -> str:
    """The steering benchmark (``tgif steer``) on msrs_test for the checkpoints of :data:`STEERING_WEIGHTS`
    that exist, as markdown, and ``figures/steering_ivf.png`` (neutral, named, text effect per checkpoint)."""
    from tgif.steering import run_steer_benchmark, steer_cases, steering_figure

    present = [(label, path) for label, path in STEERING_WEIGHTS if path.exists()]
    if not present:
        return ""
    rows = []
    for label, path in present:
        log(f"steering benchmark: {path.name}")
        report = run_steer_benchmark(path, "msrs_test", limit=limit, progress=progress)
        med = report.medians()
        rows.append(f"| {label} (`{path.name}`) | {med['delta_in']:.2f} | {med['delta_out']:.2f} | "
                    f"{med['locality']:.1f}x | {100 * med['contrast_gain']:+.1f}% | {med['absent']:.2f} | "
                    f"{med['nothing']:.2f} |")
        pairs = len(report.controls)
    table = ("| checkpoint | Δ inside box | Δ outside | locality | box contrast gain | absent object: Δ | "
             "naming nothing: Δ |\n|---|---:|---:|---:|---:|---:|---:|\n" + "\n".join(rows))
    cases = steer_cases("msrs_test", limit=limit)
    person = next((c for c in cases if c.label == "person"), cases[0])
    _save(steering_figure([path for _, path in present], person), figures / "steering_ivf.png")
    return (f"`tgif steer` on the {pairs} msrs_test pairs where the detector finds a person or a car: each pair "
            "fused with its drafted captions and with a hand-written phrase naming that object and its position "
            "appended to caption 1 (4 phrasings none of which the training used: \"The person on the right is "
            "what matters.\", ...). Medians over pairs x phrasings, in grey levels (0-255). Locality = Δ inside "
            "the box / Δ outside the box grown by 50%; contrast gain = relative change of |mean(box) − mean(ring)|. "
            "The controls append \"The dog <position> is what matters.\" (absent) and \"This is a quiet night "
            "scene.\" (naming nothing): mean |Δ| over the whole frame.\n\n" + table
            + "\n\n![steering](figures/steering_ivf.png)")


#: The IVF checkpoints the selectivity table compares: the pixel-level grounding head, then the region grounding.
SELECTIVITY_WEIGHTS = (("pixel grounding head (previous `tgif_ivf`)", WEIGHTS_DIR / "tgif_ivf_steer.safetensors"),
                       ("region grounding (`tgif_ivf`)", WEIGHTS_DIR / "tgif_ivf.safetensors"))


def selectivity_section(figures: Path, limit: int | None = None, progress: bool = False,
                        log: Callable[[str], None] = logger.info) -> str:
    """``tgif steer --selectivity`` on msrs_test and roadscene_test for the checkpoints of
    :data:`SELECTIVITY_WEIGHTS` that exist, as markdown, and ``figures/selectivity_ivf.png`` (drafted, named A,
    named B, both boxes drawn, per checkpoint)."""
    from tgif.steering import median_cells, run_selectivity, selectivity_cases, selectivity_figure

    present = [(label, path) for label, path in SELECTIVITY_WEIGHTS if path.exists()]
    if not present:
        return ""
    rows = []
    for label, path in present:
        log(f"selectivity benchmark: {path.name}")
        report = run_selectivity(path, limit=limit, progress=progress)
        for title, subset in (("all", None), ("same class, left vs right", True), ("other class", False)):
            rows.append(f"| {label} | {title} | {median_cells(report.medians(subset))}")
        pairs = len(report.controls)
    table = ("| checkpoint | cases | n | Δ named box | Δ other box | selectivity | named: contrast gain | "
             "other: contrast change | Δ outside boxes | named box burnt white | named box white over sources | "
             "absent object: Δ | naming nothing: Δ |\n|---|---|" + "---:|" * 11 + "\n" + "\n".join(rows))
    figure = ""
    for case in selectivity_cases("msrs_test", limit=limit) + selectivity_cases("roadscene_test", limit=limit):
        same = [(i, j) for i in range(len(case.objects)) for j in case.others(i)
                if case.objects[i][0] == case.objects[j][0] == "person"]
        if same:
            _save(selectivity_figure([path for _, path in present], case, *same[0]), figures / "selectivity_ivf.png")
            figure = "\n\n![selectivity](figures/selectivity_ivf.png)"
            break
    return (f"`tgif steer --selectivity` on the {pairs} pairs of msrs_test and roadscene_test with two or more objects "
            "a caption can tell apart (another class, or the same class in another column, boxes not overlapping): "
            "each object named in turn, appended to caption 1 in 3 hand-written phrasings each "
            "(`assets/steering/phrasings.txt`, with words such as \"sedan\", \"guy\", \"coach\", \"on the "
            "left-hand side\" from `assets/steering/words.txt`; none used in training). Per case Δ = mean |F_named − "
            "F_drafted| in the named box and in the other object's box (grey levels), selectivity = their ratio, "
            "contrast gain = relative change of |mean(box) − mean(ring)|; Δ outside = beyond every object's box "
            "grown by 50%; burnt white = share of the named box at ≥ 250 where neither source nor the drafted "
            "captions' fusion is (what the caption burnt), white over sources = at ≥ 250 where neither source is. "
            "Controls: \"Make "
            "the tree on the left stand out.\", \"The dog is what matters.\" (absent, the larger) and \"This is "
            "a quiet night scene.\", mean |Δ| over the frame. Medians.\n\n" + table + figure)


def ablation_steering_section(limit: int | None = None, progress: bool = False,
                              log: Callable[[str], None] = logger.info) -> str:
    """Paper Table 5 with the steering objective: the steering benchmark (its captions drafted in each variant's
    mode) and the msrs_test metrics of each text variant after the same head-only steering fine-tune, as markdown;
    empty when none of ``weights/ablation/tgif_ivf_<key>_steer.safetensors`` exists."""
    from tgif.steering import run_steer_benchmark

    rows, budgets = [], {}
    for key, label, mode in ABLATION_STEER_RUNS:
        path = ABLATION_DIR / f"tgif_ivf_{key}_steer.safetensors"
        if not path.exists():
            continue
        log(f"ablation with steering: {label}")
        meta = read_metadata(path)
        budgets[label] = int(meta.steps) - int(meta.extra.get("base_steps", 0))
        med = run_steer_benchmark(path, "msrs_test", limit=limit, progress=progress, caption_mode=mode).medians()
        rows.append(f"| {label} | {med['delta_in']:.2f} | {med['delta_out']:.2f} | {med['locality']:.1f}x | "
                    f"{100 * med['contrast_gain']:+.1f}% | {med['absent']:.2f} | {med['nothing']:.2f} |")
    if not rows:
        return ""
    steps = ", ".join(f"{v:,}" for v in sorted(set(budgets.values())))
    return ("\n\n### With the steering objective\n\n"
            f"Each text variant above fine-tuned by the same head-only steering recipe ({steps} steps, seed 0, "
            "`configs/ablation/ivf_<variant>_steer.yaml`: trunk frozen, a new grounding head), its drafted captions "
            "written as that variant's captioner writes them; then `tgif steer --caption-mode <mode>` on msrs_test "
            "(medians, grey levels). The trunk is frozen and drafted captions leave the gate almost shut: the full "
            "model's msrs_test metrics move by at most 0.13% (EN 6.637 to 6.641, VIF 0.972 to 0.971, Qabf 0.6362 to "
            "0.6361). The no-text model has no text path: no caption can steer it. Read with care: one seed, 2,500 "
            "steps on 5,000-step models; captions that already name the objects (full, no segmentation) leave a "
            "named phrase less to add than captions that never name one (no detection), which steer most but "
            "also spill most outside the box.\n\n"
            "| variant, after the steering fine-tune | Δ inside box | Δ outside | locality | box contrast gain | "
            "absent object: Δ | naming nothing: Δ |\n|---|---:|---:|---:|---:|---:|---:|\n"
            "| no text | — | — | — | — | — | — |\n" + "\n".join(rows))


#: Committed loss-weight sweeps (``tgif sweep``): (file stem under weights/logs, task, how each run started and was
#: scored). The 12-pair sweeps chose the shipped weights; the 4-pair ones are the first packs' (kept for the record).
SWEEPS = (("sweep_mef_val12", "MEF", "from tgif_ivf_base, 12 held-out pairs"),
          ("sweep_mff_val12", "MFF", "from tgif_ivf_base, 12 held-out pairs"),
          ("sweep_mef", "MEF", "from tgif_ivf_base, the first pack's 4 held-out pairs"),
          ("sweep_mef_scratch", "MEF", "from random weights, 4 held-out pairs"),
          ("sweep_mff", "MFF", "from tgif_ivf_base, the first pack's 4 held-out pairs"))


def _choice_table(rows: list[dict[str, Any]], best: Any, key: str,
                  labels: dict[str, tuple[Callable[[dict[str, Any]], str], str]], margin_digits: int) -> list[str]:
    """A choice's rows as a markdown table: the label columns (header -> (cell of a row, alignment)), the six
    metrics, wins, margin and fidelity, the labels of the row whose ``key`` is ``best`` in bold, and the
    Laplacian pyramid's scores as the last row."""
    lines = ["| " + " | ".join(labels) + " | " + " | ".join(PAPER_METRICS) + " | wins | margin | fidelity |",
             "|" + "".join(f"{align}|" for _, align in labels.values()) + "---:|" * len(PAPER_METRICS)
             + "---:|---:|:---:|"]
    for row in rows:
        bold = "**" if row[key] == best else ""
        cells = " | ".join(f"{bold}{cell(row)}{bold}" for cell, _ in labels.values())
        metrics = " | ".join(f"{row[m]:.3f}" for m in PAPER_METRICS)
        lines.append(f"| {cells} | {metrics} | {int(row['wins'])} | {row['margin']:+.{margin_digits}f} | "
                     f"{'yes' if row['fidelity_kept'] else 'no'} |")
    lines.append("| *Laplacian pyramid* |" + " |" * (len(labels) - 1) + " "
                 + " | ".join(f"*{rows[0]['ref_' + m]:.3f}*" for m in PAPER_METRICS) + " | | | |")
    return lines


def sweep_section() -> str:
    """The committed loss-weight sweeps as markdown tables (held-out training pairs, Laplacian pyramid beside,
    the chosen setting in bold); empty when none is committed."""
    from tgif.train.sweep import FIDELITY_TOLERANCE, choose, read_sweep

    parts = []
    for stem, task, start in SWEEPS:
        path = WEIGHTS_DIR / "logs" / f"{stem}.csv"
        if not path.exists():
            continue
        rows = read_sweep(path)
        best = choose(rows)["setting"]
        title = f"**{task}**, {rows[0]['steps']} steps per setting {start} (`weights/logs/{stem}.csv`):"
        lines = [title, "", *_choice_table(rows, best, "setting", {
            "gradient weight": (lambda row: f"{row['grad_weight']:g}", "---:"),
            "SSIM weight": (lambda row: f"{row['ssim_weight']:g}", "---:")}, margin_digits=3)]
        parts += [*lines, ""]
    if not parts:
        return ""
    intro = ("Each setting trained for the same budget (`tgif sweep`), scored on the pack's held-out training pairs "
             "(never a test set) against the Laplacian pyramid on the same pairs. Choice rule: VIF and Qabf both "
             f"within {FIDELITY_TOLERANCE:.0%} of the pyramid's (*fidelity kept*), then the most metrics above it "
             "(*wins*), then the mean relative difference over the six (*margin*). The chosen setting is in bold.")
    return "\n".join([intro, "", *parts])


def tile_sweep_section() -> str:
    """The committed tile sweeps (``weights/logs/tiles_<task>.csv``, ``tgif sweep-tiles``) as markdown tables,
    the chosen tile (the one the checkpoint names) in bold; empty when none is committed."""
    from tgif.train.sweep import FIDELITY_TOLERANCE, choose, read_tile_sweep

    parts = []
    for path in sorted((WEIGHTS_DIR / "logs").glob("tiles_*.csv")):
        rows = read_tile_sweep(path)
        if not rows:
            continue
        best = choose(rows)["tile"]
        task = path.stem.split("_", 1)[1]
        lines = [f"**tgif_{task}** (`weights/logs/{path.name}`):", "",
                 *_choice_table(rows, best, "tile", {"tile / overlap": (lambda row: row["tile"], "---")},
                                margin_digits=4)]
        parts += [*lines, ""]
    if not parts:
        return ""
    intro = ("A trained checkpoint fused whole and in square tiles of each size (`tgif sweep-tiles`; neighbours "
             "overlap by the second number of pixels and are blended with linear ramps), scored on the held-out "
             "training pairs at the resolution they are fused at, against the Laplacian pyramid on the same pairs. "
             f"Same rule as the loss weights (fidelity within {FIDELITY_TOLERANCE:.0%}, then wins, then margin); "
             "the chosen tile, in bold, is the one the checkpoint names and `tgif fuse`, `tgif eval` and the app "
             "fuse in (`--tile 0`: whole images).")
    return "\n".join([intro, "", *parts])


def _render(settings: ResultsSettings, sections: list[str], ablation_md: str, sensitivity_md: str, speed_md: str,
            throughput: dict[str, float], qualitative: list[Path], curves: list[Path], figures: Path, docs: Path,
            seconds: float, steering_md: str = "", sweep_md: str = "", tile_md: str = "",
            selectivity_md: str = "") -> str:
    rel = lambda p: os.path.relpath(p, docs)  # noqa: E731
    limit = f" **Only the first {settings.limit} pairs of each dataset were used.**" if settings.limit else ""
    parts = [
        "# Results",
        "",
        "*Generated by `tgif results` from the committed weights (`weights/`) and `shared/data`; do not edit by "
        f"hand.* Run time {seconds / 60:.1f} min. {_device_line()}.{limit}",
        "",
        "Metrics as in the CDDFuse evaluator (VIF is VIFp(A,F) + VIFp(B,F)); each fused image is scored as saved "
        "(8-bit PNG, no min-max stretching). Our rows: mean ± std over images. *Italic rows* are published numbers "
        "(not re-measured here; where the dataset differs, the row label says so). Best mean per column in bold. "
        "Per-image CSVs and mean tables: `results/<dataset>/`.",
        "",
        "## Tables 1-4",
        "",
        *sections,
    ]
    if ablation_md:
        parts += ["## Ablation (paper Table 5)", "",
                  "Four IVF models trained from scratch with the same budget and seed "
                  "(`configs/ablation/*.yaml`), evaluated on msrs_test with captions drafted the same way as "
                  "their training captions (`assets/captions/ablation/`). "
                  "The paper gives the no-text and full rows only.", "", ablation_md, "",
                  f"![ablation]({rel(figures / 'ablation.png')})", ""]
    if steering_md:
        parts += ["## Steering: a caption that names an object", "", steering_md, ""]
    if selectivity_md:
        parts += ["## Selectivity: naming one object of several", "", selectivity_md, ""]
    if sweep_md:
        parts += ["## Loss weights for MEF and MFF", "", sweep_md, ""]
    if tile_md:
        parts += ["## Fusion tiles", "", tile_md, ""]
    if sensitivity_md:
        parts += ["## Caption sensitivity", "",
                  "The main IVF model on msrs_test with different captions for the same pairs. "
                  "*Absent objects* names things that are not in the scene.", "", sensitivity_md, ""]
    parts += ["## Figures", ""]
    parts += [f"![{p.stem}]({rel(p)})" for p in qualitative]
    if (figures / "distribution_msrs_test.png").exists():
        parts += ["", f"![distribution]({rel(figures / 'distribution_msrs_test.png')})"]
    parts += ["", *[f"![{p.stem}]({rel(p)})" for p in curves], ""]
    if speed_md:
        parts += ["## Speed", "",
                  "`tgif bench pipeline`: median latency per stage for one IVF pair (both sources perceived and "
                  "captioned), each size in a fresh process; peak = the process's peak resident memory on CPU "
                  "(models included) or peak allocated memory on CUDA.", "", speed_md, ""]
    if throughput:
        parts += ["Batch evaluation throughput of the TGIF network (pairs per second of fusion time, stored "
                  "captions, text features cached): "
                  + ", ".join(f"{d} {v:.2f}" for d, v in throughput.items()) + ".", ""]
    return "\n".join(parts)
