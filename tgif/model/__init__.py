"""TGIF's text-guided fusion network, its building blocks and its checkpoint files.

``build_tgif()`` gives the default network (:class:`TGIFConfig`: dim 32, features at 1/4
resolution, MiniLM-sized 384-d text); ``model(y_a, y_b, text, text_mask)`` fuses two
(B, 1, H, W) luminance images under (B, L, text_dim) caption tokens. :func:`save_tgif` and
:func:`load_tgif` write and read safetensors checkpoints with their config and text-encoder name.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tgif.model.checkpoint import CheckpointMetadata, load_tgif, read_metadata, save_tgif, update_extra
from tgif.model.restormer import GDFN, MDTA, LayerNorm2d, TransformerBlock
from tgif.model.source_attention import ChannelCrossAttention, CrossSourceBlock
from tgif.model.text_attention import TextAdapter, TextGuidance, TextGuidedBlock
from tgif.model.tgif_net import TGIFConfig, TGIFNet


def build_tgif(config: TGIFConfig | Mapping[str, Any] | None = None) -> TGIFNet:
    """Build a freshly initialised :class:`TGIFNet`.

    Args:
        config: a :class:`TGIFConfig`, a dict as from :meth:`TGIFConfig.to_dict` (missing keys
            take their defaults), or None for the defaults.

    Raises:
        ValueError: an unknown key or a bad value in ``config``.
    """
    if config is None or isinstance(config, TGIFConfig):
        return TGIFNet(config)
    return TGIFNet(TGIFConfig.from_dict(config))


__all__ = [
    "GDFN",
    "MDTA",
    "ChannelCrossAttention",
    "CheckpointMetadata",
    "CrossSourceBlock",
    "LayerNorm2d",
    "TGIFConfig",
    "TGIFNet",
    "TextAdapter",
    "TextGuidance",
    "TextGuidedBlock",
    "TransformerBlock",
    "build_tgif",
    "load_tgif",
    "read_metadata",
    "save_tgif",
    "update_extra",
]
