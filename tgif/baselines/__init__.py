"""Classic fusion baselines behind one interface: ``fuse(pair, method) -> image``.

Every method fuses the two luminance planes; colour is then restored by the pair
(:meth:`tgif.io.ImagePair.colorize`). Methods may adapt to the pair's task (``pair.task``:
ivf, mif, mef, mff). They are the references a learned model must beat.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from tgif.baselines.laplacian import base_rule_for_task, laplacian_luma
from tgif.baselines.pixelwise import average_luma, max_abs_luma
from tgif.errors import UnknownNameError
from tgif.io.pair import ImagePair


@dataclass(frozen=True)
class Baseline:
    """A classic fusion method.

    Attributes:
        name: CLI name (``average``, ``max``, ``laplacian``).
        description: one line for help texts and tables.
        fuse_luma: ``(y_a, y_b, task) -> y``, float32 (H, W) planes in [0, 1]; ``task`` may be None.
    """

    name: str
    description: str
    fuse_luma: Callable[[np.ndarray, np.ndarray, str | None], np.ndarray]

    def fuse(self, pair: ImagePair) -> np.ndarray:
        """Fuse a pair; returns float32 in [0, 1], (H, W) or (H, W, 3) with colour restored."""
        y_a, y_b = pair.luminances()
        return pair.colorize(np.clip(self.fuse_luma(y_a, y_b, pair.task), 0.0, 1.0))


BASELINES: dict[str, Baseline] = {
    b.name: b
    for b in (
        Baseline("average", "per-pixel mean of the luminances", lambda y_a, y_b, task: average_luma(y_a, y_b)),
        Baseline("max", "per-pixel max-abs of the luminances (pixel-max)",
                 lambda y_a, y_b, task: max_abs_luma(y_a, y_b)),
        Baseline(
            "laplacian",
            "Laplacian pyramid: max-activity details; base by max (ivf, mif) or mean (mef, mff)",
            lambda y_a, y_b, task: laplacian_luma(y_a, y_b, base=base_rule_for_task(task)),
        ),
    )
}


def get_baseline(name: str) -> Baseline:
    """Look a baseline up by name (case-insensitive)."""
    key = name.strip().lower()
    if key not in BASELINES:
        raise UnknownNameError(f"unknown method {name!r}; choose from {', '.join(BASELINES)}")
    return BASELINES[key]


def fuse(pair: ImagePair, method: str = "laplacian") -> np.ndarray:
    """Fuse ``pair`` with a classic method; returns the fused image (float32 in [0, 1]).

    Example:
        >>> from tgif.io import load_pair
        >>> from tgif.baselines import fuse
        >>> pair = load_pair("ir.png", "vi.png", task="ivf")  # doctest: +SKIP
        >>> fused = fuse(pair, "laplacian")                    # doctest: +SKIP
    """
    return get_baseline(method).fuse(pair)


__all__ = ["BASELINES", "Baseline", "fuse", "get_baseline"]
