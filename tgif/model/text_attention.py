"""Text guidance: the caption adapter and the text-guided cross-attention block.

As in FILM (``Zhaozixiang1228/IF-FILM:net/Film.py``) the text tokens are the queries and the image
features the keys/values; unlike FILM, the attended text is then written back into *every pixel*
by a second cross-attention (pixels query the text tokens), so the output has the image's shape.
Image features here live at 1/``downscale`` resolution; the image keys/values of the first
attention are average-pooled by a further ``text_pool`` to keep that attention cheap.

Shapes used below: B batch, L text tokens (both captions concatenated), C feature channels,
(h, w) the feature-map size, N = ceil(h / text_pool) * ceil(w / text_pool) pooled image tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tgif.model.restormer import GDFN, LayerNorm2d


class TextAdapter(nn.Module):
    """Maps frozen text-encoder token features to the image feature width.

    Shapes: (B, L, D) -> (B, L, C), token by token: LayerNorm(D) -> Linear(D, C) -> GELU -> Linear(C, C).
    The LayerNorm puts encoders of different scale (MiniLM 384-d, BLIP-2 768-d) on one footing.
    """

    def __init__(self, text_dim: int, dim: int) -> None:
        """Adapter from ``text_dim``-wide tokens to ``dim``-wide tokens."""
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(text_dim), nn.Linear(text_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        """Map (B, L, D) -> (B, L, C)."""
        return self.body(text)


class MultiHeadCrossAttention(nn.Module):
    """Multi-head scaled dot-product cross-attention between two token sets.

    Shapes: queries (B, Nq, C) and context (B, Nk, C) -> (B, Nq, C). Both inputs are
    layer-normalised, projected (q from the queries, k and v from the context), attended with
    :func:`torch.nn.functional.scaled_dot_product_attention` per head (C/heads channels each)
    and projected back. ``key_mask`` (B, Nk) bool, True on real context tokens, hides padding;
    every row must have at least one True (see :class:`TextGuidedBlock`).
    """

    def __init__(self, dim: int, heads: int) -> None:
        """Attention on ``dim`` channels split into ``heads`` heads (``dim % heads == 0``)."""
        super().__init__()
        self.heads = heads
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim)
        self.to_kv = nn.Linear(dim, dim * 2)
        self.proj = nn.Linear(dim, dim)

    def forward(
        self, queries: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Attend (B, Nq, C) over (B, Nk, C) -> (B, Nq, C)."""
        b, nq, c = queries.shape
        q = self.to_q(self.norm_q(queries)).reshape(b, nq, self.heads, c // self.heads).transpose(1, 2)
        k, v = self.to_kv(self.norm_kv(context)).reshape(b, -1, 2, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_mask is None else key_mask[:, None, None, :]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (B, heads, Nq, C/heads)
        return self.proj(out.transpose(1, 2).reshape(b, nq, c))


class TextGuidedBlock(nn.Module):
    """One round of text-guided cross-attention: image -> text, then text -> every pixel.

    Shapes:
        x: (B, C, h, w) image features; tokens: (B, L, C) adapted text; mask: (B, L) bool,
        True on real tokens. Returns ``(x', tokens')`` of the same shapes.

    Steps:
        (i) the text tokens query the image: keys/values are x average-pooled by ``text_pool``
            (ceil mode, so any h, w) and flattened to (B, N, C); ``tokens' = tokens + attn``.
            No key mask is needed (all image tokens are real); padding tokens are queries whose
            results are never read, because (ii) masks them.
        (ii) every pixel of x, flattened to (B, h*w, C), queries ``tokens'`` with ``mask`` as key
            padding mask; the result is added to x, then ``x + GDFN(LN(x))``.
        A sample whose mask has no True at all passes through unchanged (x' = x, tokens' = tokens),
        so an empty or fully masked caption behaves like the no-text path and never yields NaN.
    """

    def __init__(self, dim: int, heads: int, expansion: float, text_pool: int) -> None:
        """Block on ``dim`` channels with ``heads`` heads, GDFN ``expansion`` and key pooling ``text_pool``."""
        super().__init__()
        self.text_pool = text_pool
        self.text_from_image = MultiHeadCrossAttention(dim, heads)
        self.image_from_text = MultiHeadCrossAttention(dim, heads)
        self.norm = LayerNorm2d(dim)
        self.ffn = GDFN(dim, expansion)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Condition (B, C, h, w) features on (B, L, C) tokens; returns the updated pair."""
        b, c, h, w = x.shape
        has_text = mask.any(dim=1)  # (B,)
        safe_mask = mask | ~has_text[:, None]  # no fully masked row reaches the attention

        pooled = x if self.text_pool == 1 else F.avg_pool2d(x, self.text_pool, ceil_mode=True)
        image_tokens = pooled.permute(0, 2, 3, 1).reshape(b, -1, c)  # (B, N, C)
        new_tokens = tokens + self.text_from_image(tokens, image_tokens)

        pixels = x.permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, h*w, C); a view when x is channels_last
        guided = self.image_from_text(pixels, new_tokens, safe_mask).reshape(b, h, w, c).permute(0, 3, 1, 2)
        new_x = x + guided
        new_x = new_x + self.ffn(self.norm(new_x))

        return (
            torch.where(has_text[:, None, None, None], new_x, x),
            torch.where(has_text[:, None, None], new_tokens, tokens),
        )


class TextGuidance(nn.Module):
    """A stack of :class:`TextGuidedBlock` that carries the text tokens from block to block.

    Shapes: x (B, C, h, w), tokens (B, L, C), mask (B, L) bool -> x' (B, C, h, w).
    """

    def __init__(self, dim: int, heads: int, expansion: float, text_pool: int, blocks: int) -> None:
        """``blocks`` text-guided blocks on ``dim`` channels."""
        super().__init__()
        self.blocks = nn.ModuleList(TextGuidedBlock(dim, heads, expansion, text_pool) for _ in range(blocks))

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Condition (B, C, h, w) features on (B, L, C) tokens -> (B, C, h, w)."""
        for block in self.blocks:
            x, tokens = block(x, tokens, mask)
        return x
