"""Cross-source attention: each source's features attend to the other source's, Restormer style.

The attention is MDTA's transposed (channel-by-channel) attention with the queries taken from one
source and the keys/values from the other, so its cost stays linear in the number of pixels.
"""

from __future__ import annotations

import torch
from torch import nn

from tgif.model.restormer import GDFN, LayerNorm2d, channel_attention, pixel_tokens, token_map


class ChannelCrossAttention(nn.Module):
    """Transposed cross-attention: queries from ``x``, keys and values from ``context``.

    Shapes: x (B, C, H, W), context (B, C, H, W) -> (B, C, H, W). q = dwconv3x3(conv1x1(LN(x))),
    (k, v) = dwconv3x3(conv1x1(LN(context))) split in two; per head a (C/heads, C/heads) map
    ``softmax(q_hat k_hat^T * temperature)`` mixes the channels of v; a 1x1 conv projects back.
    """

    def __init__(self, dim: int, heads: int, bias: bool = False) -> None:
        """Attention on ``dim`` channels split into ``heads`` heads (``dim % heads == 0``)."""
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.norm_x = LayerNorm2d(dim)
        self.norm_context = LayerNorm2d(dim)
        self.q = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=1, bias=bias),
            nn.Conv2d(dim, dim, kernel_size=3, padding=1, groups=dim, bias=bias),
        )
        self.kv = nn.Sequential(
            nn.Conv2d(dim, dim * 2, kernel_size=1, bias=bias),
            nn.Conv2d(dim * 2, dim * 2, kernel_size=3, padding=1, groups=dim * 2, bias=bias),
        )
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Attend (B, C, H, W) queries over a (B, C, H, W) context -> (B, C, H, W)."""
        q = pixel_tokens(self.q(self.norm_x(x)))
        k, v = pixel_tokens(self.kv(self.norm_context(context))).split(x.shape[1], dim=-1)
        out = channel_attention(q, k, v, self.heads, self.temperature)
        return self.project_out(token_map(out, *x.shape[-2:]))


class CrossSourceBlock(nn.Module):
    """Exchange between the two sources' features, both ways, each followed by a GDFN.

    Shapes: a (B, C, H, W), b (B, C, H, W) -> (a', b') of the same shapes, where
    ``a' = a + attn_ab(a, b)``, ``b' = b + attn_ba(b, a)`` (both from the inputs, so the update is
    symmetric), then ``x + GDFN(LN(x))`` on each.
    """

    def __init__(self, dim: int, heads: int, expansion: float, bias: bool = False) -> None:
        """Block on ``dim`` channels with ``heads`` heads and GDFN ``expansion``."""
        super().__init__()
        self.attn_a = ChannelCrossAttention(dim, heads, bias)
        self.attn_b = ChannelCrossAttention(dim, heads, bias)
        self.norm_a = LayerNorm2d(dim)
        self.norm_b = LayerNorm2d(dim)
        self.ffn_a = GDFN(dim, expansion, bias)
        self.ffn_b = GDFN(dim, expansion, bias)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Exchange information between (B, C, H, W) maps ``a`` and ``b``."""
        a, b = a + self.attn_a(a, b), b + self.attn_b(b, a)
        return a + self.ffn_a(self.norm_a(a)), b + self.ffn_b(self.norm_b(b))
