"""Benchmarks that print numbers (``tgif bench ...``); speed claims live here, not in tests."""

from __future__ import annotations

import statistics
import time

import numpy as np

from tgif.metrics import METRICS, PAPER_METRICS


def synthetic_gray_pair(width: int = 640, height: int = 480, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A deterministic (fused, a, b) triple of grey levels with smooth structure, edges and noise."""
    rng = np.random.default_rng(seed)
    i, j = np.mgrid[0:height, 0:width].astype(np.float64)
    a = 110 + 90 * np.sin(i / 23.0) * np.cos(j / 31.0) + rng.normal(0, 6, (height, width))
    b = 90 + 70 * np.cos(i / 17.0 + j / 41.0) + 40 * ((i // 40 + j // 40) % 2) + rng.normal(0, 4, (height, width))
    a, b = np.clip(np.round(a), 0, 255), np.clip(np.round(b), 0, 255)
    return np.maximum(a, b), a, b


def bench_metrics(width: int = 640, height: int = 480, repeat: int = 5) -> dict[str, float]:
    """Median seconds per metric (all registered metrics) on a synthetic pair of the given size.

    The key ``"paper six"`` holds the median time of one :func:`compute_metrics`-style pass
    over EN, SD, SF, AG, VIF and Qabf together.
    """
    fused, a, b = synthetic_gray_pair(width, height)
    timings: dict[str, float] = {}
    for name, spec in METRICS.items():
        runs = []
        for _ in range(repeat):
            start = time.perf_counter()
            spec(fused, a, b)
            runs.append(time.perf_counter() - start)
        timings[name] = statistics.median(runs)
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        for name in PAPER_METRICS:
            METRICS[name](fused, a, b)
        runs.append(time.perf_counter() - start)
    timings["paper six"] = statistics.median(runs)
    return timings
