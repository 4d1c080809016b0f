"""Image-fusion metrics with the conventions of the CDDFuse/FILM evaluator.

All functions take grey levels in [0, 255] as (H, W) arrays; use
:func:`tgif.metrics.reading.read_gray_levels` or :func:`gray_levels_of` to get them from
files or [0, 1] images the way the field does (8-bit, cv2 grey, rounded).
"""

from tgif.metrics.qabf import qabf
from tgif.metrics.reading import gray_levels, gray_levels_of, read_gray_levels
from tgif.metrics.reference_free import average_gradient, entropy, spatial_frequency, standard_deviation
from tgif.metrics.registry import (
    EXTRA_METRICS,
    METRICS,
    PAPER_METRICS,
    MetricSpec,
    best_value,
    compute_metrics,
    is_better,
    resolve_metric_names,
)
from tgif.metrics.similarity import mutual_information, ssim_sum, sum_of_correlations_of_differences
from tgif.metrics.vif import visual_information_fidelity

__all__ = [
    "EXTRA_METRICS",
    "METRICS",
    "PAPER_METRICS",
    "MetricSpec",
    "average_gradient",
    "best_value",
    "compute_metrics",
    "entropy",
    "gray_levels",
    "gray_levels_of",
    "is_better",
    "mutual_information",
    "qabf",
    "read_gray_levels",
    "resolve_metric_names",
    "spatial_frequency",
    "ssim_sum",
    "standard_deviation",
    "sum_of_correlations_of_differences",
    "visual_information_fidelity",
]
