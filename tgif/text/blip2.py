"""BLIP-2 Q-Former text-tower token features (the paper's text encoder)."""

from __future__ import annotations

import os

import torch

from tgif.text.hf import HFTextEncoder
from tgif.text.loading import load_pretrained, resolve_source

DEFAULT_BLIP2_MODEL = "Salesforce/blip2-itm-vit-g"
BLIP2_MAX_TOKENS = 512


class Blip2TextEncoder(HFTextEncoder):
    """``Blip2TextModelWithProjection(...).last_hidden_state`` (768-d for the real checkpoint).

    This is the Q-Former text encoder (LAVIS ``extract_features(mode="text")``), not
    ``Blip2Model.get_text_features``, which runs the language model.
    """

    def __init__(self, model: str | os.PathLike[str] = DEFAULT_BLIP2_MODEL, device: str | torch.device = "cpu") -> None:
        """Load a BLIP-2 checkpoint (Hub id or local folder) onto ``device``."""
        from transformers import AutoTokenizer, Blip2TextModelWithProjection

        source = resolve_source("blip2", model)
        network = load_pretrained(Blip2TextModelWithProjection.from_pretrained, source, "BLIP-2 text model")
        qformer = network.config.qformer_config
        super().__init__(
            name=source.name,
            tokenizer=load_pretrained(AutoTokenizer.from_pretrained, source, "BLIP-2 tokenizer"),
            model=network,
            dim=qformer.hidden_size,
            max_tokens=min(BLIP2_MAX_TOKENS, qformer.max_position_embeddings),
            device=device,
        )
