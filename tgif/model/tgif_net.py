"""TGIF's fusion network: two Restormer encoders, text guidance, cross-source attention, a decoder.

Data flow for a pair of luminance images y_a, y_b (B, 1, H, W) in [0, 1] and text tokens
(B, L, text_dim) of both captions concatenated, with s = ``downscale`` = 2**n, widths
c_k = dim / 2**(n - k) at level k (full resolution is level 0, c_n = dim):

1. Reflect-pad H, W up to multiples of s: (B, 1, Hp, Wp).
2. Per source (:class:`SourceEncoder`, separate weights for a and b): 3x3 conv to c_0, then at each
   level k < n a residual conv block (its output is the skip s_k, (B, c_k, Hp/2**k, Wp/2**k)) and
   Restormer's Downsample (3x3 conv + PixelUnshuffle(2)); then ``encoder_blocks`` Restormer
   blocks on (B, dim, h, w), h = Hp/s, w = Wp/s.
3. Text (:mod:`tgif.model.text_attention`): an adapter maps the tokens to (B, L, dim); per source,
   ``text_blocks`` text-guided blocks (text queries the image, then every pixel queries the
   text) give (B, dim, h, w). Skipped (identity) without text.
4. :class:`~tgif.model.source_attention.CrossSourceBlock`: channel cross-attention a <-> b plus
   GDFN; the two maps are concatenated (B, 2 dim, h, w) and merged by a 1x1 conv to (B, dim, h, w).
5. :class:`FusionDecoder`: ``decoder_blocks`` Restormer blocks, then for k = n-1 .. 0 Restormer's
   Upsample (3x3 conv + PixelShuffle(2)) to (B, c_k, ...), concatenation with both sources' skips
   s_k (B, 3 c_k, ...), a 1x1 conv to c_k and a residual conv block; a 3x3 conv gives the
   residual r (B, 1, Hp, Wp).
6. fused = mean(y_a, y_b) + r, cropped to (B, 1, H, W); clamped to [0, 1] in eval mode only.

The stages can run apart (``forward`` is them in sequence): :meth:`TGIFNet.encode_sources` (step 2,
text-free), :meth:`TGIFNet.guide_sources` (steps 3-4, the trunk) and :meth:`TGIFNet.ground_and_decode`
(the pixel grounding head, then step 5, then the region grounding's emphasis of the named objects in the fused
image, :meth:`TGIFNet.emphasise`). A pair's encoded sources serve every caption, and with a grounding head the
trunk of its drafted captions serves every edit of them (see :mod:`tgif.session`).

The Restormer blocks work at 1/s resolution and the full- and half-resolution levels use cheap
convolutions only: at full resolution a Restormer stack costs tens of seconds per 640x480 image on
a 2-core CPU (``shared/notes/toolchain.md`` section 7). Feature maps are kept in channels_last
memory format, which makes the convolutions 2-3x faster on CPU.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tgif.model.region_grounding import RegionGrounding, RegionTokens
from tgif.model.restormer import Downsample, TransformerBlock, Upsample
from tgif.model.source_attention import CrossSourceBlock
from tgif.model.text_attention import TextAdapter, TextGuidance
from tgif.model.text_grounding import TextGrounding


@dataclass(frozen=True)
class TGIFConfig:
    """Hyper-parameters of :class:`TGIFNet`; JSON-serialisable through :meth:`to_dict`.

    Attributes:
        dim: feature channels at the Restormer resolution (64 in the paper; 32 for CPU speed).
        heads: attention heads of the channel attentions (MDTA, cross-source); divides ``dim``.
        text_heads: attention heads of the text cross-attentions; divides ``dim``. Kept low because
            PyTorch's CPU attention kernel is slow for tiny heads: over 150 tokens at 640x480,
            8 heads of width 4 take ~10x longer than 2 heads of width 16.
        encoder_blocks: Restormer blocks per source encoder (M).
        decoder_blocks: Restormer blocks in the decoder (N).
        text_blocks: repeats of the text-guided cross-attention block per source.
        text_dim: width of the text-encoder tokens (384 for MiniLM, 768 for BLIP-2's Q-Former).
        ffn_expansion: GDFN hidden-width factor.
        downscale: resolution factor of the Restormer features, a power of two; ``dim`` must be a
            multiple of ``2 * downscale`` (the full-resolution width is ``dim / downscale``).
        text_pool: extra average-pooling factor of the image keys/values the text attends over.
        use_text: False builds the no-text ablation network (no text modules; text is ignored).
        grounding: add :class:`~tgif.model.text_grounding.TextGrounding` after the merge, which
            emphasises the pixels the caption names (on in the steering checkpoints; off in older
            ones, whose weights have no such parameters).
        region_grounding: add :class:`~tgif.model.region_grounding.RegionGrounding` after the decoder instead,
            which matches the caption to the pair's detected objects (region tokens) and emphasises the named
            ones only, in the fused image (the shipped IVF checkpoint); exclusive with ``grounding``.
    """

    dim: int = 32
    heads: int = 8
    text_heads: int = 2
    encoder_blocks: int = 2
    decoder_blocks: int = 3
    text_blocks: int = 2
    text_dim: int = 384
    ffn_expansion: float = 2.66
    downscale: int = 4
    text_pool: int = 2
    use_text: bool = True
    grounding: bool = False
    region_grounding: bool = False

    def __post_init__(self) -> None:
        """Check the values; raises ValueError naming the first bad one."""
        for field in dataclasses.fields(self):
            value, kind = getattr(self, field.name), type(field.default)
            allowed = (int, float) if kind is float else kind
            if not isinstance(value, allowed) or (isinstance(value, bool) and kind is not bool):
                raise ValueError(f"TGIFConfig.{field.name} must be a {kind.__name__}, got {value!r}")
        for name in ("dim", "heads", "text_heads", "text_dim", "downscale", "text_pool"):
            if getattr(self, name) < 1:
                raise ValueError(f"TGIFConfig.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("encoder_blocks", "decoder_blocks", "text_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"TGIFConfig.{name} must not be negative, got {getattr(self, name)}")
        if int(self.dim * self.ffn_expansion) < 1:
            raise ValueError(f"TGIFConfig.ffn_expansion ({self.ffn_expansion}) gives GDFN no hidden channels")
        for name in ("heads", "text_heads"):
            if self.dim % getattr(self, name):
                raise ValueError(f"TGIFConfig.dim ({self.dim}) must be a multiple of {name} ({getattr(self, name)})")
        if self.grounding and self.region_grounding:
            raise ValueError("TGIFConfig.grounding and TGIFConfig.region_grounding exclude each other")
        if self.downscale & (self.downscale - 1):
            raise ValueError(f"TGIFConfig.downscale must be a power of two, got {self.downscale}")
        if self.dim % (2 * self.downscale):
            raise ValueError(f"TGIFConfig.dim ({self.dim}) must be a multiple of 2 * downscale ({2 * self.downscale})")

    @property
    def levels(self) -> int:
        """Number of 2x down-sampling steps, log2(``downscale``)."""
        return self.downscale.bit_length() - 1

    def to_dict(self) -> dict[str, int | float | bool]:
        """Return the fields as a plain dict (JSON-serialisable)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TGIFConfig:
        """Build a config from :meth:`to_dict` output; missing keys take their defaults.

        Raises:
            ValueError: an unknown key or a bad value.
        """
        unknown = sorted(set(data) - {field.name for field in dataclasses.fields(cls)})
        if unknown:
            raise ValueError(f"unknown TGIFConfig keys: {', '.join(unknown)}")
        return cls(**data)


class ConvBlock(nn.Module):
    """Residual convolution block for the full- and half-resolution levels.

    Shapes: (B, C, H, W) -> (B, C, H, W): ``x + conv3x3(gelu(conv3x3(x)))``.
    """

    def __init__(self, channels: int) -> None:
        """Block on ``channels`` channels."""
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
            nn.GELU(),
            nn.Conv2d(channels, channels, kernel_size=3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Transform (B, C, H, W) -> (B, C, H, W)."""
        return x + self.body(x)


def _level_widths(config: TGIFConfig) -> list[int]:
    """Channel widths c_0 .. c_n of the levels, full resolution first (c_n = ``config.dim``)."""
    return [config.dim >> (config.levels - k) for k in range(config.levels + 1)]


class SourceEncoder(nn.Module):
    """Encoder of one source image.

    Shapes: (B, 1, Hp, Wp), Hp and Wp multiples of ``downscale`` -> (skips, features) with
    skips[k] (B, c_k, Hp/2**k, Wp/2**k) for k < n and features (B, dim, Hp/s, Wp/s).
    """

    def __init__(self, config: TGIFConfig) -> None:
        """Encoder for ``config``."""
        super().__init__()
        widths = _level_widths(config)
        self.stem = nn.Conv2d(1, widths[0], kernel_size=3, padding=1)
        self.levels = nn.ModuleList(ConvBlock(width) for width in widths[:-1])
        self.downs = nn.ModuleList(Downsample(width) for width in widths[:-1])
        self.blocks = nn.Sequential(
            *(TransformerBlock(config.dim, config.heads, config.ffn_expansion) for _ in range(config.encoder_blocks))
        )

    def forward(self, y: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Encode (B, 1, Hp, Wp) -> (skips, (B, dim, Hp/s, Wp/s)), all in channels_last format."""
        x = self.stem(y).contiguous(memory_format=torch.channels_last)
        skips = []
        for level, down in zip(self.levels, self.downs):
            x = level(x)
            skips.append(x)
            x = down(x)
        return skips, self.blocks(x)


class FusionDecoder(nn.Module):
    """Decoder from the merged features to the fused-luminance residual.

    Shapes: x (B, dim, Hp/s, Wp/s) and both sources' skips (as from :class:`SourceEncoder`)
    -> r (B, 1, Hp, Wp).
    """

    def __init__(self, config: TGIFConfig) -> None:
        """Decoder for ``config``."""
        super().__init__()
        widths = _level_widths(config)
        self.blocks = nn.Sequential(
            *(TransformerBlock(config.dim, config.heads, config.ffn_expansion) for _ in range(config.decoder_blocks))
        )
        self.ups = nn.ModuleList(Upsample(width) for width in widths[1:])
        self.fuse_skips = nn.ModuleList(nn.Conv2d(3 * width, width, kernel_size=1) for width in widths[:-1])
        self.levels = nn.ModuleList(ConvBlock(width) for width in widths[:-1])
        self.output = nn.Conv2d(widths[0], 1, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, skips_a: list[torch.Tensor], skips_b: list[torch.Tensor]) -> torch.Tensor:
        """Decode (B, dim, Hp/s, Wp/s) -> (B, 1, Hp, Wp)."""
        x = self.blocks(x)
        for k in reversed(range(len(self.ups))):
            x = self.ups[k](x)
            x = self.fuse_skips[k](torch.cat([x, skips_a[k], skips_b[k]], dim=1))
            x = self.levels[k](x)
        return self.output(x)


@dataclass
class SourceFeatures:
    """What :meth:`TGIFNet.encode_sources` computes once per pair, reused by every caption.

    Attributes:
        mean: (B, 1, H, W) mean of the two sources (the base the decoder's residual is added to).
        skips_a, skips_b: each source's skip features per level, as from :class:`SourceEncoder`.
        feat_a, feat_b: (B, dim, Hp/s, Wp/s) each source's Restormer features.
    """

    mean: torch.Tensor
    skips_a: list[torch.Tensor]
    skips_b: list[torch.Tensor]
    feat_a: torch.Tensor
    feat_b: torch.Tensor

    def repeat(self, times: int) -> SourceFeatures:
        """The batch repeated ``times`` times (batch rows [b0 .. bB-1, b0 .. bB-1, ...])."""
        def rep(t: torch.Tensor) -> torch.Tensor:
            return t.repeat(times, *([1] * (t.ndim - 1))).contiguous(memory_format=torch.channels_last) \
                if t.ndim == 4 and t.shape[1] > 1 else t.repeat(times, *([1] * (t.ndim - 1)))
        return SourceFeatures(rep(self.mean), [rep(t) for t in self.skips_a], [rep(t) for t in self.skips_b],
                              rep(self.feat_a), rep(self.feat_b))


@dataclass
class GuidedFeatures:
    """What :meth:`TGIFNet.guide_sources` computes once per pair and scene captions, reused by every edit of them.

    Attributes:
        merged: (B, dim, Hp/s, Wp/s) the trunk's output (text blocks, cross-source block, merge).
        pixel_side: the grounding head's caption-independent part of ``merged``
            (:meth:`~tgif.model.text_grounding.TextGrounding.pixel_side`), filled in by the first
            :meth:`TGIFNet.ground_and_decode` that needs it; None until then.
    """

    merged: torch.Tensor
    pixel_side: tuple[torch.Tensor, torch.Tensor] | None = None


class TGIFNet(nn.Module):
    """Text-guided fusion of two luminance images (see the module docstring for the data flow).

    Inputs of :meth:`forward`: y_a, y_b (B, 1, H, W) in [0, 1], any H, W; text (B, L, text_dim)
    float tokens of both captions concatenated, text_mask (B, L) bool (True = real token).
    Output: fused luminance (B, 1, H, W) = mean(y_a, y_b) + residual; clamped to [0, 1] only in
    eval mode, so training gradients are never cut.
    """

    def __init__(self, config: TGIFConfig | None = None) -> None:
        """Network for ``config`` (defaults when None)."""
        super().__init__()
        self.config = config if config is not None else TGIFConfig()
        cfg = self.config
        self.encoder_a = SourceEncoder(cfg)
        self.encoder_b = SourceEncoder(cfg)
        if cfg.use_text:
            self.text_adapter = TextAdapter(cfg.text_dim, cfg.dim)
            self.text_a = TextGuidance(cfg.dim, cfg.text_heads, cfg.ffn_expansion, cfg.text_pool, cfg.text_blocks)
            self.text_b = TextGuidance(cfg.dim, cfg.text_heads, cfg.ffn_expansion, cfg.text_pool, cfg.text_blocks)
            if cfg.grounding:
                self.grounding = TextGrounding(cfg.dim, cfg.text_dim)
            if cfg.region_grounding:
                self.region_grounding = RegionGrounding(cfg.text_dim)
        self.cross_source = CrossSourceBlock(cfg.dim, cfg.heads, cfg.ffn_expansion)
        self.merge = nn.Conv2d(2 * cfg.dim, cfg.dim, kernel_size=1)
        self.decoder = FusionDecoder(cfg)

    def forward(
        self,
        y_a: torch.Tensor,
        y_b: torch.Tensor,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Fuse y_a, y_b (B, 1, H, W) under text (B, L, text_dim) -> (B, 1, H, W).

        The same as ``guide_and_decode(encode_sources(y_a, y_b), text, text_mask)``.

        Args:
            y_a, y_b: the two sources' luminance in [0, 1].
            text: token features of both captions concatenated along L; None (or a network built
                with ``use_text=False``, which ignores it) skips the text blocks.
            text_mask: True on real tokens, False on padding; None means all tokens are real.

        Raises:
            ValueError: shapes that do not fit together or the config.
        """
        self._check_inputs(y_a, y_b, text, text_mask)
        return self.guide_and_decode(self.encode_sources(y_a, y_b), text, text_mask)

    def encode_sources(self, y_a: torch.Tensor, y_b: torch.Tensor) -> SourceFeatures:
        """Stage 1, text-free: pad and encode both sources (B, 1, H, W) -> :class:`SourceFeatures`."""
        self._check_inputs(y_a, y_b, None, None)
        height, width = y_a.shape[-2:]
        pad_h, pad_w = -height % self.config.downscale, -width % self.config.downscale
        pair = torch.cat([y_a, y_b], dim=1)
        if pad_h or pad_w:
            mode = "reflect" if pad_h < height and pad_w < width else "replicate"
            pair = F.pad(pair, (0, pad_w, 0, pad_h), mode=mode)
        skips_a, feat_a = self.encoder_a(pair[:, :1])
        skips_b, feat_b = self.encoder_b(pair[:, 1:])
        return SourceFeatures(0.5 * (y_a + y_b), skips_a, skips_b, feat_a, feat_b)

    def guide_and_decode(
        self,
        features: SourceFeatures,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Stage 2: text guidance, cross-source attention and decoding of encoded sources -> (B, 1, H, W).

        ``text`` and ``text_mask`` as in :meth:`forward`; ``features`` may be reused for many captions.
        """
        return self.guide_and_ground(features, text, text_mask)[0]

    def guide_and_ground(self, features: SourceFeatures, text: torch.Tensor | None = None,
                         text_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """:meth:`guide_and_decode` that also returns where the caption points: the grounding head's relevance
        (B, 1, Hp/s, Wp/s) in (0, 1) at the feature resolution, or None (no grounding head, or no text).

        The same as ``ground_and_decode(features, guide_sources(features, text, text_mask), text, text_mask)``.
        """
        return self.ground_and_decode(features, self.guide_sources(features, text, text_mask), text, text_mask)

    def guide_sources(self, features: SourceFeatures, text: torch.Tensor | None = None,
                      text_mask: torch.Tensor | None = None) -> GuidedFeatures:
        """Stage 2a, the trunk: the text-guided blocks per source (steps 3-4 of the module docstring), the
        cross-source block and the merge -> (B, dim, Hp/s, Wp/s) in a :class:`GuidedFeatures`. ``text`` as in
        :meth:`forward`."""
        feat_a, feat_b = features.feat_a, features.feat_b
        text, text_mask = self._text_or_none(features, text, text_mask)
        if text is not None:
            tokens = self.text_adapter(text.to(feat_a.dtype))
            feat_a = self.text_a(feat_a, tokens, text_mask)
            feat_b = self.text_b(feat_b, tokens, text_mask)
        feat_a, feat_b = self.cross_source(feat_a, feat_b)
        return GuidedFeatures(self.merge(torch.cat([feat_a, feat_b], dim=1)))

    def ground_and_decode(self, features: SourceFeatures, guided: GuidedFeatures, text: torch.Tensor | None = None,
                          text_mask: torch.Tensor | None = None, regions: RegionTokens | None = None,
                          probabilities: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Stage 2b: the grounding head (when the network has one) under ``text`` and the decoder, from the
        trunk's output (:meth:`guide_sources`) -> (fused (B, 1, H, W), relevance or None: (B, 1, Hp/s, Wp/s) of
        the pixel grounding head, (B, 1, H, W) of the region grounding).

        ``guided`` may come from other captions than ``text``: the session reuses the trunk of a pair's drafted
        captions for every edit of them, so that an edit runs only this stage (:mod:`tgif.session`); the head's
        caption-independent part is kept in ``guided`` for the next caption.

        ``regions``: the pair's detected objects in the input's pixels, which a region-grounding network
        (:attr:`TGIFConfig.region_grounding`) matches the caption to and emphasises in the fused image
        (:meth:`emphasise`; None or empty: nothing can be named, so the trunk's fusion); ``probabilities``
        (B, R) imposes the match instead.
        """
        text, text_mask = self._text_or_none(features, text, text_mask)
        merged, relevance = guided.merged, None
        if text is not None and self.config.grounding:
            if guided.pixel_side is None:
                guided.pixel_side = self.grounding.pixel_side(merged)
            merged, relevance = self.grounding(merged, text.to(merged.dtype), text_mask, guided.pixel_side)
        height, width = features.mean.shape[-2:]
        residual = self.decoder(merged, features.skips_a, features.skips_b)[..., :height, :width]
        fused = features.mean + residual
        fused = fused if self.training else fused.clamp(0.0, 1.0)
        if self.config.region_grounding and regions is not None:
            fused, relevance = self.emphasise(fused, text, text_mask, regions, probabilities)
        return fused, relevance

    def emphasise(self, fused: torch.Tensor, text: torch.Tensor | None, text_mask: torch.Tensor | None,
                  regions: RegionTokens, probabilities: torch.Tensor | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The region grounding's step on a whole (B, 1, H, W) fused image (after the decoder, and after the
        tiles are blended when a large image is fused in tiles): the regions the caption (or ``probabilities``)
        names are emphasised -> (image, relevance (B, 1, H, W) or None when nothing could be named)."""
        if not self.config.region_grounding or (text is None and probabilities is None):
            return fused, None
        if text is not None and text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        tokens = text.to(fused.dtype) if text is not None else None
        fused, relevance, _ = self.region_grounding(fused, tokens, text_mask, regions, probabilities)
        return fused, relevance

    def _text_or_none(self, features: SourceFeatures, text: torch.Tensor | None,
                      text_mask: torch.Tensor | None) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(text, mask) the text modules read, with an all-True mask when None; (None, None) when the network
        ignores text (no text, no tokens, or built without text). Raises ValueError on a bad text shape."""
        if not self.config.use_text or text is None or text.shape[1] == 0:
            return None, None
        batch = features.mean.shape[0]
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != self.config.text_dim:
            raise ValueError(f"text must be (B, L, {self.config.text_dim}) with B={batch}, got {tuple(text.shape)}")
        if text_mask is None:
            text_mask = torch.ones(text.shape[:2], dtype=torch.bool, device=text.device)
        return text, text_mask

    def _check_inputs(
        self,
        y_a: torch.Tensor,
        y_b: torch.Tensor,
        text: torch.Tensor | None,
        text_mask: torch.Tensor | None,
    ) -> None:
        """Raise ValueError unless the inputs have the shapes :meth:`forward` documents."""
        if y_a.ndim != 4 or y_a.shape[1] != 1 or y_a.shape != y_b.shape:
            raise ValueError(
                f"y_a and y_b must both be (B, 1, H, W) of one shape, got {tuple(y_a.shape)} and {tuple(y_b.shape)}"
            )
        if text is None or not self.config.use_text:
            return
        batch, text_dim = y_a.shape[0], self.config.text_dim
        if text.ndim != 3 or text.shape[0] != batch or text.shape[2] != text_dim:
            raise ValueError(f"text must be (B, L, {text_dim}) with B={batch}, got {tuple(text.shape)}")
        if text_mask is not None and (text_mask.dtype != torch.bool or text_mask.shape != text.shape[:2]):
            raise ValueError(
                f"text_mask must be bool {tuple(text.shape[:2])}, got {text_mask.dtype} {tuple(text_mask.shape)}"
            )
