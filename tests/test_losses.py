"""Tests of tgif.train.losses: exact values on hand-made tensors, an independent Sobel, gradients, errors."""

from __future__ import annotations

import kornia
import pytest
import torch
import torch.nn.functional as F

from tgif.errors import UnknownNameError
from tgif.train.losses import TASK_LOSSES, FusionLoss, depthwise_filter, gaussian_blur, sobel_magnitude, ssim_loss

SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def reference_sobel(x: torch.Tensor) -> torch.Tensor:
    """|Sobel_x x| + |Sobel_y x| with plain conv2d on a replicate-padded input."""
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = F.conv2d(padded, SOBEL_X[None, None])
    gy = F.conv2d(padded, SOBEL_X.T[None, None])
    return gx.abs() + gy.abs()


@pytest.fixture
def sources() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.rand(2, 1, 24, 20, generator=gen), torch.rand(2, 1, 24, 20, generator=gen)


def test_paper_weights() -> None:
    assert {t: (w.grad, w.ssim) for t, w in TASK_LOSSES.items()} == {
        "ivf": (20.0, 0.0), "mif": (20.0, 0.0), "mff": (300.0, 1.0), "mef": (500.0, 1.0)}
    loss = FusionLoss("MEF", grad_weight=7, ssim_weight=0.5)
    assert (loss.grad_weight, loss.ssim_weight) == (7.0, 0.5)


def test_sobel_matches_conv2d_and_step_edge(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    torch.testing.assert_close(sobel_magnitude(sources[0]), reference_sobel(sources[0]))
    step = torch.zeros(1, 1, 6, 6)
    step[..., 3:] = 1.0
    magnitude = sobel_magnitude(step)[0, 0]
    assert torch.equal(magnitude[:, 2:4], torch.full((6, 2), 4.0))
    assert magnitude[:, [0, 1, 4, 5]].abs().sum() == 0


def test_sobel_per_plane_for_batches_and_channels() -> None:
    image = torch.rand(3, 2, 9, 13, generator=torch.Generator().manual_seed(4))
    expected = torch.stack([torch.cat([reference_sobel(image[b:b + 1, c:c + 1]) for c in range(2)], dim=1)[0]
                            for b in range(3)])
    torch.testing.assert_close(sobel_magnitude(image), expected)


def test_depthwise_filter_is_per_plane_correlation() -> None:
    gen = torch.Generator().manual_seed(5)
    image, kernels = torch.rand(2, 3, 8, 11, generator=gen), torch.rand(4, 3, 2, generator=gen)
    out = depthwise_filter(image, kernels, (1, 0, 2, 0), "replicate")
    assert out.shape == (2, 3, 4, 8, 11)
    padded = F.pad(image, (1, 0, 2, 0), mode="replicate")
    for b, c, k in [(0, 0, 0), (1, 2, 3), (0, 1, 2)]:
        torch.testing.assert_close(out[b, c, k], F.conv2d(padded[b:b + 1, c:c + 1], kernels[k][None, None])[0, 0])
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        depthwise_filter(image[0], kernels)


@pytest.mark.parametrize("shape", [(1, 1, 32, 32), (2, 1, 24, 17), (3, 2, 12, 15)])
def test_blur_and_ssim_match_kornia(shape: tuple[int, int, int, int]) -> None:
    gen = torch.Generator().manual_seed(6)
    y_a, y_b, fused = (torch.rand(*shape, generator=gen) for _ in range(3))
    torch.testing.assert_close(gaussian_blur(y_a), kornia.filters.gaussian_blur2d(y_a, (11, 11), (1.5, 1.5),
                                                                                  border_type="reflect"))
    fused.requires_grad_(True)
    ours = ssim_loss(fused, y_a, y_b)
    (grad_ours,) = torch.autograd.grad(ours, fused)
    theirs = (2 - kornia.metrics.ssim(y_a, fused, 11, max_val=1.0).mean()
              - kornia.metrics.ssim(y_b, fused, 11, max_val=1.0).mean())
    (grad_theirs,) = torch.autograd.grad(theirs, fused)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(grad_ours, grad_theirs)


def test_blur_refuses_images_smaller_than_its_border() -> None:
    with pytest.raises(ValueError, match="larger than 5 pixels"):
        gaussian_blur(torch.rand(1, 1, 5, 40))


@pytest.mark.parametrize("task", ["ivf", "mif"])
def test_max_target_tasks(task: str, sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = sources
    fused = torch.maximum(a, b)
    out = FusionLoss(task)(fused, a, b)
    assert out["int"] == 0
    expected_grad = (reference_sobel(fused) - torch.maximum(reference_sobel(a), reference_sobel(b))).abs().mean()
    torch.testing.assert_close(out["grad"], expected_grad)
    assert out["ssim"] == 0
    torch.testing.assert_close(out["total"], 20 * expected_grad)


@pytest.mark.parametrize("task", ["mff", "mef"])
def test_mean_target_tasks(task: str, sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = sources
    loss = FusionLoss(task)
    fused = (a + b) / 2
    out = loss(fused, a, b)
    assert out["int"] == 0
    expected_grad = (reference_sobel(fused) - torch.maximum(reference_sobel(a), reference_sobel(b))).abs().mean()
    torch.testing.assert_close(out["grad"], expected_grad)
    assert 0 < out["ssim"] < 2
    torch.testing.assert_close(out["total"], loss.grad_weight * expected_grad + out["ssim"])


def test_constant_images_exact_values() -> None:
    a, b, fused = (torch.full((1, 1, 16, 16), v) for v in (0.25, 0.75, 0.5))
    assert FusionLoss("ivf")(fused, a, b)["int"].item() == pytest.approx(0.25)
    out = FusionLoss("mff")(fused, a, b)
    assert out["int"].item() == pytest.approx(0.0)
    assert out["grad"].item() == 0.0


def test_ssim_term_zero_for_identical_images(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    image = sources[0]
    assert ssim_loss(image, image, image).item() == pytest.approx(0.0, abs=1e-5)
    out = FusionLoss("mff")(image, image, image)
    assert out["total"].item() == pytest.approx(0.0, abs=1e-4)


@pytest.mark.parametrize("task", ["ivf", "mef", "mff"])
def test_gradients_flow(task: str, sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    a, b = sources
    fused = torch.rand_like(a).requires_grad_(True)
    FusionLoss(task)(fused, a, b)["total"].backward()
    assert fused.grad is not None and torch.isfinite(fused.grad).all() and fused.grad.abs().sum() > 0


def test_errors(sources: tuple[torch.Tensor, torch.Tensor]) -> None:
    with pytest.raises(UnknownNameError, match="unknown task"):
        FusionLoss("pansharpening")
    with pytest.raises(ValueError, match="shapes differ"):
        FusionLoss("ivf")(sources[0][:, :, :10], *sources)
