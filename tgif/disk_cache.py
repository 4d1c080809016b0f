"""Size caps for TGIF's on-disk caches: least recently used entries are deleted past the cap.

Each cache (perception maps, text features) is a folder of entries at a fixed depth below its root
(a file or a folder per entry). A read touches its entry (:func:`touch`); a write tells the cache's
:class:`CacheBudget`, which keeps the cache's size as a running total (the folder is scanned once, at
the first write) and, only when the total passes :func:`cache_limit_bytes` (``TGIF_CACHE_MAX_MB`` per
cache, default 256 MB), lets :func:`prune` delete the entries used longest ago, down to
:data:`PRUNE_TO` of the cap, so that a full cache is scanned once per fifth of its cap written rather
than at every write (a scan of a full text cache, ~5,000 files, takes about 100 ms). A cache that cannot
be pruned (read-only, a race with another process) only logs: it never fails a fusion.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from pathlib import Path

from tgif import settings

logger = logging.getLogger(__name__)

#: Default cap of each cache, in MB (``TGIF_CACHE_MAX_MB``).
DEFAULT_CACHE_MAX_MB = 256
#: A cache over its cap is pruned down to this fraction of it (room for new entries before the next scan).
PRUNE_TO = 0.8


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
    return _prune(root, depth, cache_limit_bytes() if max_bytes is None else max_bytes)[1]


class CacheBudget:
    """The running size of one cache (``depth`` levels of entries below ``root``), so that a write costs a scan
    of the cache folder only at the first write and when the cache goes over its cap (it is then pruned to
    :data:`PRUNE_TO` of the cap). Thread-safe."""

    def __init__(self, root: Path, depth: int) -> None:
        self.root, self.depth = root, depth
        self._bytes: int | None = None
        self._lock = threading.Lock()

    def added(self, nbytes: int) -> None:
        """Count a new entry of ``nbytes`` (already on disk); evict the least recently used past the cap."""
        limit = cache_limit_bytes()
        with self._lock:
            if self._bytes is None:  # first write: measure what earlier runs left (the new entry included)
                self._bytes, _ = _prune(self.root, self.depth, None)
            else:
                self._bytes += nbytes
            if self._bytes > limit:
                total, freed = _prune(self.root, self.depth, int(limit * PRUNE_TO))
                self._bytes = total - freed


def _prune(root: Path, depth: int, limit: int | None) -> tuple[int, int]:
    """(bytes in the cache, bytes freed): the entries used longest ago deleted until at most ``limit`` remain
    (None: only measure)."""
    try:
        entries = [p for p in root.glob("/".join(["*"] * depth)) if not p.name.startswith(".")]
        sized = sorted(((p.stat().st_mtime, _entry_size(p), p) for p in entries), key=lambda e: e[0])
    except OSError as exc:
        logger.warning("could not size the cache %s: %s", root, exc)
        return 0, 0
    total = sum(size for _, size, _ in sized)
    freed = 0
    for _, size, path in sized:
        if limit is None or total - freed <= limit:
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
        logger.info("cache %s: evicted %.1f MB (cap %.0f MB)", root, freed / 2**20, (limit or 0) / 2**20)
    return total, freed
