"""Unsupervised fusion losses per task: intensity + gradient (+ SSIM) terms, as in the TGIF paper.

``L = L_int + a1 * L_grad + a2 * L_SSIM``, every term mean-reduced over batch and pixels:

- ``L_int = |F - T|_1`` with the intensity target ``T = max(I1, I2)`` for IVF and MIF (keep the
  brighter, i.e. salient, source) and ``T = (I1 + I2) / 2`` for MEF and MFF.
- ``L_grad = | |grad F| - max(|grad I1|, |grad I2|) |_1`` with ``|grad x| = |S_x * x| + |S_y * x|``,
  the unnormalised 3x3 Sobel kernels (``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` and its transpose;
  replicate border), as :func:`kornia.filters.spatial_gradient` with ``normalized=False``.
- ``L_SSIM = 2 - SSIM(I1, F) - SSIM(I2, F)``, each SSIM the mean of the map :func:`kornia.metrics.ssim`
  gives (11x11 Gaussian window of sigma 1.5, reflect border, ``max_val=1``); computed only when its
  weight is not zero.

Sobel runs as one depthwise convolution over the batch folded into channels (:func:`depthwise_filter`),
and SSIM blurs the eight local moments it needs in two calls of :func:`gaussian_blur` (the sources' four,
which need no gradient, and the four with F) as matrix products, not kornia's ten single-channel
filterings: on the CPU those take PyTorch's slow paths for one-channel convolutions (at batch 2,
oneDNN's 1-channel kernel is ~20x slower than its depthwise one), which made the MEF/MFF loss a
third of a training step. The values are kornia's up to float rounding (``tests/test_losses.py``).

Paper weights ``(a1, a2)``: IVF/MIF (20, 0), MFF (300, 1), MEF (500, 1); both can be overridden.
Inputs are (B, 1, H, W) luminance tensors in [0, 1].
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.filters import get_gaussian_kernel1d
from torch import nn

from tgif.errors import UnknownNameError


@dataclass(frozen=True)
class LossWeights:
    """Weights of one task's loss: ``a1`` for the gradient term, ``a2`` for the SSIM term."""

    intensity_target: str  # "max" or "mean"
    grad: float
    ssim: float


#: The paper's settings per task.
TASK_LOSSES: dict[str, LossWeights] = {
    "ivf": LossWeights("max", 20.0, 0.0),
    "mif": LossWeights("max", 20.0, 0.0),
    "mff": LossWeights("mean", 300.0, 1.0),
    "mef": LossWeights("mean", 500.0, 1.0),
}

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
#: kornia.metrics.ssim's constants at max_val=1: c1 = 0.01**2, c2 = 0.03**2, eps added to the denominator.
SSIM_C1, SSIM_C2, SSIM_EPS = 0.01**2, 0.03**2, 1e-12

#: Unnormalised Sobel kernels, x then y (cross-correlation, as kornia.filters.spatial_gradient applies them).
SOBEL_KERNELS = torch.tensor([[[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
                              [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]])


def depthwise_filter(image: torch.Tensor, kernels: torch.Tensor, pad: tuple[int, int, int, int] | None = None,
                     border: str = "reflect") -> torch.Tensor:
    """Cross-correlate every plane of ``image`` with each kernel, as one depthwise convolution.

    Args:
        image: (B, C, H, W).
        kernels: (K, kh, kw).
        pad: (left, right, top, bottom) border added first (``F.pad`` order); None for none.
        border: ``F.pad`` mode of that border.

    Returns:
        (B, C, K, H', W'): plane (b, c) filtered by kernel k ("valid" correlation of the padded planes).
    """
    if image.ndim != 4 or kernels.ndim != 3:
        raise ValueError(f"image must be (B, C, H, W) and kernels (K, kh, kw), got {tuple(image.shape)} and "
                         f"{tuple(kernels.shape)}")
    batch, channels, height, width = image.shape
    planes = image.reshape(1, batch * channels, height, width)
    if pad is not None:
        planes = F.pad(planes, pad, mode=border)
    weight = kernels.to(image)[:, None].repeat(batch * channels, 1, 1, 1)
    # channels_last: oneDNN's depthwise kernel is 3-4x faster on the CPU in that layout
    out = F.conv2d(planes.contiguous(memory_format=torch.channels_last), weight, groups=batch * channels)
    return out.view(batch, channels, kernels.shape[0], *out.shape[-2:])


@functools.lru_cache(maxsize=16)
def _blur_matrix(size: int, window: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(size, size) matrix M with ``M @ v`` = v reflect-padded by ``window // 2`` and correlated with kornia's
    sampled Gaussian of ``window`` taps (built by filtering the identity's columns)."""
    kernel = get_gaussian_kernel1d(window, sigma, device=device, dtype=dtype)[0]
    identity = torch.eye(size, dtype=dtype, device=device)[None, None]
    half = window // 2
    return depthwise_filter(identity, kernel.view(1, window, 1), (0, 0, half, half))[0, 0, 0]


def gaussian_blur(image: torch.Tensor, window: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """(B, C, H, W) smoothed by the separable ``window`` x ``window`` Gaussian of ``sigma`` (kornia's sampled
    kernel, kornia's reflect border), same shape; H and W must exceed ``window // 2``.

    Computed as ``M_H @ image @ M_W^T`` with :func:`_blur_matrix`'s matrices, which hold the border too: two
    matrix products, faster on the CPU than the two 1-D convolutions (whose oneDNN kernels are slow for a few
    channels), with the same result up to float rounding.
    """
    height, width = image.shape[-2:]
    if min(height, width) <= window // 2:
        raise ValueError(f"a {window}-tap blur needs images larger than {window // 2} pixels, got {height}x{width}")
    rows = _blur_matrix(height, window, sigma, image.dtype, image.device)
    cols = _blur_matrix(width, window, sigma, image.dtype, image.device)
    return rows @ image @ cols.T


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Return ``|S_x * x| + |S_y * x|`` (same shape as ``image``, (B, C, H, W)), unnormalised 3x3 Sobel."""
    return depthwise_filter(image, SOBEL_KERNELS, (1, 1, 1, 1), "replicate").abs().sum(dim=2)


def _mean_ssim(mu_x: torch.Tensor, mu_f: torch.Tensor, xx: torch.Tensor, ff: torch.Tensor,
               xf: torch.Tensor) -> torch.Tensor:
    """Mean of the SSIM map from the local moments E[x], E[f], E[x^2], E[f^2], E[xf] (kornia's formula)."""
    num = (2.0 * mu_x * mu_f + SSIM_C1) * (2.0 * (xf - mu_x * mu_f) + SSIM_C2)
    den = (mu_x**2 + mu_f**2 + SSIM_C1) * ((xx - mu_x**2) + (ff - mu_f**2) + SSIM_C2)
    return (num / (den + SSIM_EPS)).mean()


def ssim_loss(fused: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Return ``2 - SSIM(y_a, fused) - SSIM(y_b, fused)``, each SSIM the mean of kornia's SSIM map
    (:func:`kornia.metrics.ssim` with ``max_val=1``), for (B, C, H, W) images of one shape."""
    mu_a, mu_b, aa, bb = gaussian_blur(torch.cat([y_a, y_b, y_a * y_a, y_b * y_b], dim=1),
                                      window).chunk(4, dim=1)
    mu_f, ff, af, bf = gaussian_blur(torch.cat([fused, fused * fused, y_a * fused, y_b * fused], dim=1),
                                     window).chunk(4, dim=1)
    return 2.0 - _mean_ssim(mu_a, mu_f, aa, ff, af) - _mean_ssim(mu_b, mu_f, bb, ff, bf)


class FusionLoss(nn.Module):
    """The fusion loss of one task.

    Args:
        task: ``ivf``, ``mif``, ``mef`` or ``mff`` (case-insensitive).
        grad_weight: ``a1``; None for the paper's value.
        ssim_weight: ``a2``; None for the paper's value.

    Raises:
        UnknownNameError: ``task`` is not one of the four.
    """

    def __init__(self, task: str, grad_weight: float | None = None, ssim_weight: float | None = None) -> None:
        super().__init__()
        key = task.strip().lower()
        if key not in TASK_LOSSES:
            raise UnknownNameError(f"unknown task {task!r}; choose from {', '.join(TASK_LOSSES)}")
        paper = TASK_LOSSES[key]
        self.task = key
        self.intensity_target = paper.intensity_target
        self.grad_weight = paper.grad if grad_weight is None else float(grad_weight)
        self.ssim_weight = paper.ssim if ssim_weight is None else float(ssim_weight)

    def forward(self, fused: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor) -> dict[str, torch.Tensor]:
        """Return the terms ``int``, ``grad``, ``ssim`` (zero when its weight is zero) and ``total``.

        Args:
            fused: the fused luminance F, (B, 1, H, W).
            y_a, y_b: the source luminances I1, I2, same shape.
        """
        if fused.shape != y_a.shape or fused.shape != y_b.shape:
            shapes = ", ".join(str(tuple(t.shape)) for t in (fused, y_a, y_b))
            raise ValueError(f"shapes differ (fused, y_a, y_b): {shapes}")
        target = torch.maximum(y_a, y_b) if self.intensity_target == "max" else (y_a + y_b) / 2
        loss_int = (fused - target).abs().mean()
        grad_target = torch.maximum(sobel_magnitude(y_a), sobel_magnitude(y_b))
        loss_grad = (sobel_magnitude(fused) - grad_target).abs().mean()
        loss_ssim = ssim_loss(fused, y_a, y_b) if self.ssim_weight else fused.new_zeros(())
        total = loss_int + self.grad_weight * loss_grad + self.ssim_weight * loss_ssim
        return {"int": loss_int, "grad": loss_grad, "ssim": loss_ssim, "total": total}

    def extra_repr(self) -> str:
        return f"task={self.task!r}, grad_weight={self.grad_weight:g}, ssim_weight={self.ssim_weight:g}"
