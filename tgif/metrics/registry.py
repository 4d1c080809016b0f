"""The metric table: names, functions and what "better" means, for the CLI, evaluation and app."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from tgif.errors import UnknownNameError
from tgif.metrics._inputs import as_triplet
from tgif.metrics.qabf import qabf
from tgif.metrics.reference_free import average_gradient, entropy, spatial_frequency, standard_deviation
from tgif.metrics.similarity import mutual_information, ssim_sum, sum_of_correlations_of_differences
from tgif.metrics.vif import visual_information_fidelity


@dataclass(frozen=True)
class MetricSpec:
    """One metric.

    Attributes:
        name: short name as papers print it (``"EN"``).
        title: what it measures, in a few words.
        uses_sources: False when the metric looks at the fused image only.
        higher_is_better: the direction of improvement (True for all the fusion metrics here).
        unit: unit or range note shown next to values.
    """

    name: str
    title: str
    func: Callable[..., float]
    uses_sources: bool
    higher_is_better: bool = True
    unit: str = ""

    def __call__(self, fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
        """Compute the metric on grey levels in [0, 255]."""
        return self.func(fused, a, b) if self.uses_sources else self.func(fused)


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec("EN", "entropy of the grey-level histogram", entropy, False, unit="bits"),
        MetricSpec("SD", "standard deviation (contrast)", standard_deviation, False, unit="grey levels"),
        MetricSpec("SF", "spatial frequency (first differences)", spatial_frequency, False),
        MetricSpec("AG", "average gradient (central differences)", average_gradient, False),
        MetricSpec("VIF", "VIFp(A,F) + VIFp(B,F), multi-scale pixel VIF summed", visual_information_fidelity, True,
                   unit="sum over 2 sources"),
        MetricSpec("Qabf", "Xydeas-Petrovic edge preservation", qabf, True, unit="0-1"),
        MetricSpec("SSIM", "SSIM(F,A) + SSIM(F,B), 7x7 window", ssim_sum, True, unit="sum over 2 sources"),
        MetricSpec("MI", "mutual information I(F;A) + I(F;B)", mutual_information, True, unit="nats"),
        MetricSpec("SCD", "sum of correlations of differences", sum_of_correlations_of_differences, True),
    )
}

def _spec(name: str) -> MetricSpec:
    try:
        return METRICS[name]
    except KeyError:
        raise UnknownNameError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}") from None


def best_value(name: str, values: Iterable[float]) -> float:
    """The best of ``values`` of metric ``name`` in its direction (:attr:`MetricSpec.higher_is_better`); NaNs are
    skipped, NaN when none is left. Raises UnknownNameError for an unknown metric."""
    finite = [float(v) for v in values if not np.isnan(v)]
    if not finite:
        return float("nan")
    return max(finite) if _spec(name).higher_is_better else min(finite)


def is_better(name: str, value: float, other: float) -> bool:
    """True when ``value`` of metric ``name`` is strictly better than ``other`` (in the metric's direction)."""
    return value > other if _spec(name).higher_is_better else value < other


PAPER_METRICS: tuple[str, ...] = ("EN", "SD", "SF", "AG", "VIF", "Qabf")
EXTRA_METRICS: tuple[str, ...] = ("SSIM", "MI", "SCD")


def resolve_metric_names(names: str | Iterable[str] | None) -> tuple[str, ...]:
    """Turn ``None`` (the paper's six), ``"all"``, a comma list or names into validated metric names."""
    if names is None:
        return PAPER_METRICS
    if isinstance(names, str):
        if names.strip().lower() == "all":
            return tuple(METRICS)
        names = [n for n in (part.strip() for part in names.split(",")) if n]
    lookup = {name.lower(): name for name in METRICS}
    resolved = []
    for name in names:
        if name.lower() not in lookup:
            raise UnknownNameError(f"unknown metric {name!r}; choose from {', '.join(METRICS)} or 'all'")
        resolved.append(lookup[name.lower()])
    return tuple(resolved)


def compute_metrics(
    fused: np.ndarray, a: np.ndarray, b: np.ndarray, names: str | Iterable[str] | None = None
) -> dict[str, float]:
    """Compute metrics on grey levels in [0, 255] (see :mod:`tgif.metrics.reading`).

    Args:
        fused, a, b: (H, W) grey levels of the fused image and its two sources.
        names: metric names (default: the paper's six, EN SD SF AG VIF Qabf; ``"all"`` for all).

    Returns:
        ``{name: value}`` in the order asked.
    """
    wanted = resolve_metric_names(names)
    f, a64, b64 = as_triplet(fused, a, b)
    return {name: METRICS[name](f, a64, b64) for name in wanted}
