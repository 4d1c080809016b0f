"""Text grounding: where in the image the caption asks for something, and the emphasis put there.

The text-guided cross-attention (:mod:`tgif.model.text_attention`) conditions every pixel on the whole
caption through a softmax over its tokens, so any added words shift every pixel a little. A caption
that names an object ("highlight the person on the left") should change that object and nothing
else. :class:`TextGrounding` gives the network a place to do that:

1. relevance: each pixel of the merged features (B, C, h, w) with its 5x5 neighbourhood (two 3x3
   convolutions), plus its position in the frame
   (Fourier features of the normalised coordinates, so "on the left" can be grounded), is projected
   to a query q_p; each caption token, as the frozen text encoder gave it (the full D-wide feature,
   not the adapter's narrow one, so word meaning is not lost), to a key k_t;
   ``r_p = sigmoid(logsumexp_t(q_p . k_t / sqrt(d)) + b)``
   (B, 1, h, w). The soft maximum over tokens (not a softmax over them) means a pixel that no token
   points at stays near r = 0 however long the caption is, one token can light up a region on its
   own, and every token gets a share of the gradient while the head learns.
2. emphasis: ``x + gate(r) * conv1x1(x)`` with ``gate(r) = clamp((r - 0.5) / 0.5, 0, 1)``, so only
   pixels the head judges more likely named than not are changed (a faint relevance spread over the
   frame changes nothing); the 1x1 convolution starts at zero, so a network fine-tuned from a
   checkpoint without grounding starts as that checkpoint.

The relevance reads detached copies of the features and tokens: its own supervision (a map of the
named boxes) trains the head alone and never pulls the fusion trunk, which only the fusion targets
move (through the emphasis).

The relevance map is trained against the boxes a training caption names (:mod:`tgif.train.steer`);
:meth:`TGIFNet.relevance` returns it for display.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import nn

from tgif.model.restormer import LayerNorm2d

#: Frequencies (half-periods over the frame) of the position features of the pixel queries.
POSITION_FREQUENCIES = (1.0, 2.0, 4.0)
#: Relevance below which a pixel gets no emphasis (:func:`emphasis_gate`).
GATE_THRESHOLD = 0.5
#: Initial bias of the relevance logit: sigmoid(-4) ~ 0.018, so nothing is relevant at first.
RELEVANCE_BIAS = -4.0


@functools.lru_cache(maxsize=16)
def position_features(h: int, w: int, device: torch.device | None = None,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Fourier features of each cell's normalised position in an (h, w) grid: (1, 4 * len(freqs), h, w).

    With u = (column + 0.5) / w and v = (row + 0.5) / h in (0, 1): sin(pi f u), cos(pi f u),
    sin(pi f v), cos(pi f v) for each frequency f of :data:`POSITION_FREQUENCIES`. Kept for the last
    16 grids (a constant, made outside inference mode so training can use it too; do not modify it).
    """
    with torch.inference_mode(False), torch.no_grad():
        u = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) / w
        v = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) / h
        grid_v, grid_u = torch.meshgrid(v, u, indexing="ij")
        feats = []
        for f in POSITION_FREQUENCIES:
            for coord in (grid_u, grid_v):
                feats.extend([torch.sin(math.pi * f * coord), torch.cos(math.pi * f * coord)])
        return torch.stack(feats)[None].to(dtype)


class TextGrounding(nn.Module):
    """Relevance of each pixel to the caption, and an emphasis where it is relevant (module docstring).

    Shapes: x (B, C, h, w), tokens (B, L, D) text-encoder features, mask (B, L) bool (True = real token)
    -> (x', relevance) with x' (B, C, h, w) and relevance (B, 1, h, w) in (0, 1).
    """

    def __init__(self, dim: int, text_dim: int, key_dim: int = 32) -> None:
        """Grounding on ``dim`` channels and ``text_dim``-wide tokens with ``key_dim``-wide queries and keys."""
        super().__init__()
        self.norm = LayerNorm2d(dim)
        # two 3x3 convolutions: a pixel's query sees its neighbourhood (an object's shape, not one feature vector)
        self.to_q = nn.Sequential(nn.Conv2d(dim, 2 * key_dim, kernel_size=3, padding=1), nn.GELU(),
                                  nn.Conv2d(2 * key_dim, key_dim, kernel_size=3, padding=1))
        self.position = nn.Conv2d(4 * len(POSITION_FREQUENCIES), key_dim, kernel_size=1, bias=False)
        self.norm_text = nn.LayerNorm(text_dim)
        self.to_k = nn.Sequential(nn.Linear(text_dim, 2 * key_dim), nn.GELU(), nn.Linear(2 * key_dim, key_dim))
        self.bias = nn.Parameter(torch.tensor(RELEVANCE_BIAS))
        self.emphasis = nn.Conv2d(dim, dim, kernel_size=1)
        nn.init.zeros_(self.emphasis.weight)
        nn.init.zeros_(self.emphasis.bias)
        self.scale = key_dim ** -0.5

    def pixel_side(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the head computes from the features alone, the same for every caption: the pixel queries
        (:meth:`pixel_queries`) and the emphasis ``conv1x1(x)`` (B, C, h, w)."""
        return self.pixel_queries(x), self.emphasis(x)

    def pixel_queries(self, x: torch.Tensor) -> torch.Tensor:
        """The pixel queries (B, h*w, key_dim) of (B, C, h, w) features (a view of channels_last features), from
        a detached copy of them."""
        b, _, h, w = x.shape
        q = self.to_q(self.norm(x.detach())) + self.position(position_features(h, w, x.device, x.dtype))
        return q.permute(0, 2, 3, 1).reshape(b, h * w, q.shape[1])

    def relevance(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                  queries: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1, h, w) relevance in (0, 1); zero where a sample has no real token. ``queries``: the pixel queries
        of :meth:`pixel_queries` when already computed for ``x``."""
        x, tokens = x.detach(), tokens.detach()
        b, _, h, w = x.shape
        padding = None  # (B, L, 1): 0 on real tokens, -inf on padding
        if not bool(mask.all()):
            if b == 1:  # padding adds nothing to the soft max: drop it rather than mask (L, h*w) scores
                tokens = tokens[:, mask[0]]
            else:
                padding = torch.zeros_like(mask, dtype=tokens.dtype).masked_fill(~mask, float("-inf"))[..., None]
        if tokens.shape[1] == 0:
            return x.new_zeros(b, 1, h, w)
        # the scale is folded into the (few) keys instead of the (many) scores, which are laid out (B, L, pixels)
        # and made a block of pixels at a time (:data:`SCORE_BLOCK`): on CPU that is 3x faster than one map
        q = queries.detach() if queries is not None else self.pixel_queries(x)
        k = self.to_k(self.norm_text(tokens)) * self.scale  # (B, L, key_dim)
        best = []
        for block in q.split(max(1, SCORE_BLOCK // k.shape[1]), dim=1):
            logits = torch.bmm(k, block.transpose(1, 2))
            best.append(soft_max_over_tokens(logits if padding is None else logits + padding))
        relevance = torch.sigmoid(torch.cat(best, dim=1) + self.bias)  # (B, h*w); 0 where no token is real
        return relevance.reshape(b, 1, h, w)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor,
                pixel_side: tuple[torch.Tensor, torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Emphasise (B, C, h, w) features where the caption points; returns (features, relevance).

        ``pixel_side``: :meth:`pixel_side` of ``x`` when kept for many captions (computed here when None).
        """
        queries, emphasis = pixel_side if pixel_side is not None else self.pixel_side(x)
        relevance = self.relevance(x, tokens, mask, queries)
        return x + emphasis_gate(relevance) * emphasis, relevance


#: Scores (tokens x pixels) the relevance computes at a time: 4 MiB of float32, which stays in the CPU's cache.
SCORE_BLOCK = 2 ** 20
#: Floor of the scores less their maximum in :func:`soft_max_over_tokens`: exp(-87) is the smallest normal float32.
SCORE_FLOOR = -87.0


def soft_max_over_tokens(logits: torch.Tensor) -> torch.Tensor:
    """logsumexp of (B, L, P) scores over the L tokens -> (B, P), as ``torch.logsumexp(logits, dim=1)``; overwrites
    ``logits`` unless it requires a gradient.

    The scores less their maximum are floored at :data:`SCORE_FLOOR` before the exponential. A token that far
    below the best one adds less than 1e-37 to a sum of at least 1, so the result is the same, but the CPU's
    exponential is about 35x slower on inputs whose result would be a subnormal number, and a grounding head
    that has learned to reject most tokens produces many of those. A column with no finite score gives -inf.
    """
    top = logits.detach().amax(dim=1, keepdim=True)
    none = torch.isinf(top)  # a column whose every score is -inf
    top = top.masked_fill(none, 0.0)
    shifted = logits - top if logits.requires_grad else logits.sub_(top)  # in place when no gradient is wanted
    total = torch.log(shifted.clamp_(min=SCORE_FLOOR).exp_().sum(dim=1)) + top.squeeze(1)
    return total.masked_fill(none.squeeze(1), float("-inf"))


def emphasis_gate(relevance: torch.Tensor) -> torch.Tensor:
    """How much of the emphasis a pixel gets: 0 up to relevance 0.5 (where "named" stops being the likelier
    answer), rising linearly to 1 at relevance 1, so a faint, spread-out relevance changes nothing."""
    return ((relevance - GATE_THRESHOLD) / (1.0 - GATE_THRESHOLD)).clamp(0.0, 1.0)
