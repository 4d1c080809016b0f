"""A disk cache of per-caption token features, and an encoder wrapper that uses it.

Layout: ``<root>/<encoder slug>/<first 2 hex>/<sha256(encoder name + "\\n" + caption)>.npy``, each
file a float32 (L_i, D) array of the caption's real tokens. The default root is
``<cache root>/text`` (:func:`tgif.settings.cache_dir`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from tgif import settings
from tgif.disk_cache import CacheBudget, touch
from tgif.text.base import TextEncoder, check_captions

logger = logging.getLogger(__name__)


def default_cache_root() -> Path:
    """Return ``<cache root>/text`` (:func:`tgif.settings.cache_dir`)."""
    return settings.cache_dir() / "text"


class TextFeatureCache:
    """Token features of captions on disk, keyed by encoder name and caption text; at most ``TGIF_CACHE_MAX_MB``,
    least recently used files evicted (:mod:`tgif.disk_cache`)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        """Use ``root`` as the cache folder (created on the first write)."""
        self.root = Path(root).expanduser()
        self._budget = CacheBudget(self.root, depth=3)

    def path(self, encoder_name: str, caption: str) -> Path:
        """Return the file that holds ``caption``'s features for ``encoder_name``."""
        key = hashlib.sha256(f"{encoder_name}\n{caption}".encode()).hexdigest()
        slug = re.sub(r"[^A-Za-z0-9@._-]+", "_", encoder_name)
        return self.root / slug / key[:2] / f"{key}.npy"

    def get(self, encoder_name: str, caption: str, dim: int) -> np.ndarray | None:
        """Return the cached float32 (L, dim) features, or None when absent or unreadable."""
        path = self.path(encoder_name, caption)
        if not path.is_file():
            return None
        try:
            features = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable text-feature cache file %s: %s", path, exc)
            return None
        if features.ndim != 2 or features.shape[1] != dim or features.dtype != np.float32:
            logger.warning("ignoring text-feature cache file %s with shape %s %s", path, features.shape, features.dtype)
            return None
        touch(path)
        return features

    def put(self, encoder_name: str, caption: str, features: np.ndarray) -> None:
        """Store float32 (L, D) features atomically (temporary file, then rename)."""
        path = self.path(encoder_name, caption)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=".tmp-", suffix=".npy", delete=False)
        try:
            with handle:
                np.save(handle, np.ascontiguousarray(features, dtype=np.float32), allow_pickle=False)
            os.replace(handle.name, path)
        except BaseException:
            Path(handle.name).unlink(missing_ok=True)
            raise
        self._budget.added(path.stat().st_size)


class CachedTextEncoder(TextEncoder):
    """Wraps an encoder: cached captions are read from disk, the misses are encoded in one batch.

    Returns what the wrapped encoder returns for the same captions (same shapes, mask and zero
    padding); values equal the uncached ones up to float rounding of a different batch padding.
    """

    def __init__(self, encoder: TextEncoder, cache: TextFeatureCache) -> None:
        """Cache the features of ``encoder`` in ``cache``."""
        self.encoder = encoder
        self.cache = cache
        self.name = encoder.name
        self.dim = encoder.dim
        self.max_tokens = encoder.max_tokens

    def token_count(self, caption: str) -> int:
        """Return the wrapped encoder's token count (before truncation)."""
        return self.encoder.token_count(caption)

    def token_pieces(self, caption: str) -> list[str | None] | None:
        """The wrapped encoder's token pieces of ``caption``."""
        return self.encoder.token_pieces(caption)

    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode captions like the wrapped encoder, running it only on the cache misses."""
        captions = check_captions(captions)
        found = {caption: self.cache.get(self.name, caption, self.dim) for caption in dict.fromkeys(captions)}
        misses = [caption for caption, features in found.items() if features is None]
        if misses:
            features, mask = self.encoder.encode(misses)
            for row, caption in enumerate(misses):
                found[caption] = features[row, mask[row]].numpy()
                self._store(caption, found[caption])
        return _pad([found[caption] for caption in captions], self.dim)

    def _store(self, caption: str, features: np.ndarray) -> None:
        """Write one entry; a failed write only costs speed, so it is logged, not raised."""
        try:
            self.cache.put(self.name, caption, features)
        except OSError as exc:
            logger.warning("could not write the text-feature cache under %s: %s", self.cache.root, exc)


def _pad(rows: list[np.ndarray], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack (L_i, dim) arrays into zero-padded (B, L, dim) features and a (B, L) bool mask."""
    length = max((len(row) for row in rows), default=0)
    features = torch.zeros(len(rows), length, dim)
    mask = torch.zeros(len(rows), length, dtype=torch.bool)
    for index, row in enumerate(rows):
        features[index, : len(row)] = torch.from_numpy(row)
        mask[index, : len(row)] = True
    return features, mask
