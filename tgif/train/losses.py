"""Unsupervised fusion losses per task: intensity + gradient (+ SSIM) terms, as in the TGIF paper.

``L = L_int + a1 * L_grad + a2 * L_SSIM``, every term mean-reduced over batch and pixels:

- ``L_int = |F - T|_1`` with the intensity target ``T = max(I1, I2)`` for IVF and MIF (keep the
  brighter, i.e. salient, source) and ``T = (I1 + I2) / 2`` for MEF and MFF.
- ``L_grad = | |grad F| - max(|grad I1|, |grad I2|) |_1`` with ``|grad x| = |S_x * x| + |S_y * x|``,
  the unnormalised 3x3 Sobel kernels (``[[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]]`` and its transpose)
  applied by :func:`kornia.filters.spatial_gradient` (``normalized=False``; replicate border).
- ``L_SSIM = 2 - SSIM(I1, F) - SSIM(I2, F)`` with :func:`kornia.metrics.ssim` (11x11 Gaussian window,
  ``max_val=1``); computed only when its weight is not zero.

Paper weights ``(a1, a2)``: IVF/MIF (20, 0), MFF (300, 1), MEF (500, 1); both can be overridden.
Inputs are (B, 1, H, W) luminance tensors in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import kornia
import torch
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


def sobel_magnitude(image: torch.Tensor) -> torch.Tensor:
    """Return ``|S_x * x| + |S_y * x|`` (same shape as ``image``, (B, C, H, W)), unnormalised 3x3 Sobel."""
    grads = kornia.filters.spatial_gradient(image, mode="sobel", order=1, normalized=False)
    return grads.abs().sum(dim=2)


def ssim_loss(fused: torch.Tensor, y_a: torch.Tensor, y_b: torch.Tensor, window: int = SSIM_WINDOW) -> torch.Tensor:
    """Return ``2 - SSIM(y_a, fused) - SSIM(y_b, fused)``, each SSIM the mean of kornia's SSIM map."""
    ssim_a = kornia.metrics.ssim(y_a, fused, window, max_val=1.0).mean()
    ssim_b = kornia.metrics.ssim(y_b, fused, window, max_val=1.0).mean()
    return 2.0 - ssim_a - ssim_b


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
