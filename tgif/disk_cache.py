"""Size caps for TGIF's on-disk caches: least recently used entries are deleted past the cap.

Each cache (perception maps, text features) is a folder of entries at a fixed depth below its root
(a file or a folder per entry). A read touches its entry (:func:`touch`); after a write,
:func:`prune` deletes the entries used longest ago until the cache is at most
:func:`cache_limit_bytes` (``TGIF_CACHE_MAX_MB`` per cache, default 256 MB). A cache that cannot be
pruned (read-only, a race with another process) only logs: it never fails a fusion.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from tgif import settings

logger = logging.getLogger(__name__)

#: Default cap of each cache, in MB (``TGIF_CACHE_MAX_MB``).
DEFAULT_CACHE_MAX_MB = 256


def cache_limit_bytes() -> int:
    """The cap of each cache in bytes (``TGIF_CACHE_MAX_MB``, default :data:`DEFAULT_CACHE_MAX_MB`).

    Raises:
        TgifError: the variable is not a positive number.
    """
    return int(settings.positive_number("TGIF_CACHE_MAX_MB", DEFAULT_CACHE_MAX_MB, "megabytes") * 2**20)


def touch(path: Path) -> None:
    """Mark a cache entry as just used (its modification time), ignoring failures."""
    try:
        os.utime(path)
    except OSError:
        pass


def _entry_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def prune(root: Path, depth: int, max_bytes: int | None = None) -> int:
    """Delete the least recently used entries (``depth`` levels below ``root``; names starting with ``.`` are
    writes in progress and kept) until the rest take at most ``max_bytes`` (default :func:`cache_limit_bytes`).
    Returns the bytes freed."""
    limit = cache_limit_bytes() if max_bytes is None else max_bytes
    try:
        entries = [p for p in root.glob("/".join(["*"] * depth)) if not p.name.startswith(".")]
        sized = sorted(((p.stat().st_mtime, _entry_size(p), p) for p in entries), key=lambda e: e[0])
    except OSError as exc:
        logger.warning("could not size the cache %s: %s", root, exc)
        return 0
    total = sum(size for _, size, _ in sized)
    freed = 0
    for _, size, path in sized:
        if total - freed <= limit:
            break
        try:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            freed += size
        except OSError as exc:
            logger.warning("could not evict %s from the cache: %s", path, exc)
    if freed:
        logger.info("cache %s: evicted %.1f MB (cap %.0f MB)", root, freed / 2**20, limit / 2**20)
    return freed
