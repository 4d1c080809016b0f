"""A pair of registered source images, and how a fused luminance gets its colour back.

Fusion runs on one channel. :meth:`ImagePair.luminances` gives the two Y channels;
:meth:`ImagePair.colorize` puts colour back on a fused Y:

- grey + grey   -> grey output;
- grey + colour -> chroma of the colour source (IVF: visible; MIF: PET/SPECT);
- colour + colour (MEF, MFF) -> the two chroma planes merged by saturation weight
  (:func:`tgif.io.color.merge_chroma`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from tgif.errors import PairSizeError, UnknownNameError
from tgif.io.color import add_chroma, chroma, chroma_rgb, luminance, merge_chroma
from tgif.io.image import ImageInput, OnLarge, SourceImage, describe_size, load_image
from tgif.tasks import TASKS


@dataclass
class ImagePair:
    """Two source images of one scene with equal size.

    Attributes:
        a: the first source (IVF: infrared; MIF: MRI; MEF: under-exposed; MFF: near focus).
        b: the second source (IVF: visible; MIF: CT/PET/SPECT; MEF: over-exposed; MFF: far focus).
        id: an identifier (dataset id or file stem), used for output names.
        task: the fusion task (``"ivf"``, ``"mif"``, ``"mef"``, ``"mff"``) or None when unknown.
    """

    a: SourceImage
    b: SourceImage
    id: str = "pair"
    task: str | None = None

    def __post_init__(self) -> None:
        if self.task is not None and self.task not in TASKS:
            raise UnknownNameError(f"unknown task {self.task!r}; choose from {', '.join(TASKS)}")
        if self.a.size != self.b.size:
            raise PairSizeError(
                f"sizes differ: {self.a.name} is {describe_size(self.a.size)},"
                f" {self.b.name} is {describe_size(self.b.size)}"
            )

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) shared by both sources."""
        return self.a.size

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) shared by both sources."""
        return self.a.pixels.shape[:2]

    def luminances(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the two float32 luminance planes (H, W) in [0, 1]: the channels that get fused."""
        return luminance(self.a.pixels), luminance(self.b.pixels)

    def chroma(self) -> np.ndarray | None:
        """Return the (H, W, 2) Cb/Cr planes the fused image takes, or None when both sources are grey."""
        colours = [chroma(s.pixels) for s in (self.a, self.b) if s.is_color]
        if not colours:
            return None
        if len(colours) == 1:
            return colours[0]
        return merge_chroma(colours[0], colours[1])

    def colorize(self, fused_y: np.ndarray, colour: np.ndarray | None = None) -> np.ndarray:
        """Return the fused image: ``fused_y`` (H, W) in [0, 1] with this pair's chroma restored.

        ``colour``: this pair's :meth:`colour`, when the caller keeps it for many fused images (a session does).
        """
        if fused_y.shape != self.shape:
            raise ValueError(f"fused luminance is {fused_y.shape[::-1]}, the pair is {self.shape[::-1]}")
        y = np.clip(fused_y, 0.0, 1.0).astype(np.float32)
        colour = self.colour() if colour is None else colour
        return y if colour is None else add_chroma(y, colour)

    def colour(self) -> np.ndarray | None:
        """What this pair's chroma adds to a fused luminance (:func:`tgif.io.color.chroma_rgb`); None when grey."""
        cbcr = self.chroma()
        return None if cbcr is None else chroma_rgb(cbcr)


def _default_name(source: ImageInput, fallback: str) -> str:
    if isinstance(source, (str, os.PathLike)):
        return Path(source).name
    name = getattr(source, "name", None)
    return Path(name).name if isinstance(name, str) and name else fallback


def _resize_to(image: SourceImage, size: tuple[int, int]) -> SourceImage:
    w, h = size
    shrinking = w * h < image.size[0] * image.size[1]
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    pixels = np.clip(cv2.resize(image.pixels, (w, h), interpolation=interpolation), 0.0, 1.0)
    notes = [*image.notes,
             f"resized from {describe_size(image.size)} to {describe_size(size)} to match the first image"]
    return SourceImage(pixels.astype(np.float32), image.name, image.mode, image.original_size, notes)


def load_pair(
    source_a: ImageInput,
    source_b: ImageInput,
    *,
    resize: bool = False,
    max_pixels: int | None = None,
    on_large: OnLarge = "error",
    names: tuple[str, str] | None = None,
    pair_id: str | None = None,
    task: str | None = None,
) -> ImagePair:
    """Load two images as an :class:`ImagePair`.

    Args:
        source_a, source_b: anything :func:`tgif.io.load_image` accepts.
        resize: when the sizes differ, resize the second image to the first instead of failing.
        max_pixels, on_large: pixel limit and what to do above it (see :func:`load_image`).
        names: names used in messages (default: file names, else ``"image 1"``, ``"image 2"``).
        pair_id: identifier of the pair (default: the first file's stem, else ``"pair"``).
        task: the fusion task, if known (``ivf``, ``mif``, ``mef``, ``mff``).

    Raises:
        PairSizeError: the sizes differ and ``resize`` is False.
        ImageLoadError, ImageTooLargeError: see :func:`load_image`.
    """
    name_a, name_b = names or (_default_name(source_a, "image 1"), _default_name(source_b, "image 2"))
    a = load_image(source_a, name=name_a, max_pixels=max_pixels, on_large=on_large)
    b = load_image(source_b, name=name_b, max_pixels=max_pixels, on_large=on_large)
    if a.size != b.size:
        if not resize:
            raise PairSizeError(
                f"sizes differ: {a.name} is {describe_size(a.size)}, {b.name} is {describe_size(b.size)};"
                " register the images first, or pass resize=True (CLI --resize) to resize the second to the first"
            )
        b = _resize_to(b, a.size)
    if pair_id is None:
        pair_id = Path(source_a).stem if isinstance(source_a, (str, os.PathLike)) else "pair"
    return ImagePair(a, b, pair_id, task.lower() if task else None)
