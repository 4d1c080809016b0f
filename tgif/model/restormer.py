"""Restormer building blocks (Zamir et al., CVPR 2022), as used by FILM's fusion network.

Follows ``swz30/Restormer:basicsr/models/archs/restormer_arch.py`` (and its copy in
``Zhaozixiang1228/IF-FILM:net/restormer.py``): WithBias LayerNorm over channels, multi-Dconv
head transposed attention (MDTA: channel-by-channel attention, so cost is linear in H*W) and the
gated-Dconv feed-forward network (GDFN), plus Restormer's PixelUnshuffle/PixelShuffle
down- and up-sampling. Every module maps (B, C, H, W) feature maps; they are fastest (2-3x on
CPU) when those are in channels_last memory format, which the layouts below preserve.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LayerNorm2d(nn.Module):
    """Layer normalisation over the channels of each pixel (Restormer's ``WithBias_LayerNorm``).

    Shapes: (B, C, H, W) -> (B, C, H, W). Statistics are per pixel over C (biased variance,
    eps 1e-5), followed by a learned per-channel scale and shift.
    """

    def __init__(self, channels: int, eps: float = 1e-5) -> None:
        """Normalise ``channels`` channels; scale starts at 1, shift at 0."""
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (B, C, H, W) over C."""
        x = F.layer_norm(x.permute(0, 2, 3, 1), x.shape[1:2], self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


def pixel_tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, H*W, C) pixel tokens: a view when ``x`` is channels_last (TGIF's feature maps)."""
    b, c, h, w = x.shape
    return x.permute(0, 2, 3, 1).reshape(b, h * w, c)


def token_map(tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, H*W, C) pixel tokens -> (B, C, H, W) channels_last (a view of contiguous ``tokens``)."""
    b, _, c = tokens.shape
    return tokens.reshape(b, height, width, c).permute(0, 3, 1, 2)


def channel_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, temperature: torch.Tensor
) -> torch.Tensor:
    """Restormer's transposed (channel-by-channel) attention, per head, on pixel tokens.

    Args:
        q, k, v: (B, N, C) pixel tokens (:func:`pixel_tokens`) of queries, keys and values; C must be divisible
            by ``heads``; head i holds channels [i C/heads, (i+1) C/heads).
        heads: number of heads; each head attends among its C/heads channels.
        temperature: (heads, 1, 1) learned scale of the logits.

    Returns:
        (B, N, C): for each head, v (C/heads, N) mixed by softmax(q_hat k_hat^T * temperature), a
        (C/heads, C/heads) map, where q_hat, k_hat are q, k L2-normalised over the N positions.

    The heads' maps are computed as the diagonal blocks of one (C, C) map (the other logits set to -inf, so
    their weights are exactly 0): the tokens stay in the pixels-by-channels layout of channels_last maps, so
    neither the forward nor the backward pass copies them into (B, heads, C/heads, N) and back.
    """
    b, n, c = q.shape
    if c % heads:
        raise ValueError(f"channels ({c}) must be a multiple of heads ({heads})")
    head = torch.arange(c, device=q.device) // (c // heads)
    scale = temperature.reshape(heads).repeat_interleave(c // heads)[:, None]  # (C, 1): each row its head's
    logits = (F.normalize(q, dim=1).transpose(1, 2) @ F.normalize(k, dim=1)) * scale  # (B, C, C)
    attn = torch.softmax(logits.masked_fill(head[:, None] != head[None, :], float("-inf")), dim=-1)
    return v @ attn.transpose(1, 2)


class MDTA(nn.Module):
    """Multi-Dconv head transposed self-attention (Restormer's ``Attention``).

    Shapes: (B, C, H, W) -> (B, C, H, W). A 1x1 conv to 3C and a 3x3 depthwise conv give
    q, k, v (the first, second and third C channels); :func:`channel_attention` mixes channels within
    each head; a 1x1 conv projects back.
    """

    def __init__(self, dim: int, heads: int, bias: bool = False) -> None:
        """Attention over ``dim`` channels split into ``heads`` heads (``dim % heads == 0``)."""
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, padding=1, groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Attend (B, C, H, W) -> (B, C, H, W)."""
        # split as pixel tokens: the backward of a channel split of channels_last maps would give the dwconv an
        # NCHW gradient to copy back
        q, k, v = pixel_tokens(self.qkv_dwconv(self.qkv(x))).split(x.shape[1], dim=-1)
        out = channel_attention(q, k, v, self.heads, self.temperature)
        return self.project_out(token_map(out, *x.shape[-2:]))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network (Restormer's ``FeedForward``).

    Shapes: (B, C, H, W) -> (B, C, H, W), through a hidden width ``int(C * expansion)``:
    1x1 conv to 2*hidden, 3x3 depthwise conv, split into x1, x2, ``gelu(x1) * x2``, 1x1 conv to C.
    """

    def __init__(self, dim: int, expansion: float, bias: bool = False) -> None:
        """Feed-forward on ``dim`` channels with hidden width ``int(dim * expansion)``."""
        super().__init__()
        hidden = int(dim * expansion)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform (B, C, H, W) -> (B, C, H, W)."""
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class TransformerBlock(nn.Module):
    """Restormer transformer block: ``x + MDTA(LN(x))``, then ``x + GDFN(LN(x))``.

    Shapes: (B, C, H, W) -> (B, C, H, W).
    """

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool = False) -> None:
        """Block on ``dim`` channels with ``heads`` attention heads and GDFN ``expansion``."""
        super().__init__()
        self.norm1 = LayerNorm2d(dim)
        self.attn = MDTA(dim, heads, bias)
        self.norm2 = LayerNorm2d(dim)
        self.ffn = GDFN(dim, expansion, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform (B, C, H, W) -> (B, C, H, W)."""
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Downsample(nn.Module):
    """Restormer's down-sampling: 3x3 conv to C/2, then PixelUnshuffle(2).

    Shapes: (B, C, H, W) -> (B, 2C, H/2, W/2); C and H, W must be even.
    """

    def __init__(self, channels: int) -> None:
        """Halve the resolution of ``channels``-channel maps and double their channels."""
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels // 2, kernel_size=3, padding=1, bias=False), nn.PixelUnshuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Down-sample (B, C, H, W) -> (B, 2C, H/2, W/2)."""
        return self.body(x)


class Upsample(nn.Module):
    """Restormer's up-sampling: 3x3 conv to 2C, then PixelShuffle(2).

    Shapes: (B, C, H, W) -> (B, C/2, 2H, 2W); C must be even.
    """

    def __init__(self, channels: int) -> None:
        """Double the resolution of ``channels``-channel maps and halve their channels."""
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels * 2, kernel_size=3, padding=1, bias=False), nn.PixelShuffle(2)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Up-sample (B, C, H, W) -> (B, C/2, 2H, 2W)."""
        return self.body(x)
