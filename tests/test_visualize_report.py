"""Error and difference maps, the metric chart, and the run files a user downloads."""

from __future__ import annotations

import csv
import json
import re

import matplotlib
import numpy as np
import pytest

from tgif.io import load_image
from tgif.report import csv_rows, metric_deltas, write_run
from tgif.visualize import (
    HIGHLIGHT_COLOUR,
    PLAIN_COLOUR,
    colorize_scalar,
    difference_map,
    error_map,
    metrics_chart_html,
    metrics_figure,
)


def _cmap_rgb(name: str, x: float) -> np.ndarray:
    return np.round(np.array(matplotlib.colormaps[name](x)[:3]) * 255).astype(np.uint8)


def test_error_map_uses_a_fixed_scale(rng):
    source = rng.random((20, 30)).astype(np.float32)
    same = error_map(source, source, scale_bar=False)
    assert same.shape == (20, 30, 3) and (same == _cmap_rgb("inferno", 0.0)).all()
    fused = np.clip(source + 0.25, 0, 1)
    half = error_map(fused, source, vmax=0.5, scale_bar=False)
    exact = np.abs(fused - source)
    np.testing.assert_array_equal(half, colorize_scalar(exact, 0.0, 0.5, "inferno"))
    with_bar = error_map(fused, source)
    assert with_bar.shape[1] == 30 and with_bar.shape[0] > 20
    np.testing.assert_array_equal(with_bar[:20], half)


def test_error_map_compares_luminance_of_colour_and_grey(rng):
    grey = rng.random((8, 8)).astype(np.float32)
    colour = np.repeat(grey[..., None], 3, axis=-1)  # same luminance
    assert (error_map(colour, grey, scale_bar=False) == _cmap_rgb("inferno", 0.0)).all()
    with pytest.raises(ValueError, match="differ in size"):
        error_map(grey, grey[:4])


def test_difference_map_sign_and_scale():
    first = np.full((10, 10), 0.5, np.float32)
    second = first.copy()
    second[:, 5:] += 0.1  # brighter on the right
    rgb, vmax = difference_map(first, second, scale_bar=False)
    assert vmax == pytest.approx(0.1, abs=1e-6)
    right, left = rgb[0, 9].astype(int), rgb[0, 0].astype(int)
    assert right[0] > right[2]  # red: brighter
    np.testing.assert_array_equal(left, _cmap_rgb("coolwarm", 0.5))  # unchanged: the neutral middle
    _, floor = difference_map(first, first)
    assert floor == pytest.approx(1 / 255)


def test_metrics_figure_draws_one_panel_per_metric_with_the_values():
    table = {"TGIF": {"EN": 6.6, "SD": 46.0, "VIF": 0.9}, "max": {"EN": 6.5, "SD": 45.0, "VIF": 1.0}}
    figure = metrics_figure(table, highlight="TGIF")
    axes = [ax for ax in figure.axes if ax.has_data()]
    assert [ax.get_title().split()[0] for ax in axes] == ["EN", "SD", "VIF"]
    heights = [bar.get_height() for bar in axes[1].patches]
    assert heights == [46.0, 45.0]
    with pytest.raises(ValueError, match="no rows"):
        metrics_figure({})


def _chart_cards(chart: str) -> list[dict]:
    """Each card of a metrics_chart_html chart: its metric, and per row its method, bar width, colour, label."""
    cards = []
    for card in chart.split('class="tgif-chart-card"')[1:]:
        rows = [{"method": re.search(r'class="tgif-chart-method"[^>]*>([^<]*)<', row)[1],
                 "width": float(re.search(r"width:([0-9.]+)%", row)[1]),
                 "colour": re.search(r"background:(#[0-9a-f]{6})", row)[1],
                 "label": re.search(r'class="tgif-chart-value"[^>]*>([^<]*)<', row)[1],
                 "bold": "font-weight:700" in row.split(">", 1)[0]}
                for row in card.split('class="tgif-chart-row"')[1:]]
        cards.append({"metric": re.search(r">([^<]+) <span", card)[1], "rows": rows})
    return cards


def test_metrics_chart_html_draws_one_card_per_metric_with_bars_from_zero():
    table = {"TGIF": {"EN": 6.6, "SD": 46.0, "VIF": 0.9}, "max": {"EN": 6.5, "SD": 23.0, "VIF": float("nan")},
             "<b>x</b>": {"EN": 3.3, "SD": 0.0}}
    chart = metrics_chart_html(table, highlight="TGIF", title="TGIF vs classic baselines")
    cards = _chart_cards(chart)
    assert [c["metric"] for c in cards] == ["EN", "SD", "VIF"]
    en, sd, vif = (c["rows"] for c in cards)
    assert [r["method"] for r in en] == ["TGIF", "max", "&lt;b&gt;x&lt;/b&gt;"]  # names escaped, not markup
    assert "<b>x</b>" not in chart
    assert [r["width"] for r in en] == [100.0, pytest.approx(100 * 6.5 / 6.6, abs=0.05), 50.0]
    assert [r["width"] for r in sd] == [100.0, 50.0, 0.0]
    assert [r["colour"] for r in sd] == [HIGHLIGHT_COLOUR, PLAIN_COLOUR, PLAIN_COLOUR]
    assert [r["label"] for r in en] == ["6.6 ★", "6.5", "3.3"] and [r["bold"] for r in en] == [True, False, False]
    assert [r["label"] for r in vif] == ["0.9 ★", "n/a", "n/a"] and [r["width"] for r in vif] == [100.0, 0, 0]
    assert "higher is better" in chart and "TGIF vs classic baselines · ★ best per metric" in chart
    assert [c["metric"] for c in _chart_cards(metrics_chart_html(table, metrics=["VIF"]))] == ["VIF"]
    with pytest.raises(ValueError, match="no rows"):
        metrics_chart_html({})


def test_run_files_hold_image_record_and_rows(tmp_path, rng):
    fused = rng.random((12, 16, 3)).astype(np.float32)
    record = {"run": "r1", "task": "ivf", "method": "TGIF", "use_text": True, "captions": ["a, \"b\"", "c"],
              "metrics": {"TGIF": {"EN": np.float64(6.5), "SD": 40.0}, "max": {"EN": 6.0, "SD": 41.0}}}
    paths = write_run(tmp_path / "out", "run1", fused, record)
    saved = load_image(paths["png"]).pixels
    np.testing.assert_array_equal(np.round(saved * 255), np.round(fused * 255))
    assert json.loads(paths["json"].read_text())["metrics"]["TGIF"]["EN"] == 6.5
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["method"] for r in rows] == ["TGIF", "max"]
    assert rows[0]["caption_1"] == 'a, "b"' and float(rows[1]["SD"]) == 41.0
    assert csv_rows(record)[0]["EN"] == 6.5
    assert metric_deltas(record["metrics"]["TGIF"], record["metrics"]["max"]) == {"EN": -0.5, "SD": 1.0}


def test_csv_cells_that_look_like_formulas_are_neutralised(tmp_path):
    import csv as csv_module

    from tgif.report import write_run

    record = {"run": "run01", "task": "ivf", "use_text": True, "captions": ['=HYPERLINK("http://x","y")', "@SUM(A1)"],
              "metrics": {"TGIF": {"EN": -1.5}}}
    files = write_run(tmp_path, "r", np.zeros((4, 4), np.float32), record)
    row = next(csv_module.DictReader(files["csv"].open(encoding="utf-8")))
    assert row["caption_1"] == "'=HYPERLINK(\"http://x\",\"y\")" and row["caption_2"] == "'@SUM(A1)"
    assert row["EN"] == "-1.5"  # numbers stay numbers
