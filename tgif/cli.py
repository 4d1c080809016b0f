"""The ``tgif`` command line.

    tgif fuse SRC1 SRC2 -o OUT [--method laplacian] [--task ivf]
    tgif metrics FUSED SRC1 SRC2 [--metrics all] [--json]
    tgif eval --dataset msrs_test --method laplacian [--out results]
    tgif caption SRC1 SRC2 --task ivf [--out-dir DIR]
    tgif caption --dataset msrs_test --out captions.jsonl
    tgif pack --task ivf && tgif train --task ivf --steps 2000
    tgif train --task ivf --config configs/ivf_steer.yaml && tgif steer --weights runs/ivf_steer/last.safetensors
    tgif datasets
    tgif bench metrics

Errors print one line (``tgif: error: ...``) and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tgif import __version__
from tgif.errors import TgifError
from tgif.names import BASELINE_NAMES, CAPTION_MODES
from tgif.tasks import TASK_NAMES, TASKS

logger = logging.getLogger("tgif")

EXIT_USER_ERROR = 2
EXIT_UNEXPECTED = 1


def _add_loading_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--resize", action="store_true", help="resize the second image to the first when sizes differ")
    parser.add_argument("--max-pixels", type=int, default=None,
                        help="pixel limit per image (default: TGIF_MAX_PIXELS or 16.8 MP)")
    parser.add_argument("--downscale", action="store_true",
                        help="downscale images over the pixel limit instead of refusing them")


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


TILE_HELP = ("tiles to fuse in, SIZE/OVERLAP pixels (e.g. 320/32), or 0 for whole images (default: the checkpoint's, "
             "see tgif sweep-tiles; larger inputs are tiled to bound memory either way)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with all sub-commands (built from :mod:`tgif.names` and :mod:`tgif.tasks` only: no
    numpy, torch or model imports, so that ``tgif --help`` starts at once)."""
    parser = argparse.ArgumentParser(prog="tgif",
                                     description="Text-guided image fusion: fuse, score and benchmark image pairs.")
    parser.add_argument("--version", action="version", version=f"tgif {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log conversions made while loading images")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    fuse = sub.add_parser("fuse", help="fuse two images into one")
    fuse.add_argument("src1", help="first source (IVF: infrared, MIF: MRI, MEF: under-exposed, MFF: near focus)")
    fuse.add_argument("src2", help="second source (IVF: visible, MIF: CT/PET/SPECT, MEF: over-exposed, MFF: far focus)")
    fuse.add_argument("-o", "--output", required=True, help="output image path (.png recommended)")
    fuse.add_argument("--method", default="tgif", choices=["tgif"] + sorted(BASELINE_NAMES),
                      help="fusion method (default: tgif, the trained text-guided network; or a classic baseline)")
    fuse.add_argument("--task", choices=TASK_NAMES, default=None,
                      help="fusion task and modalities (mif: CT, or PET/SPECT when the files' folders say so; "
                           "default: from the folders, else ivf)")
    fuse.add_argument("--detector", default=None,
                      help="YOLO weights for the detection maps (.pt or an export folder; default: TGIF_YOLO_WEIGHTS, "
                           "else the bundled YOLO11n export)")
    fuse.add_argument("--weights", default=None, help="TGIF checkpoint (default: weights/tgif_<task>.safetensors)")
    fuse.add_argument("--caption1", default=None,
                      help="caption of SRC1 (with --caption2; default: drafted from the maps)")
    fuse.add_argument("--caption2", default=None, help="caption of SRC2")
    fuse.add_argument("--no-text", action="store_true", help="TGIF without text guidance")
    fuse.add_argument("--tile", default=None, help=TILE_HELP)
    fuse.add_argument("--captioner", default="auto", choices=["auto", "template", "gpt"],
                      help="who drafts captions when --caption1/--caption2 are not given (given captions: no caption "
                           "server is asked; the template drafter writes the drafts the network's trunk reads)")
    fuse.add_argument("--metrics", action="store_true",
                      help="also print the six metrics of the saved result (tgif: beside the best classic baseline's)")
    _add_loading_options(fuse)

    metrics = sub.add_parser("metrics", help="score a fused image against its two sources")
    metrics.add_argument("fused")
    metrics.add_argument("src1")
    metrics.add_argument("src2")
    metrics.add_argument("--metrics", dest="names", default=None,
                         help="comma list of EN,SD,SF,AG,VIF,Qabf,SSIM,MI,SCD or 'all' (default: the paper's six)")
    metrics.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _add_loading_options(metrics)

    ev = sub.add_parser("eval", help="evaluate methods over datasets (per-image CSV + mean table)")
    ev.add_argument("--dataset", "--datasets", default=None,
                    help="dataset name(s) in shared/data, comma list, a folder, or 'all'")
    ev.add_argument("--tasks", default=None,
                    help="instead of --dataset: every dataset of these tasks (comma list or 'all')")
    ev.add_argument("--method", "--methods", default="laplacian",
                    help=f"method(s), comma list or 'all' ({', '.join(BASELINE_NAMES)}, tgif, and tgif[empty], "
                         "tgif[swapped],"
                         " tgif[none] for the caption-sensitivity variants)")
    ev.add_argument("--weights", default=None,
                    help="TGIF checkpoint (default: weights/tgif_<dataset task>.safetensors)")
    ev.add_argument("--tile", default=None, help=TILE_HELP)
    ev.add_argument("--metrics", dest="names", default=None, help="metric names or 'all' (default: the paper's six)")
    ev.add_argument("--out", default="results", help="output folder for fused PNGs and CSVs (default: results)")
    ev.add_argument("--limit", type=int, default=None, help="only the first N pairs of each dataset")
    ev.add_argument("--per-image", action="store_true", help="also print each per-image CSV to the terminal")
    ev.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    cap = sub.add_parser("caption", help="detection/segmentation maps and a caption per source image")
    cap.add_argument("sources", nargs="*", help="one or two source images (or use --dataset)")
    cap.add_argument("--dataset", help="caption every image of a dataset folder (name in shared/data, or a path)")
    cap.add_argument("--out", help="with --dataset: the JSONL file to append to (resumable)")
    cap.add_argument("--out-dir", default="captions_out", help="with sources: folder for the maps and captions.json")
    cap.add_argument("--maps", default=None, help="with --dataset: also write the maps into this folder")
    cap.add_argument("--task", choices=TASKS, default=None, help="fusion task (default: from the dataset, else ivf)")
    cap.add_argument("--modalities", default=None,
                     help="with sources: comma list of modality names, e.g. ir,vi (default: from the task)")
    cap.add_argument("--captioner", default="auto", choices=["auto", "template", "gpt"],
                     help="auto = GPT when OPENAI_API_KEY is set, else the offline template drafter")
    cap.add_argument("--segmenter", default="classic", choices=["classic", "mobile_sam", "sam"])
    cap.add_argument("--checkpoint", default=None, help="segmenter checkpoint for sam/mobile_sam")
    cap.add_argument("--detector", default=None,
                     help="YOLO weights (default: TGIF_YOLO_WEIGHTS, else the bundled YOLO11n export)")
    cap.add_argument("--mode", default="full",
                     help="caption inputs: full, image+detection, image+segmentation, image, none")
    cap.add_argument("--limit", type=int, default=None, help="with --dataset: at most N new images")
    cap.add_argument("--no-cache", action="store_true", help="do not read or write the perception cache")
    cap.add_argument("--no-progress", action="store_true", help="hide the progress bar")

    pack = sub.add_parser("pack", help="build a training pack (images + cached caption features) for a task")
    pack.add_argument("--task", required=True, choices=["ivf", "mef", "mff"])
    pack.add_argument("--out", default=None, help="pack file (default: runs/packs/<task>.pt)")
    pack.add_argument("--captions-dir", default=None, help="caption JSONL folder (default: assets/captions/train)")
    pack.add_argument("--text-encoder", default="minilm", help="minilm, blip2 or clip")
    pack.add_argument("--max-side", type=int, default=None, help="downscale sources to this long side (task preset)")
    pack.add_argument("--max-tokens", type=int, default=None, help="tokens kept per caption (task preset)")
    pack.add_argument("--text-dtype", choices=["float16", "int8"], default=None)
    pack.add_argument("--image-codec", default=None, help="png or jpeg:<quality> (task preset)")
    pack.add_argument("--val-count", type=int, default=None,
                      help="held-out pairs, spread over the task's validation dataset (default: 4 for ivf and mff, "
                           "12 for mef)")
    pack.add_argument("--synthetic-per-image", type=int, default=None,
                      help="mff, mef: synthetic pairs made from each image of shared/train/natural (focus splits, "
                           "exposure brackets; task preset)")
    pack.add_argument("--auxiliary-weight", type=float, default=None,
                      help="sampling weight of the auxiliary pairs together, relative to the main pairs (task preset)")

    tr = sub.add_parser("train", help="train the TGIF network for a task")
    tr.add_argument("--task", required=True, choices=["ivf", "mef", "mff"])
    tr.add_argument("--config", default=None, help="YAML/JSON file of training settings (command-line flags win)")
    tr.add_argument("--pack", default=None, help="training pack (default: runs/packs/<task>.pt)")
    tr.add_argument("--out", default=None, help="run folder (default: runs/<task>)")
    tr.add_argument("--steps", type=int, default=None)
    tr.add_argument("--batch-size", type=int, default=None)
    tr.add_argument("--crop", type=int, default=None)
    tr.add_argument("--lr", type=float, default=None)
    tr.add_argument("--checkpoint-every", type=int, default=None)
    tr.add_argument("--val-every", type=int, default=None)
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--procs", type=int, default=None,
                    help="CPU data-parallel processes sharing each step's batch (default 1; same maths)")
    tr.add_argument("--init-from", default=None, help="start from this TGIF checkpoint (e.g. another task's)")
    tr.add_argument("--grad-weight", type=float, default=None, help="weight of the gradient term (default: paper's)")
    tr.add_argument("--ssim-weight", type=float, default=None, help="weight of the SSIM term (default: paper's)")
    tr.add_argument("--no-text", action="store_true", help="train the no-text ablation")
    tr.add_argument("--resume", action="store_true", help="continue from <out>/last_state.pt")
    tr.add_argument("--no-progress", action="store_true")

    sw = sub.add_parser("sweep", help="loss-weight sweep: short runs per (gradient, SSIM) weight, scored on the "
                                      "held-out training pairs against the Laplacian pyramid")
    sw.add_argument("--task", required=True, choices=["mef", "mff"])
    sw.add_argument("--config", default=None, help="settings of every run (default: configs/<task>.yaml)")
    sw.add_argument("--grad-weights", required=True, help="comma list of gradient-term weights")
    sw.add_argument("--ssim-weights", required=True, help="comma list of SSIM-term weights")
    sw.add_argument("--steps", type=int, default=1000, help="step budget of every run (default: 1000)")
    sw.add_argument("--procs", type=int, default=None, help="CPU processes per run (see tgif train --procs)")
    sw.add_argument("--out", default=None, help="sweep folder (default: runs/sweep_<task>)")
    sw.add_argument("--no-progress", action="store_true")

    ts = sub.add_parser("sweep-tiles", help="choose the tiles a checkpoint fuses in: score it fused whole and in "
                                            "each tile size on held-out training pairs against the pyramid")
    ts.add_argument("--task", required=True, choices=["ivf", "mef", "mff"])
    ts.add_argument("--weights", default=None, help="TGIF checkpoint (default: weights/tgif_<task>.safetensors)")
    ts.add_argument("--pack", default=None,
                    help="pack whose held-out pairs score the tiles, best at the resolution images are fused at "
                         "(tgif pack --max-side; default: runs/packs/<task>.pt)")
    ts.add_argument("--tiles", default=",".join(f"{size}/{overlap}" for size in (512, 384, 320, 256, 192, 128)
                                               for overlap in (32, 64)),
                    help="comma list of SIZE/OVERLAP to try beside whole images (default: sizes 512, 384, 320, 256, "
                         "192 and 128, each with overlaps of 32 and 64)")
    ts.add_argument("--out", default=None, help="table of scores (default: runs/tiles_<task>.csv)")
    ts.add_argument("--apply", action="store_true",
                    help="write the chosen tile into the checkpoint's metadata (whole images: remove it)")
    ts.add_argument("--no-progress", action="store_true")

    st = sub.add_parser("steer", help="steering benchmark: does naming an object in a caption bring it out, "
                                      "there only?")
    st.add_argument("--weights", default=None,
                    help="TGIF checkpoint(s), comma list (default: weights/tgif_ivf.safetensors)")
    st.add_argument("--selectivity", action="store_true",
                    help="name one object of several in turn and measure the named and the other objects' boxes "
                         "(datasets: msrs_test,roadscene_test; phrasings and words: assets/steering)")
    st.add_argument("--dataset", default=None,
                    help="IVF dataset name or folder (default: msrs_test; with --selectivity a comma list, default "
                         "msrs_test,roadscene_test)")
    st.add_argument("--phrasings", default=None,
                    help="file of phrasings, one per line with {label} and {position} (default: the held-out set)")
    st.add_argument("--words", default=None,
                    help="with --selectivity: file of 'name = other, words' a user might say (default: "
                         "assets/steering/words.txt)")
    st.add_argument("--captions", default=None, help="caption JSONL of the dataset (default: assets/captions/data)")
    st.add_argument("--caption-mode", default="full", choices=CAPTION_MODES,
                    help="draft the captions as this ablation mode would (default: full)")
    st.add_argument("--limit", type=int, default=None, help="at most N pairs")
    st.add_argument("--csv", default=None, help="write the per-pair rows here (one file per checkpoint: stem added)")
    st.add_argument("--json", action="store_true", help="print the report as JSON")
    st.add_argument("--medians-only", action="store_true", help="print only the medians")
    st.add_argument("--no-progress", action="store_true")

    ex = sub.add_parser("export", help="store a run's checkpoint (fp16) as the task's weights: selected.safetensors "
                                       "when the run selected one, else last.safetensors; its logs go to logs/ and "
                                       "its curves.png to curves_<name>.png beside it")
    ex.add_argument("--task", required=True, choices=["ivf", "mef", "mff"])
    ex.add_argument("--run", default=None, help="run folder (default: runs/<task>)")
    ex.add_argument("--out", default=None, help="default: weights/tgif_<task>.safetensors")

    sub.add_parser("datasets", help="list the datasets found in the shared data folder")

    bench = sub.add_parser("bench", help="print timings")
    bench.add_argument("target", choices=["metrics", "perception", "fuse", "pipeline", "session", "tiles", "train"],
                       help="what to time")
    bench.add_argument("--weights", default=None,
                       help="fuse: TGIF checkpoint(s), comma list: each timed in turn, ratios to the first "
                            "(default: random weights, same cost)")
    bench.add_argument("--tile", default=None,
                       help="tiles: SIZE/OVERLAP to time against whole images (default: the checkpoint's)")
    bench.add_argument("--size", default="640x480", help="WIDTHxHEIGHT (default: 640x480)")
    bench.add_argument("--repeat", type=int, default=5, help="runs per measurement; the median is printed")
    bench.add_argument("--task", default="mef", choices=["ivf", "mef", "mff"], help="train: the pack's task")
    bench.add_argument("--pack", default=None, help="train: training pack (default: runs/packs/<task>.pt)")
    bench.add_argument("--procs", default="1,2", help="train: process counts to compare (default: 1,2)")
    bench.add_argument("--against", default=None, metavar="REV",
                       help="train: also time the training loop of this git revision (first row; ratios to it)")

    res = sub.add_parser("results", help="regenerate docs/RESULTS.md and docs/figures (all tables, figures, speed)")
    res.add_argument("--docs", default="docs", help="folder for RESULTS.md and figures/ (default: docs)")
    res.add_argument("--out", default="results", help="per-image CSVs and fused images (default: results)")
    res.add_argument("--dataset", default=None, help="only these datasets (comma list; default: all)")
    res.add_argument("--limit", type=int, default=None, help="only the first N pairs of each dataset (quick check)")
    res.add_argument("--no-bench", action="store_true", help="skip the speed benchmark")
    res.add_argument("--no-progress", action="store_true")
    return parser


def _print_metrics_table(values: dict[str, float]) -> None:
    from tgif.metrics import METRICS

    width = max(len(n) for n in values)
    for name, value in values.items():
        spec = METRICS[name]
        unit = f"  ({spec.unit})" if spec.unit else ""
        print(f"{name:<{width}}  {value:10.4f}  {spec.title}{unit}")


def _print_versus_baselines(values: dict[str, float], baselines: dict[str, dict[str, float]]) -> None:
    """Metric, TGIF's value, the best classic baseline's value and name, and which is ahead."""
    from tgif.metrics import METRICS, best_value, is_better

    print(f"{'metric':<6}  {'tgif':>10}  {'best baseline':>13}  {'':<10}  {'':<6}  measures")
    for name, value in values.items():
        best = best_value(name, (scores[name] for scores in baselines.values()))
        who = next(method for method, scores in baselines.items() if scores[name] == best)
        mark = "ahead" if is_better(name, value, best) else ("tied" if value == best else "behind")
        print(f"{name:<6}  {value:10.4f}  {best:13.4f}  {who:<10}  {mark:<6}  {METRICS[name].title}")


def _cmd_fuse(args: argparse.Namespace) -> int:
    from tgif.baselines import get_baseline
    from tgif.io import load_pair, save_image
    from tgif.metrics import compute_metrics, gray_levels_of, read_gray_levels
    from tgif.tasks import resolve_task

    on_large = "downscale" if args.downscale else "error"
    spec = resolve_task(args.task, [args.src1, args.src2])
    task = spec.task if args.task is not None or args.method == "tgif" else None
    pair = load_pair(args.src1, args.src2, resize=args.resize, max_pixels=args.max_pixels, on_large=on_large, task=task)
    for source in (pair.a, pair.b):
        for note in source.notes:
            logger.info("%s: %s", source.name, note)
    if args.method == "tgif":
        from tgif.perception import Perceiver, YoloDetector
        from tgif.pipeline import TGIFFuser, default_weights

        if (args.caption1 is None) != (args.caption2 is None):
            raise TgifError("give both --caption1 and --caption2, or neither (to draft them from the maps)")
        for flag, caption in (("--caption1", args.caption1), ("--caption2", args.caption2)):
            if caption is not None:
                try:
                    caption.encode("utf-8")
                except UnicodeEncodeError:  # bytes that are not UTF-8 arrive as lone surrogates
                    raise TgifError(f"{flag} is not valid UTF-8 text; pass the caption in UTF-8") from None
        if args.caption1 is not None:
            from tgif.captions.user_text import clean_caption

            args.caption1, args.caption2 = clean_caption(args.caption1), clean_caption(args.caption2)
        # like the app: without a loadable detector, segmentation-only captions and one note (not an error)
        perceiver = Perceiver(detector=YoloDetector(args.detector) if args.detector else None, detector_optional=True)
        captions = (args.caption1, args.caption2) if args.caption1 is not None else None
        # with both captions given, the drafts only name the scene the trunk reads: the offline drafter writes them,
        # and no caption server is asked for a draft nobody reads
        captioner = "template" if captions is not None else args.captioner
        fuser = TGIFFuser(args.weights or default_weights(spec.task), captioner=captioner, perceiver=perceiver,
                          tile=args.tile)
        # as in the app: given captions steer over the trunk of the pair's drafted captions
        result = fuser.session(pair, spec).fuse(captions, use_text=not args.no_text, draft_scene=True)
        fused = result.image
        for label, caption, source in zip(("caption 1", "caption 2"), result.captions, result.caption_sources):
            print(f"{label} ({source or 'off'}): {caption}")
        if result.scene_captions is not None and result.scene_captions != result.captions:
            read = "grounding head" if fuser.grounds_regions else "grounding head and decoder"
            print(f"note: the network's trunk read the drafted captions, the given ones its {read}, as the app "
                  "fuses an edit")
            if captions is not None:
                print("note: captions given, so those drafts came from the offline template drafter "
                      "(no caption-server request)")
        for note in result.notes:
            print(f"note: {note}")
        print("time: " + ", ".join(f"{k} {v:.2f} s" for k, v in result.seconds.items()))
    else:
        fused = get_baseline(args.method).fuse(pair)
    out = save_image(args.output, fused)
    kind = "RGB" if fused.ndim == 3 else "grey"
    print(f"wrote {out} ({pair.size[0]}x{pair.size[1]} {kind}, method {args.method})")
    if args.metrics:
        sources = gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels)
        values = compute_metrics(read_gray_levels(out), *sources)
        if args.method == "tgif":
            from tgif.baselines import BASELINES

            _print_versus_baselines(values, {name: compute_metrics(gray_levels_of(b.fuse(pair)), *sources)
                                             for name, b in BASELINES.items()})
        else:
            _print_metrics_table(values)
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from tgif.io import load_image, load_pair
    from tgif.metrics import compute_metrics, gray_levels_of

    on_large = "downscale" if args.downscale else "error"
    fused = load_image(args.fused, max_pixels=args.max_pixels, on_large=on_large)
    pair = load_pair(args.src1, args.src2, resize=args.resize, max_pixels=args.max_pixels, on_large=on_large)
    if fused.size != pair.size:
        from tgif.errors import PairSizeError

        raise PairSizeError(
            f"{fused.name} is {fused.size[0]}x{fused.size[1]} but the sources are {pair.size[0]}x{pair.size[1]};"
            " metrics need the fused image at the sources' size"
        )
    values = compute_metrics(
        gray_levels_of(fused.pixels), gray_levels_of(pair.a.pixels), gray_levels_of(pair.b.pixels), args.names
    )
    if args.json:
        print(json.dumps(values, indent=2))
    else:
        _print_metrics_table(values)
    return 0


def _tgif_eval_fn(dataset: str, method: str, weights: str | None, fusers: dict, tile: str | None = None):
    """The fuse function of ``tgif`` or ``tgif[<caption variant>]`` on a dataset (fusers cached per checkpoint;
    ``tile`` as ``tgif eval --tile``)."""
    from tgif.evaluation import CAPTION_VARIANTS, tgif_fuse_fn
    from tgif.io.datasets import dataset_task, resolve_dataset
    from tgif.pipeline import TGIFFuser, default_weights

    variant = method[len("tgif"):].strip("[]") or "true"
    if variant not in CAPTION_VARIANTS:
        variants = ", ".join(f"tgif[{v}]" for v in CAPTION_VARIANTS[1:])
        raise TgifError(f"unknown method {method!r}; TGIF variants: tgif, {variants}")
    path = str(weights or default_weights(dataset_task(resolve_dataset(dataset)) or "ivf"))
    if path not in fusers:
        fusers[path] = TGIFFuser(path, tile=tile)
    return tgif_fuse_fn(dataset, fusers[path], variant)


def _cmd_eval(args: argparse.Namespace) -> int:
    from tgif.baselines import BASELINES, get_baseline
    from tgif.evaluation import evaluate, markdown_table
    from tgif.io import list_datasets
    from tgif.io.datasets import dataset_task
    from tgif.metrics import resolve_metric_names
    from tgif.parallel import is_main

    if bool(args.dataset) == bool(args.tasks):
        raise TgifError("give --dataset or --tasks (one of them)")
    if args.tasks:
        tasks = set(TASKS) if args.tasks.strip().lower() == "all" else set(_split(args.tasks))
        unknown = tasks - set(TASKS)
        if unknown:
            raise TgifError(f"unknown task(s) {', '.join(sorted(unknown))}; choose from {', '.join(TASKS)} or all")
        datasets = [d for d in list_datasets() if dataset_task(d) in tasks]
    else:
        datasets = list_datasets() if args.dataset.strip().lower() == "all" else _split(args.dataset)
    if not datasets:
        raise TgifError("no datasets found; set TGIF_SHARED to the folder holding data/")
    methods = list(BASELINES) if args.method.strip().lower() == "all" else _split(args.method)
    for method in methods:
        if not method.startswith("tgif"):
            get_baseline(method)  # fail before any work on a typo
    if args.tile is not None:
        from tgif.pipeline import FusionTile

        FusionTile.parse(args.tile)  # likewise
    names = resolve_metric_names(args.names)
    fusers: dict = {}
    for dataset in datasets:
        results = []
        for method in methods:
            fuse_fn = (_tgif_eval_fn(dataset, method, args.weights, fusers, args.tile) if method.startswith("tgif")
                       else None)
            results.append(evaluate(dataset, method, fuse_fn=fuse_fn, metrics=names, out_dir=args.out,
                                    limit=args.limit, progress=not args.no_progress))
        if not is_main():  # under torchrun rank 0 reports
            continue
        for result in results:
            if args.per_image and result.csv_path is not None:
                print(f"\n# {result.dataset} / {result.method}")
                print(result.csv_path.read_text().rstrip())
        print()
        print(markdown_table(results))
        if args.out:
            from tgif.results import write_summary

            print(f"mean table: {write_summary(results, Path(args.out) / results[0].dataset / 'summary.csv')}")
        for result in results:
            print(f"per-image CSV: {result.csv_path}")
    return 0


def _cmd_caption(args: argparse.Namespace) -> int:
    from tgif.captions import CAPTION_MODES, build_captioner
    from tgif.captions.dataset import caption_dataset, caption_image, caption_record, modality_name, save_maps
    from tgif.io import load_image
    from tgif.io.datasets import TASK_MODALITIES
    from tgif.parallel import is_main
    from tgif.perception import Perceiver, YoloDetector, build_segmenter

    if args.mode not in CAPTION_MODES:
        raise TgifError(f"unknown caption mode {args.mode!r}; choose from {', '.join(CAPTION_MODES)}")
    if bool(args.dataset) == bool(args.sources):
        raise TgifError("give either one or two source images, or --dataset (not both)")
    seg_options = {"checkpoint": args.checkpoint} if args.segmenter != "classic" else {}
    perceiver = Perceiver(YoloDetector(args.detector), build_segmenter(args.segmenter, **seg_options),
                          cache=not args.no_cache)
    captioner = build_captioner(args.captioner)
    if args.dataset:
        if not args.out:
            raise TgifError("--dataset needs --out FILE.jsonl")
        new, skipped = caption_dataset(args.dataset, args.out, perceiver=perceiver, captioner=captioner,
                                       mode=args.mode, task=args.task, maps_dir=args.maps, limit=args.limit,
                                       progress=not args.no_progress)
        if is_main():
            print(f"captioned {new} images, skipped {skipped} already in {args.out}")
        return 0
    if len(args.sources) > 2:
        raise TgifError("give at most two source images")
    task = args.task or "ivf"
    folders = _split(args.modalities) if args.modalities else list(TASK_MODALITIES[task])
    out_dir = Path(args.out_dir)
    records = []
    for path, folder in zip(args.sources, folders):
        image = load_image(path)
        source = caption_image(image.pixels, modality=modality_name(folder), task=task, perceiver=perceiver,
                               captioner=captioner, mode=args.mode)
        record = caption_record(source, file=str(path), task=task)
        record["maps"] = save_maps(source, out_dir, Path(path).stem + f"_{folder}")
        records.append(record)
        if source.caption.fallback_reason:
            print(f"note: {source.caption.fallback_reason}")
        print(f"[{record['modality']}] {path}")
        print(f"  caption ({record['captioner']}): {record['caption']}")
        print(f"  maps: {record['maps']['detection']}, {record['maps']['segmentation']}")
        timing = ", ".join(f"{k} {v:.2f} s" for k, v in record["seconds"].items())
        print(f"  time: {timing}{' (perception from cache)' if record['perception_cached'] else ''}")
    (out_dir / "captions.json").write_text(json.dumps(records, indent=2))
    print(f"wrote {out_dir / 'captions.json'}")
    return 0


def _cmd_pack(args: argparse.Namespace) -> int:
    from tgif.train.pack import DEFAULT_CAPTIONS_DIR, build_pack

    out = Path(args.out or f"runs/packs/{args.task}.pt")
    summary = build_pack(args.task, out, captions_dir=args.captions_dir or DEFAULT_CAPTIONS_DIR,
                         text_encoder=args.text_encoder, crop_source_max_side=args.max_side,
                         max_tokens=args.max_tokens, text_dtype=args.text_dtype, image_codec=args.image_codec,
                         val_count=args.val_count, synthetic_per_image=args.synthetic_per_image,
                         auxiliary_weight=args.auxiliary_weight)
    print(f"wrote {summary.path}: {summary.mebibytes:.1f} MiB, pairs {summary.pairs_by_dataset}, "
          f"{summary.captions} captions ({summary.truncated_captions} truncated), {summary.seconds:.0f} s")
    return 0


def _load_settings_file(path: str) -> dict:
    text = Path(path).read_text()
    if path.endswith((".yaml", ".yml")):
        import yaml

        data = yaml.safe_load(text)
    else:
        data = json.loads(text)
    if not isinstance(data, dict):
        raise TgifError(f"{path}: expected a mapping of training settings")
    return data


def _cmd_train(args: argparse.Namespace) -> int:
    from dataclasses import fields

    from tgif.train.loop import TrainSettings, train

    values: dict = _load_settings_file(args.config) if args.config else {}
    if values.get("objective") == "steer":
        return _train_steering(args, values)
    if values.get("objective") == "ground":
        return _train_grounding(args, values)
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise TgifError(f"{args.config}: unknown settings {unknown}; known: {sorted(known)}")
    flags = {"pack": args.pack, "out_dir": args.out, "steps": args.steps, "batch_size": args.batch_size,
             "crop": args.crop, "lr": args.lr, "checkpoint_every": args.checkpoint_every,
             "val_every": args.val_every, "seed": args.seed, "procs": args.procs, "grad_weight": args.grad_weight,
             "ssim_weight": args.ssim_weight, "init_from": args.init_from}
    values.update({k: v for k, v in flags.items() if v is not None})
    if args.no_text:
        values["use_text"] = False
    values["task"] = args.task
    values.setdefault("pack", f"runs/packs/{args.task}.pt")
    values.setdefault("out_dir", f"runs/{args.task}")
    _require_pack(values["pack"], args.task)
    try:
        settings = TrainSettings(**values)
    except ValueError as exc:
        raise TgifError(f"training settings: {exc}") from exc
    checkpoint = train(settings, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {checkpoint}")
    if settings.select:
        with (checkpoint.parent / "selection.csv").open() as handle:
            chosen = next(row for row in csv.DictReader(handle) if row["chosen"] == "1")
        kept = "yes" if chosen["fidelity_kept"] == "1" else "no"
        print(f"selected on the held-out pairs: step {chosen['step']} of {settings.steps} ({chosen['wins']} of 6 "
              f"metrics above the Laplacian pyramid, fidelity kept: {kept}; every candidate in "
              f"{checkpoint.parent / 'selection.csv'})")
    return 0


def _require_pack(path: str | Path, task: str) -> Path:
    """``path`` as a Path when the training pack is there; else the error that says how to build it."""
    if not Path(path).exists():
        raise TgifError(f"training pack {path} not found; build it with: tgif pack --task {task}")
    return Path(path)


def _print_choice_table(title: str, rows: list[dict], label: str, width: int, margin_digits: int) -> None:
    """Print a sweep's rows (``label`` column, the six metrics, wins, margin, fidelity) and the pyramid's scores."""
    from tgif.metrics import PAPER_METRICS
    from tgif.train.sweep import FIDELITY_TOLERANCE

    print(f"{title} (wins over the Laplacian pyramid; fidelity = VIF and Qabf within {FIDELITY_TOLERANCE:.0%} of it):")
    print(f"  {label:<{width}}" + "".join(f"{m:>8}" for m in PAPER_METRICS) + "  wins  margin  fidelity")
    for row in rows:
        print(f"  {row[label]:<{width}}" + "".join(f"{row[m]:8.3f}" for m in PAPER_METRICS) +
              f"  {row['wins']:>4}  {row['margin']:+.{margin_digits}f}  {'yes' if row['fidelity_kept'] else 'no':>8}")
    print(f"  {'laplacian':<{width}}" + "".join(f"{rows[0]['ref_' + m]:8.3f}" for m in PAPER_METRICS))


def _cmd_sweep(args: argparse.Namespace) -> int:
    """``tgif sweep``: one short run per loss-weight pair, the table and the chosen pair printed."""
    from tgif.train.loop import TrainSettings
    from tgif.train.sweep import choose, run_sweep

    values: dict = _load_settings_file(args.config or f"configs/{args.task}.yaml")
    out = Path(args.out or f"runs/sweep_{args.task}")
    values.update(task=args.task, steps=args.steps, out_dir=str(out))  # each setting runs in a folder below it
    if args.procs is not None:
        values["procs"] = args.procs
    _require_pack(values["pack"], args.task)
    try:
        base = TrainSettings(**values)
        grads, ssims = ([float(v) for v in _split(text)] for text in (args.grad_weights, args.ssim_weights))
    except ValueError as exc:
        raise TgifError(f"sweep settings: {exc}") from exc
    rows = run_sweep(base, grads, ssims, out, progress=not args.no_progress)
    _print_choice_table(f"{args.task} loss-weight sweep, {args.steps} steps each, scored on the held-out training "
                        "pairs", rows, "setting", 12, 3)
    best = choose(rows)
    print(f"chosen: grad_weight {best['grad_weight']:g}, ssim_weight {best['ssim_weight']:g} ({out / 'sweep.csv'})")
    return 0


def _cmd_sweep_tiles(args: argparse.Namespace) -> int:
    """``tgif sweep-tiles``: a checkpoint scored whole and in each tile size; the table and the choice printed."""
    from tgif.model import update_extra
    from tgif.pipeline import FUSION_TILE_KEY, FusionTile, default_weights
    from tgif.train.data import PackDataset
    from tgif.train.sweep import choose, run_tile_sweep

    weights = Path(args.weights or default_weights(args.task))
    tiles = [None] + [FusionTile.parse(spec) for spec in _split(args.tiles)]
    pack = _require_pack(args.pack or f"runs/packs/{args.task}.pt", args.task)
    dataset = PackDataset(pack, "val")
    if len(dataset) == 0:
        raise TgifError(f"pack {pack} holds no held-out pairs to score tiles on (tgif pack --val-count)")
    out = Path(args.out or f"runs/tiles_{args.task}.csv")
    rows = run_tile_sweep(weights, dataset, tiles, out, progress=not args.no_progress)
    _print_choice_table(f"{weights.name} fused whole and in tiles, on the {len(dataset)} held-out pairs of {pack}",
                        rows, "tile", 10, 4)
    best = choose(rows)
    print(f"chosen: {best['tile']} ({out})")
    if args.apply:
        chosen = [best["size"], best["overlap"]] if best["size"] else None
        update_extra(weights, **{FUSION_TILE_KEY: chosen})
        print(f"{weights}: {FUSION_TILE_KEY} = {chosen if chosen else 'removed (whole images)'}")
    return 0


def _objective_settings(args: argparse.Namespace, values: dict, load: Callable[[dict], Any], flags: dict,
                        run_name: str, init_role: str) -> Any:
    """The settings of a fine-tuning objective (``objective: steer`` or ``ground``) from a config file's ``values``
    and the command-line ``flags`` given (``load``: the objective's settings loader); its ``init`` checkpoint must
    exist (``init_role`` says what it is for in the error)."""
    values.update({k: v for k, v in flags.items() if v is not None})
    values["task"] = args.task
    values.setdefault("out_dir", f"runs/{args.task}_{run_name}")
    try:
        settings = load(values)
    except (TypeError, ValueError) as exc:
        raise TgifError(f"{args.config}: {exc}") from None
    if not Path(settings.init).is_file():
        raise TgifError(f"{args.config}: {init_role}, {settings.init}, was not found")
    return settings


def _train_steering(args: argparse.Namespace, values: dict) -> int:
    """``tgif train --config configs/ivf_steer.yaml``: fine-tune a checkpoint with the steering objective."""
    from tgif.train.steer import load_steer_settings, train_steering

    flags = {"out_dir": args.out, "steps": args.steps, "batch_size": args.batch_size, "crop": args.crop,
             "lr": args.lr, "checkpoint_every": args.checkpoint_every, "seed": args.seed}
    settings = _objective_settings(args, values, load_steer_settings, flags, "steer", "the checkpoint to fine-tune")
    checkpoint = train_steering(settings, resume=args.resume, progress=not args.no_progress)
    print(f"checkpoint: {checkpoint}")
    return 0


def _train_grounding(args: argparse.Namespace, values: dict) -> int:
    """``tgif train --config configs/ivf_ground.yaml``: a region-grounding head over a checkpoint's frozen trunk."""
    from tgif.train.grounding import load_ground_settings, train_grounding

    flags = {"out_dir": args.out, "steps": args.steps, "batch_size": args.batch_size, "crop": args.crop,
             "lr": args.lr, "seed": args.seed}
    settings = _objective_settings(args, values, load_ground_settings, flags, "ground",
                                   "the checkpoint whose trunk is kept")
    checkpoint = train_grounding(settings, progress=not args.no_progress)
    print(f"checkpoint: {checkpoint}")
    return 0


def _cmd_steer(args: argparse.Namespace) -> int:
    from tgif.captions.steering import HELD_OUT_TEMPLATES, read_phrasings
    from tgif.pipeline import default_weights
    from tgif.steering import format_report, run_steer_benchmark, write_csv

    if args.selectivity:
        return _steer_selectivity(args)
    phrasings = read_phrasings(args.phrasings) if args.phrasings else HELD_OUT_TEMPLATES
    for weights in _split(args.weights) if args.weights else [str(default_weights("ivf"))]:
        report = run_steer_benchmark(weights, args.dataset or "msrs_test", phrasings, limit=args.limit,
                                     captions_file=args.captions,
                                     progress=not args.no_progress, caption_mode=args.caption_mode)
        if args.json:
            print(json.dumps(report.to_json(), indent=2))
        else:
            print(format_report(report, per_pair=not args.medians_only))
            print()
        if args.csv:
            csv_path = Path(args.csv)
            written = write_csv(report, csv_path.with_name(f"{csv_path.stem}_{Path(weights).stem}{csv_path.suffix}"))
            print(f"wrote {written}")
    return 0


def _steer_selectivity(args: argparse.Namespace) -> int:
    """``tgif steer --selectivity``: name one object of several in turn; do the others stay put?"""
    from tgif.captions.steering import read_phrasings, read_words
    from tgif.pipeline import default_weights
    from tgif.steering import format_selectivity, run_selectivity, write_selectivity_csv

    phrasings = read_phrasings(args.phrasings) if args.phrasings else None
    words = read_words(args.words) if args.words else None
    datasets = _split(args.dataset) if args.dataset else ["msrs_test", "roadscene_test"]
    for weights in _split(args.weights) if args.weights else [str(default_weights("ivf"))]:
        report = run_selectivity(weights, datasets, phrasings, words, limit=args.limit,
                                 progress=not args.no_progress)
        if args.json:
            print(json.dumps({"rows": report.rows, "controls": report.controls, "medians": report.medians(),
                              "same_class": report.medians(True)}, indent=2))
        else:
            print(format_selectivity(report, per_case=not args.medians_only))
            print()
        if args.csv:
            csv_path = Path(args.csv)
            path = csv_path.with_name(f"{csv_path.stem}_{Path(weights).stem}{csv_path.suffix}")
            print(f"wrote {write_selectivity_csv(report, path)}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from tgif.model import load_tgif, save_tgif
    from tgif.pipeline import default_weights

    run = Path(args.run or f"runs/{args.task}")
    source = run / "selected.safetensors" if (run / "selected.safetensors").exists() else run / "last.safetensors"
    model, meta = load_tgif(source)
    out = save_tgif(args.out or default_weights(args.task), model, meta.text_encoder, meta.task, meta.steps,
                    extra=meta.extra, half=True)
    print(f"wrote {out} ({out.stat().st_size / 2**20:.2f} MiB, {meta.steps} steps, text encoder {meta.text_encoder})")
    from tgif.train.loop import export_logs

    for path in export_logs(source.parent, out.parent / "logs", out.stem):
        print(f"wrote {path}")
    curves = source.parent / "curves.png"
    if curves.exists():  # beside the weights, as weights/curves_<task>.png for weights/tgif_<task>.safetensors
        target = out.parent / f"curves_{out.stem.removeprefix('tgif_')}.png"
        shutil.copyfile(curves, target)
        print(f"wrote {target}")
    return 0


def _cmd_datasets(args: argparse.Namespace) -> int:
    from tgif import settings
    from tgif.io import list_datasets, list_pairs
    from tgif.io.datasets import dataset_modalities, dataset_task

    root = settings.data_dir()
    if root is None:
        where = f"TGIF_SHARED={os.environ['TGIF_SHARED']!r} holds no data/ folder" if os.environ.get(
            "TGIF_SHARED") else "no shared data folder found beside the repository"
        raise TgifError(f"{where}; set TGIF_SHARED to the folder holding data/")
    print(f"datasets in {root}:")
    for name in list_datasets(root):
        mods = "/".join(dataset_modalities(root / name))
        print(f"  {name:<20} {dataset_task(name) or '?':<4} {mods:<12} {len(list_pairs(root / name)):>4} pairs")
    return 0


def _bench_train(args: argparse.Namespace) -> int:
    """``tgif bench train``: training steps/s of one process against ``--procs`` CPU processes."""
    import torch

    from tgif.bench import bench_train, cpu_description

    pack = _require_pack(args.pack or f"runs/packs/{args.task}.pt", args.task)
    procs = tuple(int(v) for v in _split(args.procs))
    shape = {"batch_size": 2, "crop": 128, "steps": 40, "warmup": 5}  # the paper's batch and crop
    rounds = "one round" if args.repeat == 1 else f"{args.repeat} interleaved rounds"
    print(f"{args.task} training steps on {pack} (batch {shape['batch_size']}, {shape['crop']}x{shape['crop']} "
          f"crops, {cpu_description()}, {torch.get_num_threads()} threads; median step of {rounds} of runs of "
          f"{shape['steps']} steps after {shape['warmup']} warm-up steps; ratio: median over rounds of the first "
          "setting's median step over this one's):")
    rows = bench_train(pack, args.task, procs=procs, rounds=args.repeat, against=args.against, **shape)
    for label, row in rows.items():
        spread = f"  (rounds {row['ratio_low']:.2f}-{row['ratio_high']:.2f}x)" if args.repeat > 1 else ""
        print(f"  {label:<14} {row['seconds_per_step'] * 1000:7.1f} ms/step  {row['steps_per_second']:6.2f} steps/s  "
              f"{row['ratio']:5.2f}x{spread}")
    if args.against:
        print(f"  (rev {args.against}: that revision's own training loop, 1 process)")
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from tgif.bench import bench_fuse, bench_fuse_compare, bench_metrics, bench_perception

    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError as exc:
        raise TgifError(f"--size must look like 640x480, got {args.size!r}") from exc
    if args.target == "fuse":
        paths = _split(args.weights) if args.weights else [None]
        if len(paths) > 1:  # timed in turn in one process, so that the ratios are fair
            rounds = 3 * args.repeat
            print(f"TGIF network latency (several checkpoints: median of {rounds} rounds, each timing every "
                  "checkpoint once in one process; ratio: median over rounds of the time over the first's) and "
                  "peak memory (one pass in a fresh process), 150 text tokens:")
            runs = list(zip(paths, bench_fuse_compare(paths, repeat=rounds)))
        else:
            print(f"TGIF network latency (median of {args.repeat} after a warm-up) and peak memory, 150 text tokens:")
            runs = [(paths[0], bench_fuse(paths[0], repeat=args.repeat))]
        for weights, timings in runs:
            print(f" {Path(weights).name if weights else 'random weights'}:")
            for device, by_size in timings.items():
                for size, row in by_size.items():
                    versus = f"  {row['ratio']:5.2f}x the first" if len(runs) > 1 else ""
                    print(f"  {device:<5} {size:>10}  {row['seconds'] * 1000:9.1f} ms  peak {row['peak_mib']:8.1f} MiB"
                          f"{versus}")
        return 0
    if args.target == "train":
        return _bench_train(args)
    if args.target == "session":
        from tgif.bench import bench_session

        rounds = 3 * args.repeat
        print(f"caption edit vs fresh pair, one PairSession (medians of {rounds} rounds, each a fresh pair then its "
              "edit; ratio: median of the rounds' ratios; warm models, CPU; network and text only):")
        print(f"  {'size':>10}  {'fresh pair':>12}  {'caption edit':>12}  ratio")
        for size, row in bench_session(args.weights, repeat=rounds).items():
            print(f"  {size:>10}  {row['fresh_pair'] * 1000:9.1f} ms  {row['caption_edit'] * 1000:9.1f} ms  "
                  f"{row['ratio']:5.2f}")
        return 0
    if args.target == "tiles":
        from tgif.bench import bench_tiles

        rounds = 3 * args.repeat
        print(f"fusion in tiles vs whole (TGIFFuser, network and blending; medians of {rounds} rounds, each fusing "
              "the pair both ways; ratio: median of the rounds' tiled/whole; warm model, CPU):")
        print(f"  {'size':>10}  {'whole':>10}  {'tiled':>10}  tiles  ratio")
        for size, row in bench_tiles(args.weights, args.tile, repeat=rounds).items():
            print(f"  {size:>10}  {row['whole'] * 1000:7.1f} ms  {row['tiled'] * 1000:7.1f} ms  {row['tiles']:>5}  "
                  f"{row['ratio']:5.2f}")
        return 0
    if args.target == "pipeline":
        from tgif.bench import PIPELINE_STAGES, bench_pipeline

        print(f"whole pipeline per IVF pair (median of {args.repeat}; both sources perceived and captioned):")
        print("  device       size  " + "".join(f"{s:>13}" for s in (*PIPELINE_STAGES, "total")) + "     peak MiB")
        for device, by_size in bench_pipeline(args.weights, repeat=args.repeat).items():
            for size, row in by_size.items():
                cells = "".join(f"{row[s] * 1000:10.0f} ms" for s in (*PIPELINE_STAGES, "total"))
                print(f"  {device:<6} {size:>10}  {cells}  {row['peak_mib']:9.0f}")
        return 0
    if args.target == "perception":
        print(f"perception per image on {width}x{height} (median of {args.repeat} runs after one warm-up, CPU):")
        for backend, stages in bench_perception(width, height, repeat=args.repeat).items():
            print(f"  {backend}")
            for stage, seconds in stages.items():
                print(f"    {stage:<14} {seconds * 1000:9.1f} ms")
        return 0
    timings = bench_metrics(width, height, repeat=args.repeat)
    print(f"metric timings on a {width}x{height} pair (median of {args.repeat} runs, float64 numpy/OpenCV):")
    for name, seconds in timings.items():
        print(f"  {name:<10} {seconds * 1000:9.1f} ms")
    return 0


def _cmd_results(args: argparse.Namespace) -> int:
    from tgif.results import ResultsSettings, build_results

    settings = ResultsSettings(docs_dir=Path(args.docs), results_dir=Path(args.out),
                               datasets=_split(args.dataset) if args.dataset else None, limit=args.limit,
                               bench=not args.no_bench, progress=not args.no_progress)
    from tgif.parallel import is_main

    path = build_results(settings, log=lambda message: print(f"tgif results: {message}", flush=True)
                         if is_main() else None)
    if is_main():
        print(f"wrote {path}")
    return 0


COMMANDS = {"fuse": _cmd_fuse, "metrics": _cmd_metrics, "eval": _cmd_eval, "caption": _cmd_caption,
            "pack": _cmd_pack, "train": _cmd_train, "sweep": _cmd_sweep, "sweep-tiles": _cmd_sweep_tiles,
            "steer": _cmd_steer, "export": _cmd_export,
            "datasets": _cmd_datasets,
            "bench": _cmd_bench, "results": _cmd_results}


def _leave_process_group(wait: bool = True) -> None:
    """Leave the torchrun process group if a command started one. Only :mod:`tgif.parallel` starts one, and a
    command that never imported it (``--help``, ``datasets``, ``metrics``, a classic ``fuse``) has none: torch
    stays unimported."""
    parallel = sys.modules.get("tgif.parallel")
    if parallel is not None:
        parallel.close(wait=wait)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error, 1 unexpected error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="tgif: %(message)s")
    try:
        status = COMMANDS[args.command](args)
        _leave_process_group()
        return status
    except TgifError as exc:
        if args.debug:
            traceback.print_exc()
        print(f"tgif: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("tgif: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's final flush silent
        return 0
    except Exception as exc:  # noqa: BLE001 - the CLI turns any failure into one line
        if args.debug:
            traceback.print_exc()
        message = str(exc).splitlines()[0] if str(exc) else ""
        print(f"tgif: error: {type(exc).__name__}: {message} (run with --debug for details)", file=sys.stderr)
        return EXIT_UNEXPECTED
    finally:
        _leave_process_group(wait=False)  # after an error: the others may never reach a barrier
