"""VIF: visual information fidelity of the fused image with respect to each source.

The fusion "VIF" of the CDDFuse evaluator (named ``VIFF`` there) is the multi-scale
pixel-domain VIF of Sheikh & Bovik ("Image information and visual quality", IEEE TIP 15(2),
2006; their ``vifp_mscale.m``) computed with each source as reference and the fused image as
the distorted one, then **summed**: ``VIF = VIFp(A, F) + VIFp(B, F)`` (so values near 1 or
above are normal). Grey levels in [0, 255]; the HVS noise variance ``sigma_n^2 = 2`` assumes
that range.

Per scale s = 1..4: a Gaussian window of size N = 2^(5-s) + 1 and sigma N/5 (MATLAB
``fspecial``); for s > 1 the images are first filtered ('valid') and subsampled by 2. Local
means, variances and covariance come from 'valid' filtering; then
``g = s12 / (s1^2 + 1e-10)``, ``sv^2 = s2^2 - g s12``, with the reference's fix-ups (flat
reference: g = 0, sv^2 = s2^2; flat fused: g = 0, sv^2 = 0; g < 0: sv^2 = s2^2, g = 0;
sv^2 >= 1e-10), and ``VIFp = sum_s sum log10(1 + g^2 s1^2 / (sv^2 + 2)) /
sum_s sum log10(1 + s1^2 / 2)`` (1 when that is 0/0).

This implementation filters separably (the Gaussian windows are outer products, and none of
their entries falls under MATLAB's ``eps * max`` cut) and shares the fused image's statistics
between the two sources, which makes it several times faster than 2-D convolutions. Images
must be at least about 41 pixels on each side for all four scales; on smaller ones the scales
that no longer fit the window are skipped.
"""

from __future__ import annotations

import cv2
import numpy as np

from tgif.metrics._inputs import as_triplet

_EPS = 1e-10
_SIGMA_N_SQ = 2.0


def gaussian_window_1d(size: int) -> np.ndarray:
    """The 1-D factor of MATLAB's ``fspecial('gaussian', size, size / 5)``, normalised to sum 1."""
    sigma = size / 5.0
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def _filter_valid(stack: np.ndarray, window: np.ndarray) -> np.ndarray:
    """Correlate each (H, W) map of a (K, H, W) stack with ``outer(window, window)``, 'valid' part only."""
    r = len(window) // 2
    return np.stack(
        [cv2.sepFilter2D(m, cv2.CV_64F, window, window, borderType=cv2.BORDER_CONSTANT)[r:-r, r:-r] for m in stack]
    )


def vif_components(references: list[np.ndarray], distorted: np.ndarray) -> list[float]:
    """VIFp(ref, distorted) for each reference (float64 grey levels, same shape)."""
    refs = [r.astype(np.float64) for r in references]
    dist = distorted.astype(np.float64)
    num = np.zeros(len(refs))
    den = np.zeros(len(refs))
    for scale in range(1, 5):
        window = gaussian_window_1d(2 ** (5 - scale) + 1)
        if scale > 1:
            filtered = _filter_valid(np.stack(refs + [dist]), window)[:, ::2, ::2]
            refs, dist = list(filtered[:-1]), filtered[-1]
        if min(dist.shape) < len(window):
            break  # image too small for this scale (the reference would fail here)
        stacked = np.stack([*refs, dist, dist * dist, *(r * r for r in refs), *(r * dist for r in refs)])
        maps = _filter_valid(stacked, window)
        k = len(refs)
        mu_d, e_dd = maps[k], maps[k + 1]
        sigma2_sq = np.maximum(e_dd - mu_d * mu_d, 0.0)
        for i in range(k):
            mu_r, e_rr, e_rd = maps[i], maps[k + 2 + i], maps[2 * k + 2 + i]
            sigma1_sq = np.maximum(e_rr - mu_r * mu_r, 0.0)
            sigma12 = e_rd - mu_r * mu_d
            g = sigma12 / (sigma1_sq + _EPS)
            sv_sq = sigma2_sq - g * sigma12
            flat_ref = sigma1_sq < _EPS
            g[flat_ref] = 0.0
            sv_sq[flat_ref] = sigma2_sq[flat_ref]
            sigma1_sq[flat_ref] = 0.0
            flat_dist = sigma2_sq < _EPS
            g[flat_dist] = 0.0
            sv_sq[flat_dist] = 0.0
            negative = g < 0
            sv_sq[negative] = sigma2_sq[negative]
            g[negative] = 0.0
            np.maximum(sv_sq, _EPS, out=sv_sq)
            num[i] += np.sum(np.log10(1.0 + g * g * sigma1_sq / (sv_sq + _SIGMA_N_SQ)))
            den[i] += np.sum(np.log10(1.0 + sigma1_sq / _SIGMA_N_SQ))
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = num / den
    return [1.0 if np.isnan(v) else float(v) for v in ratios]


def visual_information_fidelity(fused: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """VIF = VIFp(A, F) + VIFp(B, F) (CDDFuse convention: a sum over the two sources)."""
    f, a64, b64 = as_triplet(fused, a, b)
    return float(sum(vif_components([a64, b64], f)))
