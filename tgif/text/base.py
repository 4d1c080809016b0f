"""The text-encoder interface: captions in, per-token features and a mask out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch

from tgif.errors import TextEncoderError


class TextEncoder(ABC):
    """A frozen text encoder that turns captions into per-token features.

    Attributes:
        name: stable identifier of the encoder and its weights (``"minilm:all-MiniLM-L6-v2"``);
            stored in checkpoints and used as part of the feature-cache key.
        dim: size D of each token feature.
        max_tokens: longest token sequence (special tokens included) the encoder reads;
            longer captions are truncated with a logged warning.
    """

    name: str
    dim: int
    max_tokens: int

    @abstractmethod
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a batch of captions.

        Args:
            captions: the captions; empty strings are valid (special tokens only).

        Returns:
            ``(features, mask)`` on the CPU: float32 features (B, L, D) padded to the longest
            caption of the batch (padding positions are zero) and a bool mask (B, L) that is
            True on real tokens.
        """

    @abstractmethod
    def token_count(self, caption: str) -> int:
        """Return how many tokens (special tokens included) ``caption`` has before truncation."""

    def token_pieces(self, caption: str) -> list[str | None] | None:
        """The text of each token of ``caption`` as :meth:`encode` returns them (None for the encoder's special
        tokens), or None when the encoder cannot tell; for training labels, never a model input."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, max_tokens={self.max_tokens})"


def check_captions(captions: Sequence[str]) -> list[str]:
    """Return ``captions`` as a list, or raise TextEncoderError if it is not a sequence of strings."""
    if isinstance(captions, (str, bytes)):
        raise TextEncoderError("encode() takes a list of captions, not a single string; wrap it in a list")
    captions = list(captions)
    for index, caption in enumerate(captions):
        if not isinstance(caption, str):
            raise TextEncoderError(f"caption {index} is a {type(caption).__name__}, not a string")
    return captions
