"""A text encoder made of a Hugging Face tokenizer and a model that returns ``last_hidden_state``."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any

import torch

from tgif.text.base import TextEncoder, check_captions

logger = logging.getLogger(__name__)


class HFTextEncoder(TextEncoder):
    """Frozen tokenizer + transformer; token features are the model's ``last_hidden_state``.

    The backends (:mod:`tgif.text.minilm`, :mod:`tgif.text.blip2`, :mod:`tgif.text.clip`) only
    load their tokenizer and model and hand them to this class.

    Thread-safe: a fast tokenizer keeps its padding and truncation settings in its Rust backend
    and sets them on every call, so two threads tokenizing at once (two app users) can get each
    other's settings; tokenizer calls are serialised by one lock (they take microseconds), the
    model runs outside it.
    """

    def __init__(
        self,
        name: str,
        tokenizer: Any,
        model: torch.nn.Module,
        dim: int,
        max_tokens: int,
        device: str | torch.device = "cpu",
    ) -> None:
        """Freeze ``model`` on ``device`` and pad on the right with ``tokenizer``.

        Args:
            name: stable encoder name (see :class:`TextEncoder`).
            tokenizer: a ``transformers`` tokenizer matching ``model``.
            model: a module whose output has ``last_hidden_state`` (B, L, dim).
            dim: feature size of ``last_hidden_state``.
            max_tokens: truncation length, special tokens included.
            device: where the model runs; features are always returned on the CPU.
        """
        self.name = name
        self.dim = int(dim)
        self.max_tokens = int(max_tokens)
        self.device = torch.device(device)
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self._tokenizer_lock = threading.Lock()
        self.model = model.to(self.device).eval().requires_grad_(False)

    def token_count(self, caption: str) -> int:
        """Return how many tokens (special tokens included) ``caption`` has before truncation."""
        return len(self._tokenize(caption, verbose=False)["input_ids"])

    def token_pieces(self, caption: str) -> list[str | None] | None:
        """The tokenizer's piece of each token of ``caption`` (truncated as :meth:`encode`; None for special
        tokens)."""
        ids = self._tokenize(caption, truncation=True, max_length=self.max_tokens)["input_ids"]
        special = set(self.tokenizer.all_special_ids)
        return [None if i in special else piece for i, piece in zip(ids, self.tokenizer.convert_ids_to_tokens(ids))]

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode captions to (B, L, D) float32 features and a (B, L) bool mask, on the CPU."""
        captions = check_captions(captions)
        if not captions:
            return torch.zeros(0, 0, self.dim), torch.zeros(0, 0, dtype=torch.bool)
        self._warn_if_truncated(captions)
        batch = self._tokenize(
            captions, padding="longest", truncation=True, max_length=self.max_tokens, return_tensors="pt"
        )
        with torch.inference_mode():
            hidden = self.model(
                input_ids=batch["input_ids"].to(self.device),
                attention_mask=batch["attention_mask"].to(self.device),
            ).last_hidden_state
        mask = batch["attention_mask"].bool()
        # Outside inference mode: the out-of-place fill returns a normal tensor that autograd accepts.
        features = hidden.to("cpu", torch.float32).masked_fill(~mask.unsqueeze(-1), 0.0)
        return features, mask

    def _tokenize(self, text: str | list[str], **options: Any) -> Any:
        """Run the tokenizer under the lock (see the class docstring)."""
        with self._tokenizer_lock:
            return self.tokenizer(text, **options)

    def _warn_if_truncated(self, captions: list[str]) -> None:
        """Log one warning per caption longer than ``max_tokens`` (counts only, never the text)."""
        lengths = [len(ids) for ids in self._tokenize(captions, verbose=False)["input_ids"]]
        for index, length in enumerate(lengths):
            if length > self.max_tokens:
                logger.warning(
                    "caption %d of %d has %d tokens, more than the %d that %s reads; truncated to %d",
                    index + 1, len(captions), length, self.max_tokens, self.name, self.max_tokens,
                )
