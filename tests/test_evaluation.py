"""Dataset evaluation: files written, numbers equal to scoring the saved images directly."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from tgif.evaluation import evaluate, markdown_table
from tgif.metrics import PAPER_METRICS, compute_metrics, read_gray_levels


@pytest.fixture
def tiny_dataset(tmp_path, rng):
    """A 3-pair IVF-like dataset (grey ir, colour vi) built in the test."""
    root = tmp_path / "tiny_ivf"
    for k in range(3):
        ir = rng.integers(0, 256, (48, 64), dtype=np.uint8)
        vi = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        (root / "ir").mkdir(parents=True, exist_ok=True)
        (root / "vi").mkdir(parents=True, exist_ok=True)
        Image.fromarray(ir).save(root / "ir" / f"{k:03d}.png")
        Image.fromarray(vi).save(root / "vi" / f"{k:03d}.png")
    return root


def test_evaluate_writes_images_and_csv_matching_direct_scores(tiny_dataset, tmp_path) -> None:
    out = tmp_path / "results"
    result = evaluate(tiny_dataset, "max", out_dir=out, progress=False)
    assert [row["id"] for row in result.rows] == ["000", "001", "002"]
    assert result.csv_path == out / "tiny_ivf" / "max.csv"
    with result.csv_path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["id", *PAPER_METRICS, "fuse_s"]
    for row in rows:
        saved = out / "tiny_ivf" / "max" / f"{row['id']}.png"
        direct = compute_metrics(
            read_gray_levels(saved),
            read_gray_levels(tiny_dataset / "ir" / f"{row['id']}.png"),
            read_gray_levels(tiny_dataset / "vi" / f"{row['id']}.png"),
        )
        for name in PAPER_METRICS:
            assert float(row[name]) == pytest.approx(direct[name], abs=1e-6)
    means = result.mean()
    assert means["EN"] == pytest.approx(np.mean([float(r["EN"]) for r in rows]), abs=1e-6)


def test_markdown_table_marks_the_best_mean(tiny_dataset) -> None:
    results = [evaluate(tiny_dataset, m, progress=False, limit=2) for m in ("average", "max")]
    table = markdown_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| tiny_ivf (2 pairs) | EN | SD | SF | AG | VIF | Qabf |")
    assert lines[2].startswith("| average |") and lines[3].startswith("| max |")
    # averaging two random images lowers contrast: max has the higher SD and gets the bold
    assert "**" in lines[3].split("|")[3] and "**" not in lines[2].split("|")[3]


def test_evaluate_on_shared_msrs_subset(data_root) -> None:
    result = evaluate("msrs_test", "laplacian", progress=False, limit=2)
    assert [row["id"] for row in result.rows] == ["00004N", "00008N"]
    means = result.mean()
    assert 5.0 < means["EN"] < 7.5 and 0.3 < means["Qabf"] < 0.9
