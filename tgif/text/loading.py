"""Where a text model comes from (local folder or Hub id), its stable name, and loading it with clear errors."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import huggingface_hub

from tgif.errors import TextEncoderError

T = TypeVar("T")

_TRUE_VALUES = {"1", "ON", "YES", "TRUE"}
_SAMPLE_BYTES = 1 << 20


@dataclass(frozen=True)
class ModelSource:
    """A model argument resolved for ``from_pretrained``.

    Attributes:
        location: the folder path or Hub id given to ``from_pretrained``.
        name: stable encoder name, ``"<kind>:<hub id>"`` or ``"<kind>:<folder name>@<fingerprint>"``.
        local: True for a local folder (always loaded without network).
    """

    location: str
    name: str
    local: bool


def hub_offline() -> bool:
    """Return True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) asks for no network.

    Read at call time, so setting the variable after ``huggingface_hub`` was imported still counts.
    """
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in _TRUE_VALUES or huggingface_hub.is_offline_mode()


def folder_fingerprint(folder: Path) -> str:
    """Return 8 hex digits identifying a model folder's files (names, sizes, first and last MiB).

    Cheap for multi-GB weights, stable across copies and machines, and different for
    retrained weights or another tokenizer.
    """
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        size = path.stat().st_size
        digest.update(f"{path.name}\0{size}\0".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(_SAMPLE_BYTES))
            if size > 2 * _SAMPLE_BYTES:
                handle.seek(size - _SAMPLE_BYTES)
                digest.update(handle.read(_SAMPLE_BYTES))
            elif size > _SAMPLE_BYTES:
                digest.update(handle.read())
    return digest.hexdigest()[:8]


def resolve_source(kind: str, model: str | os.PathLike[str]) -> ModelSource:
    """Resolve ``model`` (an existing folder or a Hub id) for the backend ``kind``.

    Raises:
        TextEncoderError: ``model`` looks like a path but is not an existing folder.
    """
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.is_dir():
        path = path.resolve()
        return ModelSource(str(path), f"{kind}:{path.name}@{folder_fingerprint(path)}", local=True)
    if path.exists() or text.startswith(("/", ".", "~")) or isinstance(model, os.PathLike):
        raise TextEncoderError(f"{kind} model folder {text} does not exist or is not a folder")
    return ModelSource(text, f"{kind}:{text}", local=False)


def load_pretrained(loader: Callable[..., T], source: ModelSource, what: str) -> T:
    """Call ``loader(source.location, local_files_only=...)`` and turn load failures into TextEncoderError.

    Args:
        loader: a ``from_pretrained`` class method.
        source: where to load from.
        what: what is loaded, for the message (``"BLIP-2 tokenizer"``).
    """
    from transformers.utils import logging as hf_logging

    quiet = source.local and hf_logging.is_progress_bar_enabled()
    if quiet:  # a local load takes a second: no per-weight progress bar (downloads keep theirs)
        hf_logging.disable_progress_bar()
    try:
        return loader(source.location, local_files_only=source.local or hub_offline())
    except (OSError, ValueError) as exc:
        if source.local:
            raise TextEncoderError(f"could not load the {what} from folder {source.location}: {exc}") from exc
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise TextEncoderError(
            f"could not load the {what} {source.location!r} from the Hugging Face Hub ({reason}). "
            f"Download it where there is internet (e.g. `hf download {source.location} --local-dir <folder>`) "
            "and pass the local folder path instead; set HF_HUB_OFFLINE=1 to skip network attempts."
        ) from exc
    finally:
        if quiet:
            hf_logging.enable_progress_bar()
