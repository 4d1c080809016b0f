"""Known SAM-family checkpoints: where they come from, how to check them, where they are cached.

A checkpoint is given either as a path (used as is) or as a known name (``sam_vit_b``,
``mobile_sam``, ... or the official file name such as ``sam_vit_b_01ec64.pth``), which is
downloaded once into ``<cache root>/checkpoints`` and verified.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from tgif import settings
from tgif.errors import CheckpointError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20
_OFFLINE_HINT = "No internet? Download it elsewhere and pass the file's path instead."


@dataclass(frozen=True)
class CheckpointSpec:
    """Where an official checkpoint is published and what is known to verify it.

    Attributes:
        url: download address.
        md5_prefix: leading hex digits of the file's MD5, when known.
        sha256_prefix: leading hex digits of the file's SHA-256, when known.
        size: size in bytes, when known.
    """

    url: str
    md5_prefix: str | None = None
    sha256_prefix: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        """The official file name (last part of the URL)."""
        return self.url.rsplit("/", 1)[-1]


# Meta's SAM files carry the first 6 hex digits of their MD5 in the file name
# (sam_vit_b_01ec64.pth has an MD5 starting with 01ec64): that is the integrity check used.
# MobileSAM is the Ultralytics asset; its size and SHA-256 prefix are recorded in shared/weights.
CHECKPOINTS: dict[str, CheckpointSpec] = {
    "sam_vit_h": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth", md5_prefix="4b8939"
    ),
    "sam_vit_l": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth", md5_prefix="0b3195"
    ),
    "sam_vit_b": CheckpointSpec(
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth", md5_prefix="01ec64"
    ),
    "mobile_sam": CheckpointSpec(
        "https://github.com/ultralytics/assets/releases/download/v8.3.0/mobile_sam.pt",
        sha256_prefix="6dbb9052",
        size=40_728_226,
    ),
}


def default_checkpoint_dir() -> Path:
    """``<cache root>/checkpoints``."""
    return settings.cache_dir() / "checkpoints"


def find_spec(name: str) -> CheckpointSpec | None:
    """The known checkpoint called ``name`` (a key of :data:`CHECKPOINTS` or an official file name)."""
    key = name.strip().lower()
    if key in CHECKPOINTS:
        return CHECKPOINTS[key]
    return next((spec for spec in CHECKPOINTS.values() if spec.filename == key), None)


def _digests(path: Path) -> tuple[str, str]:
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return md5.hexdigest(), sha256.hexdigest()


def verify_file(path: str | os.PathLike, expected_md5_prefix: str | None = None,
                expected_sha256_prefix: str | None = None, expected_size: int | None = None) -> str | None:
    """Check a file against what is expected of it.

    Returns:
        None when it matches (or nothing is expected), else a sentence saying what differs.
    """
    path = Path(path)
    size = path.stat().st_size
    if expected_size is not None and size != expected_size:
        return f"size is {size} bytes, expected {expected_size}"
    if expected_md5_prefix is None and expected_sha256_prefix is None:
        return None
    md5, sha256 = _digests(path)
    if expected_md5_prefix is not None and not md5.startswith(expected_md5_prefix.lower()):
        return f"MD5 is {md5}, expected it to start with {expected_md5_prefix}"
    if expected_sha256_prefix is not None and not sha256.startswith(expected_sha256_prefix.lower()):
        return f"SHA-256 is {sha256}, expected it to start with {expected_sha256_prefix}"
    return None


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "tgif"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(part, "wb") as out:
        total = response.headers.get("Content-Length")
        with tqdm(total=int(total) if total else None, unit="B", unit_scale=True, unit_divisor=1024,
                  desc=part.name.removesuffix(".part"), disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))


def download_checkpoint(url: str, dest: str | os.PathLike, expected_md5_prefix: str | None = None,
                        expected_sha256_prefix: str | None = None, expected_size: int | None = None,
                        timeout: float = 30.0, progress: bool = True) -> Path:
    """Download ``url`` to ``dest`` and verify it; a verified ``dest`` that already exists is kept.

    The file is streamed to ``<dest>.part`` (with a tqdm progress bar unless ``progress`` is
    False) and renamed to ``dest`` only once it matches the expected size and checksum prefixes.

    Raises:
        CheckpointError: the download failed (the URL is named) or the file does not match;
            nothing is left at ``dest`` or ``<dest>.part`` then.
    """
    dest = Path(dest).expanduser()
    expected = {"expected_md5_prefix": expected_md5_prefix, "expected_sha256_prefix": expected_sha256_prefix,
                "expected_size": expected_size}
    if dest.is_file():
        problem = verify_file(dest, **expected)
        if problem is None:
            logger.debug("checkpoint %s already present", dest)
            return dest
        logger.warning("existing checkpoint %s is not the expected file (%s); downloading it again", dest, problem)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CheckpointError(f"cannot create the checkpoint folder {dest.parent}: {exc}") from None
    part = dest.with_name(dest.name + ".part")
    logger.info("downloading %s to %s", url, dest)
    try:
        _fetch(url, part, timeout, progress)
    except (OSError, http.client.HTTPException, ValueError) as exc:  # URLError is an OSError; ValueError: bad URL
        part.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"could not download {url}: {reason}. {_OFFLINE_HINT}") from None
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    problem = verify_file(part, **expected)
    if problem is not None:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"the file downloaded from {url} is corrupt or not the expected one: {problem}")
    part.replace(dest)
    return dest


def resolve_checkpoint(name_or_path: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                       progress: bool = True) -> Path:
    """Return a local checkpoint file for a path or a known checkpoint name.

    Args:
        name_or_path: an existing file (used as is), or a known name (see :data:`CHECKPOINTS`;
            official file names such as ``mobile_sam.pt`` work too), which is downloaded on first use.
        cache_dir: folder for downloaded checkpoints; default :func:`default_checkpoint_dir`.
        progress: show a progress bar while downloading.

    Raises:
        CheckpointError: the path does not exist and the name is not known, or the download failed.
    """
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    if path.exists():
        raise CheckpointError(f"checkpoint {path} is not a file")
    spec = find_spec(str(name_or_path))
    if spec is None:
        raise CheckpointError(
            f"checkpoint {str(name_or_path)!r} is neither an existing file nor a known model name "
            f"({', '.join(CHECKPOINTS)}). {_OFFLINE_HINT}"
        )
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_checkpoint_dir()
    return download_checkpoint(spec.url, folder / spec.filename, expected_md5_prefix=spec.md5_prefix,
                               expected_sha256_prefix=spec.sha256_prefix, expected_size=spec.size,
                               progress=progress)


def load_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint's state dict onto the CPU without running pickled code.

    A ``{"model": state_dict}`` wrapper is unwrapped.

    Raises:
        CheckpointError: the file is not a readable PyTorch state dict.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise CheckpointError(f"cannot read checkpoint {path}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {path} does not hold a state dict (found {type(state).__name__})")
    return state


def load_weights(model: torch.nn.Module, path: str | os.PathLike, what: str) -> torch.nn.Module:
    """Load the state dict at ``path`` into ``model`` (strictly) and return the model.

    Args:
        what: the architecture's name, for the error message (e.g. ``"SAM vit_b"``).

    Raises:
        CheckpointError: the file is unreadable or its weights do not fit the architecture.
    """
    state = load_state_dict(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()
        raise CheckpointError(
            f"checkpoint {path} does not fit {what} (is it for another model?): {' '.join(detail[:3])[:500]}"
        ) from None
    return model
