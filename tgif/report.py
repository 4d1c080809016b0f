"""What a fusion run leaves behind for a user: the full-resolution PNG and its record as JSON and CSV.

A *record* is a plain dict (JSON-serialisable) describing one run: task, sources, captions and who
wrote them, settings, timings, and a metric table ``{method: {metric: value}}`` holding the run's
method and the classic baselines on the same pair.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from tgif.io.image import save_image

#: Record fields copied into every CSV row (besides the method and its metrics).
CSV_FIELDS: tuple[str, ...] = ("run", "task", "method", "use_text", "caption_1", "caption_2")


def metric_deltas(first: Mapping[str, float], second: Mapping[str, float]) -> dict[str, float]:
    """``second − first`` for every metric both have, in ``first``'s order."""
    return {name: float(second[name]) - float(value) for name, value in first.items() if name in second}


#: A spreadsheet reads a cell starting with one of these as a formula.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def spreadsheet_safe(text: str) -> str:
    """``text`` as a CSV cell no spreadsheet runs: one starting like a formula gets a leading apostrophe
    (the OWASP advice for CSV injection), anything else is unchanged."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_rows(record: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per method of ``record["metrics"]``, with the run's settings and captions (text cells made
    :func:`spreadsheet_safe`)."""
    captions = record.get("captions", ["", ""])
    base = {
        "run": spreadsheet_safe(str(record.get("run", ""))),
        "task": spreadsheet_safe(str(record.get("task", ""))),
        "use_text": record.get("use_text", ""),
        "caption_1": spreadsheet_safe(captions[0]),
        "caption_2": spreadsheet_safe(captions[1]),
    }
    rows = []
    for method, values in record.get("metrics", {}).items():
        rows.append({**base, "method": spreadsheet_safe(method),
                     **{k: round(float(v), 6) for k, v in values.items()}})
    return rows


def write_run(folder: str | os.PathLike, stem: str, fused: np.ndarray, record: Mapping[str, Any],
              png_level: int | None = None) -> dict[str, Path]:
    """Write ``<stem>.png`` (fused image, full resolution, 8-bit; ``png_level`` as in
    :func:`~tgif.io.image.save_image`), ``<stem>.json`` and ``<stem>.csv``.

    Returns ``{"png": path, "json": path, "csv": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    png = save_image(folder / f"{stem}.png", fused, png_level=png_level)
    return {"png": png, **write_record(folder, stem, record)}


def write_record(folder: str | os.PathLike, stem: str, record: Mapping[str, Any]) -> dict[str, Path]:
    """Write a run's record as ``<stem>.json`` and ``<stem>.csv`` (one row per method) into ``folder``.

    Returns ``{"json": path, "csv": path}``.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    json_path = folder / f"{stem}.json"
    json_path.write_text(json.dumps(record, indent=2, default=_jsonable), encoding="utf-8")
    rows = csv_rows(record)
    metric_names = [k for k in (rows[0] if rows else {}) if k not in CSV_FIELDS]
    csv_path = folder / f"{stem}.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=[*CSV_FIELDS, *metric_names])
        writer.writeheader()
        writer.writerows(rows)
    return {"json": json_path, "csv": csv_path}


def _jsonable(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")
