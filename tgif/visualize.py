"""Pictures for comparing fusions by eye: error maps, difference maps and metric bar charts.

Everything here works on float images in [0, 1] and compares luminances (the fused channel),
so a grey source and a colour result can be compared. Maps come back as uint8 RGB arrays with
the colour scale burnt into a bar at the bottom, so a saved map still says what its colours mean.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import NamedTuple

import cv2
import matplotlib
import numpy as np
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure

from tgif.io.color import luminance

#: Default upper end of the error-map colour scale (an absolute luminance error, images in [0, 1]).
ERROR_MAP_VMAX = 0.5


def _as_luminance(image: np.ndarray) -> np.ndarray:
    array = np.asarray(image, dtype=np.float32)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim == 3:
        return luminance(array)
    if array.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {array.shape}")
    return array


def _check_same_shape(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ValueError(f"images differ in size: {a.shape[1]}x{a.shape[0]} vs {b.shape[1]}x{b.shape[0]}")


def _scale_bar(width: int, cmap: str, left: str, right: str) -> np.ndarray:
    """A (bar_height, width, 3) uint8 strip: the colour ramp with its end values written on it."""
    height = max(14, min(28, width // 16))
    ramp = matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, width))[:, :3]
    bar = np.round(np.repeat(ramp[None], height, axis=0) * 255).astype(np.uint8)
    scale = height / 40
    for text, at_right in ((left, False), (right, True)):
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = width - tw - 3 if at_right else 3
        y = (height + th) // 2
        cv2.putText(bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return bar


def colorize_scalar(values: np.ndarray, vmin: float, vmax: float, cmap: str) -> np.ndarray:
    """Map a float (H, W) array to uint8 RGB with a matplotlib colour map over [vmin, vmax] (clipped)."""
    if vmax <= vmin:
        raise ValueError(f"vmax ({vmax}) must be above vmin ({vmin})")
    normalised = np.clip((np.asarray(values, np.float64) - vmin) / (vmax - vmin), 0.0, 1.0)
    return np.round(matplotlib.colormaps[cmap](normalised)[..., :3] * 255).astype(np.uint8)


def error_map(fused: np.ndarray, source: np.ndarray, vmax: float = ERROR_MAP_VMAX, cmap: str = "inferno",
              scale_bar: bool = True) -> np.ndarray:
    """|F − S| on luminance as a colour-mapped uint8 RGB image.

    Args:
        fused, source: float images in [0, 1], grey (H, W) or colour (H, W, 3), same size.
        vmax: error shown at the top of the scale (larger errors saturate); a fixed scale keeps maps
            of different runs comparable.
        scale_bar: append a strip showing the colour scale (0 to vmax).
    """
    f, s = _as_luminance(fused), _as_luminance(source)
    _check_same_shape(f, s)
    rgb = colorize_scalar(np.abs(f - s), 0.0, vmax, cmap)
    if scale_bar:
        rgb = np.concatenate([rgb, _scale_bar(rgb.shape[1], cmap, "0", f"{vmax:g}+")], axis=0)
    return rgb


def difference_map(first: np.ndarray, second: np.ndarray, vmax: float | None = None, cmap: str = "coolwarm",
                   scale_bar: bool = True) -> tuple[np.ndarray, float]:
    """Signed luminance difference ``second − first`` as a diverging colour map (blue: darker, red: brighter).

    Args:
        first, second: float images in [0, 1], same size.
        vmax: half-width of the symmetric scale; by default the 99.5th percentile of |difference|
            (at least 1/255), so that small text-driven changes stay visible.
        scale_bar: append a strip whose ends are labelled in grey levels (0-255 units), e.g. "-2.0 levels".

    Returns:
        (uint8 RGB map, the vmax used, in [0, 1] units).
    """
    a, b = _as_luminance(first), _as_luminance(second)
    _check_same_shape(a, b)
    diff = b - a
    if vmax is None:
        vmax = max(float(np.percentile(np.abs(diff), 99.5)), 1.0 / 255.0)
    rgb = colorize_scalar(diff, -vmax, vmax, cmap)
    if scale_bar:
        levels = vmax * 255.0
        rgb = np.concatenate([rgb, _scale_bar(rgb.shape[1], cmap, f"-{levels:.1f} levels", f"+{levels:.1f} levels")],
                             axis=0)
    return rgb, vmax


#: Bar colours of the metric charts: the highlighted method, the others.
HIGHLIGHT_COLOUR, PLAIN_COLOUR = "#d95f02", "#7f9fbf"


class _MetricPanel(NamedTuple):
    """One metric of a chart: its name, which way is better, each method's value (NaN when missing), the best."""

    name: str
    direction: str
    values: list[float]
    best: float


def _metric_panels(table: Mapping[str, Mapping[str, float]],
                   metrics: Sequence[str] | None) -> tuple[list[str], list[_MetricPanel]]:
    """The methods of ``table`` and one panel per metric (default: the first row's), for both charts."""
    from tgif.metrics import METRICS, best_value

    if not table:
        raise ValueError("no rows to plot")
    methods = list(table)
    panels = []
    for name in (list(metrics) if metrics is not None else list(next(iter(table.values())))):
        values = [float(table[m].get(name, np.nan)) for m in methods]
        direction = "higher" if name not in METRICS or METRICS[name].higher_is_better else "lower"
        panels.append(_MetricPanel(name, direction, values, best_value(name, values) if name in METRICS else np.nan))
    return methods, panels


def metrics_chart_html(table: Mapping[str, Mapping[str, float]], highlight: str | None = None,
                       metrics: Sequence[str] | None = None, title: str | None = None) -> str:
    """The chart of :func:`metrics_figure` as self-contained HTML (inline styles, text at the page's size): one
    card per metric, a horizontal bar per method from zero, its width the value over the largest magnitude of
    that metric, labelled with the value; the best of each metric (in its direction) is starred and bold.
    Nothing is rasterised, so it is built in well under a millisecond and stays sharp at any zoom.

    Args:
        table: ``{method: {metric: value}}`` in display order; a missing or NaN value is shown as "n/a".
        highlight: method drawn in :data:`HIGHLIGHT_COLOUR` (others :data:`PLAIN_COLOUR`).
        metrics: which metrics to chart (default: those of the first row, in order).
        title: a line above the cards.
    """
    methods, panels = _metric_panels(table, metrics)
    cards = []
    for name, direction, values, best in panels:
        scale = max((abs(v) for v in values if np.isfinite(v)), default=0.0)
        rows = []
        for method, value in zip(methods, values):
            shown = np.isfinite(value)
            is_best = shown and value == best
            width = 100.0 * abs(value) / scale if shown and scale > 0 else 0.0
            colour = HIGHLIGHT_COLOUR if method == highlight else PLAIN_COLOUR
            label = f"{value:.4g}{' ★' if is_best else ''}" if shown else "n/a"
            weight = "font-weight:700;" if is_best else ""
            rows.append(
                f'<div class="tgif-chart-row" style="display:grid;grid-template-columns:7.6em minmax(3em,1fr) 5.4em;'
                f'align-items:center;gap:6px;margin:2px 0;{weight}" title="{html.escape(method)}: {value:.6g}">'
                f'<span class="tgif-chart-method" style="overflow:hidden;text-overflow:ellipsis;white-space:nowrap">'
                f'{html.escape(method)}</span>'
                f'<span style="display:block;height:0.9em;background:rgba(127,127,127,0.12)">'
                f'<span class="tgif-chart-bar" style="display:block;height:100%;width:{width:.1f}%;'
                f'background:{colour};{"outline:1.5px solid currentColor;" if is_best else ""}"></span></span>'
                f'<span class="tgif-chart-value" style="text-align:right;white-space:nowrap">{label}</span></div>')
        cards.append(f'<div class="tgif-chart-card" style="padding:6px 8px;border:1px solid rgba(127,127,127,0.3);'
                     f'border-radius:6px"><div style="font-weight:600;margin-bottom:4px">{html.escape(name)} '
                     f'<span style="font-weight:400;opacity:0.7">({direction} is better)</span></div>'
                     + "".join(rows) + "</div>")
    heading = (f'<div class="tgif-chart-title" style="font-weight:600;margin-bottom:6px">{html.escape(title)} · '
               "★ best per metric</div>" if title else "")
    return (f'<div class="tgif-chart" style="font-size:0.85em;line-height:1.3">{heading}'
            '<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax(19em,1fr));gap:8px">'
            + "".join(cards) + "</div></div>")


def metrics_figure(table: Mapping[str, Mapping[str, float]], highlight: str | None = None,
                   metrics: Sequence[str] | None = None, title: str | None = None) -> Figure:
    """One small bar chart per metric (their scales differ), one bar per method, labelled with its value; bars
    start at zero and the best method of each metric (in its direction) is outlined and starred.

    Args:
        table: ``{method: {metric: value}}`` in display order.
        highlight: method drawn in a strong colour (others grey-blue).
        metrics: which metrics to plot (default: those of the first row, in order).
    """
    methods, panels = _metric_panels(table, metrics)
    columns = min(3, len(panels))
    rows = (len(panels) + columns - 1) // columns
    fig = Figure(figsize=(3.2 * columns, 2.4 * rows))  # not pyplot: nothing to close, no global registry
    axes = fig.subplots(rows, columns, squeeze=False)
    # colours as RGBA tuples: matplotlib re-parses a colour string for every bar and patch it draws
    strong, plain = to_rgba(HIGHLIGHT_COLOUR), to_rgba(PLAIN_COLOUR)
    colours = [strong if m == highlight else plain for m in methods]
    for index, (name, direction, values, best) in enumerate(panels):
        ax = axes[index // columns][index % columns]
        bars = ax.bar(range(len(methods)), values, color=colours)
        ax.set_title(f"{name} ({direction} is better)", fontsize=9)
        ax.set_xticks(range(len(methods)), methods, rotation=30, ha="right", fontsize=8)
        ax.set_yticks([])  # each bar is labelled with its value; ticks were a third of the drawing time
        finite = [v for v in values if np.isfinite(v)]
        if finite:
            low, high = min(0.0, min(finite)), max(0.0, max(finite))
            ax.set_ylim(low * 1.18, high * 1.18 or 1.0)  # from zero, room for the value labels
        for bar, value in zip(bars, values):
            if np.isfinite(value):
                is_best = value == best
                if is_best:
                    bar.set_edgecolor("black")
                    bar.set_linewidth(1.2)
                ax.annotate(f"{value:.2f}{' ★' if is_best else ''}", (bar.get_x() + bar.get_width() / 2, value),
                            ha="center", va="bottom", fontsize=7, fontweight="bold" if is_best else "normal")
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].axis("off")
    if title:
        fig.suptitle(title + " · ★ best per metric", fontsize=10)
    # Fixed margins in inches (tight_layout measured every label and took ~0.3 s per chart).
    height = 2.4 * rows
    fig.subplots_adjust(left=0.06, right=0.99, bottom=0.62 / height, top=1 - (0.75 if title else 0.3) / height,
                        hspace=0.9, wspace=0.28)
    return fig


#: Colours of the pointing map: objects the captions name, and the others.
POINTED_COLOR = (255, 191, 0)
UNPOINTED_COLOR = (150, 150, 150)


def pointing_map(image: np.ndarray, pointed: Sequence[tuple[str, Sequence[float], float]],
                 threshold: float = 0.5) -> np.ndarray:
    """Where captions point, over an image (grey or RGB, float in [0, 1] or uint8): each object's box with its
    description and the probability that the captions name it; the named ones (probability >= ``threshold``)
    thick in amber with the fused image at full strength inside, the others thin and grey over a dimmed image.
    Returns uint8 RGB."""
    from tgif.io.image import as_rgb_uint8
    from tgif.perception.rendering import put_label

    canvas = as_rgb_uint8(image).copy()
    named = [(name, box, p) for name, box, p in pointed if p >= threshold]
    if named:  # dim everything but the named boxes, so the eye goes where the caption points
        keep = np.zeros(canvas.shape[:2], bool)
        for _, (x1, y1, x2, y2), _ in named:
            keep[max(0, int(y1)):int(np.ceil(y2)), max(0, int(x1)):int(np.ceil(x2))] = True
        canvas[~keep] = (canvas[~keep] * 0.45).astype(np.uint8)
    thick = max(2, round(min(canvas.shape[:2]) / 160))
    for name, (x1, y1, x2, y2), chance in sorted(pointed, key=lambda item: item[2]):  # the named ones drawn last
        color = POINTED_COLOR if chance >= threshold else UNPOINTED_COLOR
        box = (int(round(x1)), int(round(y1))), (int(round(x2)), int(round(y2)))
        cv2.rectangle(canvas, *box, color, thick if chance >= threshold else 1)
        put_label(canvas, f"{name} {100 * chance:.0f}%", box[0][0], box[0][1], color)
    return canvas
