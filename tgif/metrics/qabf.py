"""Qabf: gradient-based fusion performance of Xydeas & Petrovic.

C. S. Xydeas and V. Petrovic, "Objective image fusion performance measure", Electronics
Letters 36(4), 2000; conventions of ``analysis_Qabf.m`` as ported in the CDDFuse evaluator.

Edge strength and orientation from 3x3 Sobel responses ``Sx``, ``Sy`` of a true 2-D
convolution with **zero padding** ('same' size): ``g = sqrt(Sx^2 + Sy^2)``,
``alpha = arctan(Sy / Sx)`` (pi/2 where Sx = 0). For each source X and the fused F:

- relative strength ``G = gF/gX`` if gX > gF, ``gX/gF`` if gX < gF and, as in the original
  MATLAB code, ``gF`` (not 1) where gX == gF;
- relative orientation ``A = 1 - |alphaX - alphaF| / (pi/2)``;
- ``Q_XF = Tg / (1 + exp(kg (G - Dg))) * Ta / (1 + exp(ka (A - Da)))`` with
  Tg = 0.9994, kg = -15, Dg = 0.5, Ta = 0.9879, ka = -22, Da = 0.8.

``Qabf = sum(Q_AF gA + Q_BF gB) / sum(gA + gB)`` (weights L = 1). The zero padding creates
edges on the border, and the ``gF`` quirk makes Qabf(A, A, A) about 0.975 rather than 1.
"""

from __future__ import annotations

import numpy as np

from tgif.metrics._inputs import as_triplet

_TG, _KG, _DG = 0.9994, -15.0, 0.5
_TA, _KA, _DA = 0.9879, -22.0, 0.8


def sobel_strength_orientation(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (strength, orientation) of a grey image from zero-padded 3x3 Sobel responses."""
    p = np.pad(image.astype(np.float64), 1)
    # convolve2d(img, [[-1,0,1],[-2,0,2],[-1,0,1]], 'same'): (left - right), smoothed [1,2,1] vertically
    d = p[:, :-2] - p[:, 2:]
    sx = d[:-2] + 2.0 * d[1:-1] + d[2:]
    # convolve2d(img, [[1,2,1],[0,0,0],[-1,-2,-1]], 'same'): (below - above), smoothed [1,2,1] horizontally
    e = p[2:, :] - p[:-2, :]
    sy = e[:, :-2] + 2.0 * e[:, 1:-1] + e[:, 2:]
    strength = np.sqrt(sx * sx + sy * sy)
    orientation = np.full(image.shape, np.pi / 2)
    nonzero = sx != 0
    orientation[nonzero] = np.arctan(sy[nonzero] / sx[nonzero])
    return strength, orientation


def _edge_preservation(g_src: np.ndarray, a_src: np.ndarray, g_f: np.ndarray, a_f: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(g_src > g_f, g_f / g_src, np.where(g_src < g_f, g_src / g_f, g_f))
    angle = 1.0 - np.abs(a_src - a_f) / (np.pi / 2)
    q_g = _TG / (1.0 + np.exp(_KG * (relative - _DG)))
    q_a = _TA / (1.0 + np.exp(_KA * (angle - _DA)))
    return q_g * q_a


def qabf(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Qabf of a fused image given its two sources (grey levels in [0, 255]); in [0, 1].

    Returns NaN when neither source has any edge (0/0), as the reference does.
    """
    f, a64, b64 = as_triplet(fused, a, b)
    g_a, o_a = sobel_strength_orientation(a64)
    g_b, o_b = sobel_strength_orientation(b64)
    g_f, o_f = sobel_strength_orientation(f)
    q_af = _edge_preservation(g_a, o_a, g_f, o_f)
    q_bf = _edge_preservation(g_b, o_b, g_f, o_f)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.sum(q_af * g_a + q_bf * g_b) / np.sum(g_a + g_b))
