"""Settings read from the environment, in one place.

``TGIF_SHARED``
    Folder holding the provided ``data/``, ``train/`` and ``weights/``. Defaults to
    ``../shared`` beside the repository root (or beside the current directory) when it exists.
``TGIF_MAX_PIXELS``
    Largest image (width x height) that is loaded without an explicit downscale request.
``TGIF_CACHE_DIR``
    Root of every cache TGIF writes (perception maps, text features, downloaded checkpoints,
    Ultralytics' settings); default ``~/.cache/tgif``.
``TGIF_WEIGHTS_DIR``
    Folder of the TGIF checkpoints and the bundled detector; default ``weights/`` in the repository.
"""

from __future__ import annotations

import os
from pathlib import Path

from tgif.errors import TgifError

DEFAULT_MAX_PIXELS = 4096 * 4096
_REPO_ROOT = Path(__file__).resolve().parents[1]
#: The repository's weights folder: the committed checkpoints and the bundled offline detector.
REPO_WEIGHTS_DIR = _REPO_ROOT / "weights"


def shared_dir() -> Path | None:
    """Return the shared folder, or ``None`` when it cannot be found.

    ``TGIF_SHARED`` wins when set (even if the folder is missing, so that a typo is not
    silently replaced by another folder); otherwise ``../shared`` beside the repository root,
    then beside the current working directory.
    """
    env = os.environ.get("TGIF_SHARED")
    if env:
        path = Path(env).expanduser()
        return path if path.is_dir() else None
    for base in (_REPO_ROOT, Path.cwd()):
        candidate = (base.parent / "shared").resolve()
        if candidate.is_dir():
            return candidate
    return None


def positive_number(name: str, default: float, unit: str) -> float:
    """The positive number in environment variable ``name`` (``default`` when unset or empty).

    Raises:
        TgifError: the value is not a number, or not positive (the message names the variable and ``unit``).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise TgifError(f"{name} must be a number of {unit}, got {raw!r}") from None
    if not value > 0:
        raise TgifError(f"{name} must be positive, got {value:g}")
    return value


def cache_dir() -> Path:
    """Return the cache root: ``TGIF_CACHE_DIR``, else ``~/.cache/tgif`` (each cache is a folder below it)."""
    return Path(os.environ.get("TGIF_CACHE_DIR") or "~/.cache/tgif").expanduser()


def weights_dir() -> Path:
    """Return the weights folder: ``TGIF_WEIGHTS_DIR``, else the repository's ``weights/``."""
    return Path(os.environ.get("TGIF_WEIGHTS_DIR") or REPO_WEIGHTS_DIR).expanduser()


def data_dir() -> Path | None:
    """Return ``<shared>/data`` (the benchmark test pairs), or ``None`` when absent."""
    shared = shared_dir()
    if shared is None or not (shared / "data").is_dir():
        return None
    return shared / "data"


def max_pixels() -> int:
    """Return the pixel limit for loaded images (``TGIF_MAX_PIXELS``, default 4096*4096)."""
    raw = os.environ.get("TGIF_MAX_PIXELS")
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(raw)
    except ValueError as exc:
        raise TgifError(f"TGIF_MAX_PIXELS must be a whole number of pixels, got {raw!r}") from exc
    if value <= 0:
        raise TgifError(f"TGIF_MAX_PIXELS must be positive, got {value}")
    return value
