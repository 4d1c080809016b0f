"""RESULTS.md generation: tables against the published numbers, output-change measure, the whole run."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.evaluation import EvalResult
from tgif.results import (
    ABLATION_DIR,
    ResultsSettings,
    build_results,
    comparison_table,
    output_change,
    standing,
)


def _result(method: str, values: dict[str, list[float]]) -> EvalResult:
    names = tuple(values)
    rows = [{"id": f"p{i}", **{m: values[m][i] for m in names}} for i in range(len(next(iter(values.values()))))]
    return EvalResult("toy", method, names, rows)


def test_comparison_table_marks_the_best_mean_including_published_rows():
    metrics = ("EN", "SD", "SF", "AG", "VIF", "Qabf")
    ours = _result("tgif", {m: [1.0, 3.0] for m in metrics})  # mean 2.00 ± 1.00
    base = _result("max", {m: [2.5, 2.5] for m in metrics})
    table = comparison_table([ours, base], {"paper": (9.0, 0.0, 0.0, 0.0, 0.0, 0.0)}).splitlines()
    assert table[0].startswith("| toy (2 pairs) | EN")
    assert table[2] == "| tgif | " + " | ".join(["2.00 ± 1.00"] * 6) + " |"
    assert table[3] == "| max | 2.50 ± 0.00 | " + " | ".join(["**2.50 ± 0.00**"] * 5) + " |"  # EN: 9.00 is best
    assert table[4] == "| *paper* | **9.00** | 0.00 | 0.00 | 0.00 | 0.00 | 0.00 |"


def test_output_change_counts_grey_level_differences(tmp_path):
    for label, value in (("tgif", 100), ("tgif[x]", 103)):
        (tmp_path / "toy" / label).mkdir(parents=True)
        image = np.full((10, 10), 100, np.uint8)
        image[:5] = value
        Image.fromarray(image).save(tmp_path / "toy" / label / "p0.png")
    change = output_change(tmp_path, "toy", "tgif", "tgif[x]")
    assert change == {"mean_abs": pytest.approx(1.5), "max_abs": 3.0, "changed": pytest.approx(0.5)}


def _tiny_dataset(root: Path) -> Path:
    rng = np.random.default_rng(5)
    for modality in ("ir", "vi"):
        (root / "tiny_ivf" / modality).mkdir(parents=True, exist_ok=True)
    for k in range(2):
        base = rng.random((48, 64))
        Image.fromarray((base * 255).astype(np.uint8)).save(root / "tiny_ivf" / "ir" / f"p{k}.png")
        visible = (np.stack([1 - base] * 3, -1) * 255).astype(np.uint8)
        Image.fromarray(visible).save(root / "tiny_ivf" / "vi" / f"p{k}.png")
    return root / "tiny_ivf"


def test_results_on_a_tiny_dataset_write_tables_and_csvs(tmp_path, monkeypatch):
    monkeypatch.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")  # captions are drafted: no caption file for this set
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    data = _tiny_dataset(tmp_path)
    path = build_results(ResultsSettings(docs_dir=tmp_path / "docs", results_dir=tmp_path / "res",
                                         datasets=[str(data)], bench=False, progress=False))
    text = path.read_text()
    assert text.startswith("# Results") and "do not edit by hand" in text
    for method in ("tgif", "laplacian", "max", "average"):
        assert f"| {method} |" in text
        with (tmp_path / "res" / "tiny_ivf" / f"{method}.csv").open() as handle:
            assert [r["id"] for r in csv.DictReader(handle)] == ["p0", "p1"]
    with (tmp_path / "res" / "tiny_ivf" / "summary.csv").open() as handle:
        summary = list(csv.DictReader(handle))
    assert [r["method"] for r in summary] == ["tgif", "laplacian", "max", "average"]


def test_results_on_msrs_test_include_ablation_sensitivity_and_figures(data_root, tmp_path):
    path = build_results(ResultsSettings(docs_dir=tmp_path / "docs", results_dir=tmp_path / "res",
                                         datasets=["msrs_test"], limit=2, bench=False, progress=False))
    text = path.read_text()
    assert "Only the first 2 pairs" in text
    assert "*TGIF (paper, MSRS)* | 6.62 | 42.00 | 11.53 | 3.64 | 0.83 | 0.67 |" in text
    assert "| captions naming absent objects |" in text and "| true captions |" in text
    figures = tmp_path / "docs" / "figures"
    assert (figures / "qualitative_ivf.png").stat().st_size > 10_000
    assert (figures / "distribution_msrs_test.png").exists()
    if any(ABLATION_DIR.glob("tgif_ivf_*.safetensors")):
        assert "## Ablation (paper Table 5)" in text and (figures / "ablation.png").exists()


def test_standing_counts_wins_per_method_per_metric_best_and_published_rows():
    metrics = ("EN", "SD", "SF", "AG", "VIF", "Qabf")
    ours = _result("tgif", {m: [2.0, 2.0] for m in metrics})
    lap = _result("laplacian", {m: [3.0 if m in ("SD", "AG") else 1.0] * 2 for m in metrics})
    top = _result("max", {m: [3.0 if m == "Qabf" else 1.0] * 2 for m in metrics})
    variant = _result("tgif[empty]", {m: [9.0, 9.0] for m in metrics})  # a TGIF variant is not a competitor
    lines = standing([ours, lap, top, variant], {"TGIF (paper)": (1.0, 1.0, 1.0, 1.0, 1.0, 5.0)}).splitlines()
    assert lines[0].startswith("- vs laplacian: ahead on 4 of 6 (EN, SF, VIF, Qabf); EN +1.00, SD -1.00")
    assert lines[1].startswith("- vs max: ahead on 5 of 6 (EN, SD, SF, AG, VIF);")
    assert lines[2].startswith("- vs the best of them per metric: ahead on 3 of 6 (EN, SF, VIF);")
    assert lines[3].startswith("- vs *TGIF (paper)*: ahead on 5 of 6 (EN, SD, SF, AG, VIF);")
    assert lines[3].endswith("VIF +1.000, Qabf -3.000")
    assert len(lines) == 4
    assert standing([lap, top]) == ""  # no TGIF row, nothing to say


def test_sweep_section_marks_the_chosen_setting(tmp_path, monkeypatch):
    import tgif.results as results
    from tgif.train.loop import append_csv

    (tmp_path / "logs").mkdir()
    reference = {"EN": 7.0, "SD": 50.0, "SF": 20.0, "AG": 5.0, "VIF": 1.5, "Qabf": 0.75}
    sharp = {"EN": 7.1, "SD": 60.0, "SF": 22.0, "AG": 5.5, "VIF": 1.4, "Qabf": 0.70}  # 4 wins, fidelity lost
    faithful = {"EN": 7.05, "SD": 51.0, "SF": 19.0, "AG": 4.9, "VIF": 1.49, "Qabf": 0.74}  # 2 wins, fidelity kept
    for name, grad, scores, wins, kept in (("g500_s1", 500, sharp, 4, 0), ("g20_s1", 20, faithful, 2, 1)):
        append_csv(tmp_path / "logs" / "sweep_mef.csv",
                   {"setting": name, "grad_weight": grad, "ssim_weight": 1.0, "steps": 800, **scores,
                    **{f"ref_{k}": v for k, v in reference.items()}, "wins": wins, "margin": 0.01,
                    "fidelity_kept": kept})
    monkeypatch.setattr(results, "WEIGHTS_DIR", tmp_path)
    section = results.sweep_section()
    assert "**MEF**, 800 steps per setting from tgif_ivf_base" in section
    assert "| **20** | **1** | 7.050 |" in section and "| 500 | 1 | 7.100 |" in section
    assert "| *Laplacian pyramid* | | *7.000* |" in section and "sweep_mff" not in section
    monkeypatch.setattr(results, "WEIGHTS_DIR", tmp_path / "nothing")
    assert results.sweep_section() == ""


def test_tile_sweep_section_marks_the_chosen_tile(tmp_path, monkeypatch):
    import tgif.results as results
    from tgif.train.loop import append_csv

    (tmp_path / "logs").mkdir()
    reference = {"EN": 7.0, "SD": 50.0, "SF": 20.0, "AG": 5.0, "VIF": 1.5, "Qabf": 0.75}
    whole = {"EN": 7.1, "SD": 60.0, "SF": 19.0, "AG": 5.5, "VIF": 1.52, "Qabf": 0.76}  # 5 wins
    tiled = {"EN": 7.2, "SD": 55.0, "SF": 20.5, "AG": 5.6, "VIF": 1.53, "Qabf": 0.77}  # 6 wins, smaller margin
    for tile, size, scores, wins, margin in (("whole", 0, whole, 5, 0.05), ("320/32", 320, tiled, 6, 0.04)):
        append_csv(tmp_path / "logs" / "tiles_mef.csv",
                   {"tile": tile, "size": size, "overlap": 32 if size else 0, **scores,
                    **{f"ref_{k}": v for k, v in reference.items()}, "wins": wins, "margin": margin,
                    "fidelity_kept": 1})
    monkeypatch.setattr(results, "WEIGHTS_DIR", tmp_path)
    section = results.tile_sweep_section()
    assert "**tgif_mef** (`weights/logs/tiles_mef.csv`)" in section
    assert "| **320/32** | 7.200 | 55.000 |" in section and "| whole | 7.100 |" in section
    assert "| 6 | +0.0400 | yes |" in section and "| *Laplacian pyramid* | *7.000* |" in section
    monkeypatch.setattr(results, "WEIGHTS_DIR", tmp_path / "nothing")
    (tmp_path / "nothing" / "logs").mkdir(parents=True)
    assert results.tile_sweep_section() == ""
