"""Caption source images: one image, a pair, or every image of a dataset folder (resumable JSONL).

Each source image goes through perception (detection map, segmentation map) and a captioner.
For datasets, one JSON line per image is appended to the output file as soon as it is done,
and images already present in the file are skipped, so an interrupted run resumes where it
stopped.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from tgif.captions.base import MODALITY_NAMES, Caption, Captioner, CaptionInput
from tgif.errors import DatasetError
from tgif.io.datasets import IMAGE_SUFFIXES, dataset_task, resolve_dataset
from tgif.io.image import as_rgb_uint8, load_image
from tgif.parallel import barrier, shard, world
from tgif.perception.pipeline import Perceiver, Perception

logger = logging.getLogger(__name__)


@dataclass
class CaptionedSource:
    """A caption with the perception it was drafted from."""

    caption: Caption
    perception: Perception
    modality: str
    caption_seconds: float


def modality_name(folder: str) -> str:
    """Readable modality for a dataset folder name (``ir`` -> ``infrared``); unknown names pass through."""
    return MODALITY_NAMES.get(folder.lower(), folder)


def caption_image(image: np.ndarray, *, modality: str, task: str, perceiver: Perceiver, captioner: Captioner,
                  mode: str = "full") -> CaptionedSource:
    """Perceive one source image and draft its caption.

    Args:
        image: grey or RGB, uint8 or float in [0, 1].
        modality: readable modality (``"infrared"``, ``"MRI"``...).
        task: ``ivf``, ``mif``, ``mef`` or ``mff``.
        mode: caption ablation mode (see :data:`tgif.captions.base.CAPTION_MODES`).
    """
    rgb = as_rgb_uint8(image)
    perception = perceiver.perceive(rgb)
    inputs = CaptionInput(rgb, modality, task, perception.detections, perception.segmentation,
                          perception.detection_map, perception.segmentation_map)
    start = time.perf_counter()
    caption = captioner.caption(inputs, mode=mode)
    return CaptionedSource(caption, perception, modality, time.perf_counter() - start)


def caption_record(source: CaptionedSource, **fields: Any) -> dict[str, Any]:
    """The JSON-serialisable record of a captioned image (extra ``fields`` first)."""
    det = source.perception.detections
    seg = source.perception.segmentation
    objects = len(seg.objects())
    seconds = {k: round(v, 4) for k, v in source.perception.seconds.items()}
    seconds["caption"] = round(source.caption_seconds, 4)
    return {
        **fields,
        "modality": source.modality,
        "caption": source.caption.text,
        "captioner": source.caption.captioner,
        "prompt_version": source.caption.prompt_version,
        "mode": source.caption.mode,
        "fallback_reason": source.caption.fallback_reason,
        "detector": det.model,
        "segmenter": seg.backend,
        "detections": [{"label": d.label, "score": round(d.score, 3), "box": [round(v, 1) for v in d.box]}
                       for d in det.items],
        "counts": det.counts(),
        "regions": {"objects": objects, "scene": len(seg.regions) - objects},
        "perception_cached": source.perception.cached,
        "seconds": seconds,
    }


def save_maps(source: CaptionedSource, folder: Path, stem: str) -> dict[str, str]:
    """Write ``<stem>_detection.png`` and ``<stem>_segmentation.png``; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"detection": folder / f"{stem}_detection.png", "segmentation": folder / f"{stem}_segmentation.png"}
    Image.fromarray(source.perception.detection_map).save(paths["detection"])
    Image.fromarray(source.perception.segmentation_map).save(paths["segmentation"])
    return {k: str(v) for k, v in paths.items()}


def dataset_images(folder: Path) -> Iterator[tuple[str, str, Path]]:
    """Yield (modality folder, id, path) for every image of every modality folder, sorted."""
    modalities = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not modalities:
        raise DatasetError(f"{folder}: no modality folders (<dataset>/<modality>/<id>.<ext>)")
    for modality in modalities:
        for path in sorted((folder / modality).iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                yield modality, path.stem, path


def read_caption_records(path: str | os.PathLike) -> dict[tuple[str, str], dict[str, Any]]:
    """Read a caption JSONL file into ``{(id, modality folder): record}`` (caption, detections, ...); the first
    line of a key wins.

    Raises:
        DatasetError: the file is missing or a line is not a caption record.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"caption file {path} not found; caption the dataset first (tgif caption)")
    found: dict[tuple[str, str], dict[str, Any]] = {}
    with path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if "caption" not in record:
                    raise KeyError("caption")
                found.setdefault((record["id"], record["modality_folder"]), record)
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DatasetError(f"{path}:{line_no}: not a caption record ({exc})") from exc
    return found


def read_caption_file(path: str | os.PathLike) -> dict[tuple[str, str], str]:
    """Read a caption JSONL file into ``{(id, modality folder): caption}``; the first line of a key wins.

    Raises:
        DatasetError: the file is missing or a line is not a caption record.
    """
    return {key: record["caption"] for key, record in read_caption_records(path).items()}


def _done_keys(out_path: Path) -> set[tuple[str, str]]:
    done: set[tuple[str, str]] = set()
    if not out_path.exists():
        return done
    with out_path.open() as handle:
        for line_no, line in enumerate(handle, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                done.add((record["id"], record["modality_folder"]))
            except (json.JSONDecodeError, KeyError):
                logger.warning("%s:%d: unreadable line ignored (it will be redone)", out_path, line_no)
    return done


def caption_dataset(dataset: str | os.PathLike, out_path: str | os.PathLike, *, perceiver: Perceiver,
                    captioner: Captioner, mode: str = "full", task: str | None = None,
                    maps_dir: str | os.PathLike | None = None, limit: int | None = None,
                    progress: bool = True) -> tuple[int, int]:
    """Caption every image of a dataset folder into a JSONL file, skipping images already in it.

    Args:
        dataset: dataset name under ``<shared>/data`` or a folder ``<dataset>/<modality>/<id>.<ext>``.
        out_path: the JSONL file (appended to).
        task: fusion task; default from the dataset name (``mff`` for unknown ones with no hint).
        maps_dir: when given, the maps are written as ``<maps_dir>/<modality>/<id>_{detection,segmentation}.png``.
        limit: caption at most this many new images.

    Under ``torchrun`` each process captions a share into ``<out>.part<rank>``; rank 0 then appends
    the parts to ``out``.

    Returns:
        (images captioned now, images skipped because already done).
    """
    folder = resolve_dataset(dataset)
    task = task or dataset_task(folder) or "mff"
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    rank, size = world()
    done = _done_keys(out)
    for part in _part_files(out):  # left by an interrupted torchrun job
        done |= _done_keys(part)
    todo = [(m, i, p) for m, i, p in dataset_images(folder) if (i, m) not in done]
    if limit is not None:
        todo = todo[:limit]
    mine = shard(todo)
    target = out if size == 1 else out.with_name(f"{out.name}.part{rank}")
    with target.open("a") as handle:
        for modality, image_id, path in tqdm(mine, desc=f"caption {folder.name}", unit="img",
                                             disable=not progress or rank != 0):
            image = load_image(path, on_large="downscale")
            source = caption_image(image.pixels, modality=modality_name(modality), task=task, perceiver=perceiver,
                                   captioner=captioner, mode=mode)
            fields: dict[str, Any] = {"dataset": folder.name, "id": image_id, "modality_folder": modality,
                                      "file": f"{modality}/{path.name}", "task": task}
            record = caption_record(source, **fields)
            if maps_dir is not None:
                record["maps"] = save_maps(source, Path(maps_dir) / modality, image_id)
            handle.write(json.dumps(record) + "\n")
            handle.flush()
    if size > 1:
        barrier()
        if rank == 0:
            _merge_parts(out)
        barrier()
    elif _part_files(out):
        _merge_parts(out)
    return len(todo), len(done)


def _part_files(out: Path) -> list[Path]:
    return sorted(out.parent.glob(f"{out.name}.part*"))


def _merge_parts(out: Path) -> None:
    """Append the per-process part files of a torchrun job to ``out`` and remove them."""
    with out.open("a") as handle:
        for part in _part_files(out):
            handle.write(part.read_text())
            part.unlink()
