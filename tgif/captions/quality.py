"""Image statistics a caption can state: brightness, contrast, sharpness, clipped areas, the sharper part.

All statistics are computed on a copy whose longer side is at most :data:`WORKING_SIDE` pixels,
so that thresholds mean the same for small and large images: brightness, contrast and sharpness
on its luminance (0-255), clipping on its RGB channels.
Thresholds were chosen from the benchmark images in ``shared/data`` (e.g. the variance of the
Laplacian is ~30 for MSRS infrared, 100-500 for Lytro/MEF photos, >500 for MRI/CT slices).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from tgif.captions.wording import part_phrase
from tgif.io.image import as_rgb_uint8, fit_within

WORKING_SIDE = 512
#: A pixel is near-black when all its channels are <= NEAR_BLACK, near-white when all are >= NEAR_WHITE (0-255).
NEAR_BLACK, NEAR_WHITE = 12, 243
#: Share of clipped pixels below which clipping is not worth mentioning.
CLIP_MENTION = 0.02
#: Share of the clipped pixels one half must hold for the clipping to be "mostly" there.
CLIP_CONCENTRATION = 0.75
#: Ratio of Laplacian energies between two parts above which one part is called sharper.
FOCUS_RATIO = 2.0
#: For medical images: share of near-black pixels above which the black background is left out of the statistics.
BACKGROUND_SHARE = 0.3

_BRIGHTNESS = ((0.15, "dark"), (0.35, "dim"), (0.65, "moderately lit"), (np.inf, "bright"))
_CONTRAST = ((0.08, "low-contrast"), (0.18, "moderate-contrast"), (np.inf, "high-contrast"))
_SHARPNESS = ((25.0, "blurry"), (100.0, "soft"), (np.inf, "sharp"))


@dataclass(frozen=True)
class Clipping:
    """Near-black or near-white pixels.

    Attributes:
        share: fraction of the frame that is clipped.
        where: part of the frame holding most of them ("at the bottom", "on the left"), or None when spread out.
    """

    share: float
    where: str | None


@dataclass(frozen=True)
class Focus:
    """Which part of the frame is sharper, by mean squared Laplacian.

    Attributes:
        sharper: the sharper part ("left half", "top half", "centre", "border").
        blurrier: the part it is compared with.
        ratio: energy of the sharper part over that of the blurrier one (>= 1).
    """

    sharper: str
    blurrier: str
    ratio: float


@dataclass(frozen=True)
class ImageQuality:
    """Statistics of one image.

    Attributes:
        brightness: mean luminance in [0, 1] (of the foreground when ``foreground_only``).
        contrast: standard deviation of the luminance in [0, 1] (same pixels).
        sharpness: variance of the Laplacian of the 0-255 luminance (whole frame).
        under: near-black pixels.
        over: near-white pixels.
        focus: the clearly sharper part, or None when focus is even.
        foreground_share: fraction of the frame that is not near-black.
        foreground_only: whether brightness/contrast leave out a black background.
    """

    brightness: float
    contrast: float
    sharpness: float
    under: Clipping
    over: Clipping
    focus: Focus | None
    foreground_share: float
    foreground_only: bool

    @property
    def brightness_word(self) -> str:
        """ "dark", "dim", "moderately lit" or "bright"."""
        return _grade(self.brightness, _BRIGHTNESS)

    @property
    def contrast_word(self) -> str:
        """ "low-contrast", "moderate-contrast" or "high-contrast"."""
        return _grade(self.contrast, _CONTRAST)

    @property
    def sharpness_word(self) -> str:
        """ "blurry", "soft" or "sharp"."""
        return _grade(self.sharpness, _SHARPNESS)


def measure(image: np.ndarray, ignore_black_background: bool = False) -> ImageQuality:
    """Compute the statistics of an image (uint8 or float RGB/grey).

    With ``ignore_black_background`` (medical slices), brightness and contrast are taken over the
    pixels that are not near-black whenever near-black pixels fill more than :data:`BACKGROUND_SHARE`.
    """
    rgb = fit_within(as_rgb_uint8(image), WORKING_SIDE)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    black = rgb.max(axis=-1) <= NEAR_BLACK
    white = rgb.min(axis=-1) >= NEAR_WHITE
    foreground_only = ignore_black_background and black.mean() > BACKGROUND_SHARE and (~black).any()
    pixels = grey[~black] if foreground_only else grey
    laplacian = cv2.Laplacian(grey, cv2.CV_32F, ksize=1)
    return ImageQuality(
        brightness=float(pixels.mean() / 255.0),
        contrast=float(pixels.std() / 255.0),
        sharpness=float(laplacian.var()),
        under=_clipping(black),
        over=_clipping(white),
        focus=_focus(laplacian**2),
        foreground_share=float(1.0 - black.mean()),
        foreground_only=bool(foreground_only),
    )


def _grade(value: float, scale: tuple[tuple[float, str], ...]) -> str:
    return next(word for limit, word in scale if value < limit)


def _half_slices(height: int, width: int) -> dict[str, tuple[slice, slice]]:
    """The left/right/top/bottom halves of a frame (an odd middle column or row belongs to neither)."""
    return {
        "left": (slice(None), slice(0, width // 2)),
        "right": (slice(None), slice((width + 1) // 2, None)),
        "top": (slice(0, height // 2), slice(None)),
        "bottom": (slice((height + 1) // 2, None), slice(None)),
    }


def _clipping(mask: np.ndarray) -> Clipping:
    """Share of clipped pixels, and the half (or quarter) holding most of them."""
    total = int(mask.sum())
    if total == 0:
        return Clipping(0.0, None)
    held = {name: int(mask[part].sum()) / total for name, part in _half_slices(*mask.shape).items()}
    column = next((side for side in ("left", "right") if held[side] >= CLIP_CONCENTRATION), "centre")
    row = next((side for side in ("top", "bottom") if held[side] >= CLIP_CONCENTRATION), "middle")
    where = None if (row, column) == ("middle", "centre") else part_phrase(row, column)
    return Clipping(float(mask.mean()), where)


def _focus(energy: np.ndarray) -> Focus | None:
    """Compare the mean Laplacian energy of the left/right halves, top/bottom halves and centre/border.

    Returns the pair with the largest ratio, or None when no ratio reaches :data:`FOCUS_RATIO`
    (or the image is too small to split).
    """
    height, width = energy.shape
    if min(height, width) < 4:
        return None
    means = {name: float(energy[part].mean()) for name, part in _half_slices(height, width).items()}
    centre = np.zeros(energy.shape, bool)
    centre[height // 4 : height - height // 4, width // 4 : width - width // 4] = True
    means["centre"], means["border"] = float(energy[centre].mean()), float(energy[~centre].mean())
    candidates = []
    for first, second in (("left", "right"), ("top", "bottom"), ("centre", "border")):
        a, b = means[first] + 1e-6, means[second] + 1e-6
        sharper, blurrier = (first, second) if a >= b else (second, first)
        candidates.append(Focus(_part_name(sharper), _part_name(blurrier), max(a, b) / min(a, b)))
    best = max(candidates, key=lambda focus: focus.ratio)
    return best if best.ratio >= FOCUS_RATIO else None


def _part_name(side: str) -> str:
    return side if side in ("centre", "border") else f"{side} half"
