"""Saving and loading TGIF fusion checkpoints as safetensors files (no pickle anywhere).

A checkpoint is one ``.safetensors`` file: the :class:`~tgif.model.tgif_net.TGIFNet` state dict
(float32, or float16 to halve the size) and string metadata:

=================  ===============================================================
``format``         ``"tgif-fusion"``
``format_version`` ``"1"``
``config``         :meth:`TGIFConfig.to_dict` as JSON
``text_encoder``   name of the text encoder the model was trained with
                   (``TextEncoder.name``, e.g. ``"minilm:all-MiniLM-L6-v2"``)
``task``           fusion task (``"IVF"``, ``"MIF"``, ``"MEF"``, ``"MFF"``) or ``""``
``steps``          training steps done, as a decimal integer
``dtype``          ``"float32"`` or ``"float16"``: how the weights are stored
``extra``          any further JSON-serialisable information, as a JSON object
=================  ===============================================================
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from tgif.errors import CheckpointError, CheckpointMismatchError
from tgif.model.tgif_net import TGIFConfig, TGIFNet

FORMAT = "tgif-fusion"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class CheckpointMetadata:
    """What a TGIF checkpoint says about itself.

    Attributes:
        config: the network's hyper-parameters.
        text_encoder: name of the text encoder it was trained with.
        task: fusion task (``"IVF"``, ``"MIF"``, ``"MEF"``, ``"MFF"``) or ``""``.
        steps: training steps done.
        dtype: storage type of the weights, ``"float32"`` or ``"float16"``.
        extra: any further information stored at save time.
    """

    config: TGIFConfig
    text_encoder: str
    task: str = ""
    steps: int = 0
    dtype: str = "float32"
    extra: dict[str, Any] = field(default_factory=dict)


def save_tgif(
    path: str | os.PathLike[str],
    model: TGIFNet,
    text_encoder: str,
    task: str = "",
    steps: int = 0,
    extra: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``model`` and its metadata to a safetensors file, atomically (temporary file, then rename).

    Args:
        path: destination, conventionally ending in ``.safetensors``; parent folders are created.
        model: the network to save (its weights are copied to the CPU).
        text_encoder: name of the text encoder the model was trained with.
        task: fusion task, or ``""``.
        steps: training steps done.
        extra: further JSON-serialisable information (e.g. losses, dataset, learning rate).
        half: store the weights as float16 (loading turns them back into float32).

    Returns:
        The path written.

    Raises:
        TypeError: ``extra`` is not JSON-serialisable.
    """
    path = Path(path)
    dtype = torch.float16 if half else torch.float32
    tensors = {key: value.detach().to("cpu", dtype).contiguous() for key, value in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict()),
        "text_encoder": text_encoder,
        "task": task,
        "steps": str(int(steps)),
        "dtype": "float16" if half else "float32",
        "extra": json.dumps(dict(extra or {})),
    }
    _write_atomically(path, tensors, metadata)
    return path


def update_extra(path: str | os.PathLike[str], **entries: Any) -> CheckpointMetadata:
    """Set (or, given None, remove) entries of a checkpoint's ``extra`` metadata, in place and atomically.

    The weights are written back as they are stored (same dtype, same bytes); only the metadata changes.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a TGIF checkpoint.
        TypeError: an entry is not JSON-serialisable.
    """
    path = Path(path)
    with _open(path) as handle:
        raw = dict(handle.metadata() or {})
        metadata = _parse_metadata(raw, path)
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    extra = {**metadata.extra, **entries}
    raw["extra"] = json.dumps({key: value for key, value in extra.items() if value is not None})
    _write_atomically(path, tensors, raw)
    return _parse_metadata(raw, path)


def _write_atomically(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write a safetensors file through a temporary file in the same folder, then rename it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        save_file(tensors, temporary, metadata=metadata)
        os.chmod(temporary, 0o644)  # mkstemp files are private; a checkpoint is meant to be shared
        os.replace(temporary, path)
    finally:
        Path(temporary).unlink(missing_ok=True)


def read_metadata(path: str | os.PathLike[str]) -> CheckpointMetadata:
    """Read a checkpoint's metadata without loading its weights.

    Raises:
        CheckpointError: the file is missing, unreadable, or not a TGIF checkpoint.
    """
    path = Path(path)
    with _open(path) as handle:
        return _parse_metadata(handle.metadata() or {}, path)


def load_tgif(
    path: str | os.PathLike[str],
    expected_text_encoder: str | None = None,
    device: str | torch.device = "cpu",
) -> tuple[TGIFNet, CheckpointMetadata]:
    """Load a checkpoint written by :func:`save_tgif`.

    Args:
        path: the ``.safetensors`` file.
        expected_text_encoder: name of the text encoder that will feed the model; None skips
            the check, as does a checkpoint built with ``use_text=False``.
        device: where to put the model.

    Returns:
        ``(model, metadata)``: the float32 network in eval mode on ``device``, and its metadata.

    Raises:
        CheckpointError: the file is missing, unreadable, not a TGIF checkpoint, or its weights
            do not fit its config.
        CheckpointMismatchError: the checkpoint was trained with another text encoder than
            ``expected_text_encoder``.
    """
    path = Path(path)
    with _open(path) as handle:
        metadata = _parse_metadata(handle.metadata() or {}, path)
        if (
            expected_text_encoder is not None
            and metadata.config.use_text
            and metadata.text_encoder != expected_text_encoder
        ):
            raise CheckpointMismatchError(
                f"checkpoint {path} was trained with text encoder {metadata.text_encoder!r}, but "
                f"{expected_text_encoder!r} was asked for; use that encoder or a checkpoint trained with it"
            )
        try:
            names = handle.keys()
            state = {name: handle.get_tensor(name).float() for name in names}
        except SafetensorError as exc:
            raise CheckpointError(f"cannot read the weights of TGIF checkpoint {path}: {exc}") from exc
    model = TGIFNet(metadata.config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"the weights in TGIF checkpoint {path} do not fit its config: {exc}") from exc
    return model.to(device).eval(), metadata


def _open(path: Path) -> Any:
    """Open ``path`` with safetensors (CPU), turning every failure into CheckpointError."""
    if not path.is_file():
        raise CheckpointError(f"TGIF checkpoint {path} not found")
    try:
        return safe_open(str(path), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"TGIF checkpoint {path} is not a readable safetensors file: {exc}") from exc


def _parse_metadata(raw: Mapping[str, str], path: Path) -> CheckpointMetadata:
    """Turn the file's string metadata into :class:`CheckpointMetadata`, or raise CheckpointError."""
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a TGIF fusion checkpoint (no format={FORMAT!r})")
    version = raw.get("format_version", "")
    if version != str(FORMAT_VERSION):
        raise CheckpointError(
            f"TGIF checkpoint {path} has format version {version!r}; this TGIF reads version {FORMAT_VERSION}"
        )
    try:
        config = TGIFConfig.from_dict(json.loads(raw["config"]))
        extra = json.loads(raw.get("extra", "{}"))
        if not isinstance(extra, dict):
            raise TypeError(f"extra is a JSON {type(extra).__name__}, not an object")
        return CheckpointMetadata(
            config=config,
            text_encoder=raw["text_encoder"],
            task=raw.get("task", ""),
            steps=int(raw.get("steps", "0")),
            dtype=raw.get("dtype", "float32"),
            extra=extra,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"TGIF checkpoint {path} has bad metadata ({type(exc).__name__}: {exc})") from exc
