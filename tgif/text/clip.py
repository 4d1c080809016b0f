"""CLIP text-transformer token features."""

from __future__ import annotations

import os

import torch

from tgif.text.hf import HFTextEncoder
from tgif.text.loading import load_pretrained, resolve_source

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"
CLIP_MAX_TOKENS = 77


class ClipTextEncoder(HFTextEncoder):
    """``CLIPTextModel(...).last_hidden_state`` (512-d for ViT-B/32), at most 77 tokens."""

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_CLIP_MODEL, device: str | torch.device = "cpu") -> None:
        """Load a CLIP checkpoint (Hub id or local folder) onto ``device``."""
        from transformers import CLIPTextModel, CLIPTokenizer

        source = resolve_source("clip", model)
        network = load_pretrained(CLIPTextModel.from_pretrained, source, "CLIP text model")
        super().__init__(
            name=source.name,
            tokenizer=load_pretrained(CLIPTokenizer.from_pretrained, source, "CLIP tokenizer"),
            model=network,
            dim=network.config.hidden_size,
            max_tokens=min(CLIP_MAX_TOKENS, network.config.max_position_embeddings),
            device=device,
        )
