"""Regenerate the bundled synthetic example pairs (deterministic): ``python assets/examples/make_examples.py``.

The real IVF pairs (``tno/``, from the TNO Image Fusion Dataset) are not made here; they are copied as the dataset
ships them (``tno/LICENCE.md``). Of the synthetic pairs, ``ivf/`` and ``ivf_person/`` are test fixtures only; the
app shows the real pairs for IVF.

- ``ivf/``: a synthetic night street drawn here (CC0): the infrared image shows warm bodies
  (a pedestrian, a car's engine and wheels) brightly over a cool, low-texture background; the
  visible image shows a dim, textured scene with a lit shop window and headlights.
- ``ivf_person/``: scikit-image's ``astronaut`` photo (public domain, NASA: Eileen Collins) as a night
  shot (dim, noisy visible image) and a stand-in infrared image (a soft grey rendering in which skin
  glows warm); a COCO detector finds the person (tests of the steering chips use it).
- ``mif/``: the Shepp-Logan phantom (public domain, shipped with scikit-image) rendered as an
  MRI-like slice (soft-tissue contrast and texture) and a CT-like slice (bright skull, flat tissue).
- ``mef/``: scikit-image's ``coffee`` photo (CC0, Rachel Michetti) as an under- and an
  over-exposed shot (tone curves with clipping).
- ``mff/``: scikit-image's ``chelsea`` photo (CC0, Stefan van der Walt) with complementary
  defocus: ``near`` is sharp on the left, ``far`` on the right.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from skimage import data

HERE = Path(__file__).resolve().parent


def _save(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.clip(np.round(image * 255), 0, 255).astype(np.uint8)
    if out.ndim == 3:
        out = out[..., ::-1]  # OpenCV writes BGR
    cv2.imwrite(str(path), out)


def make_ivf(width: int = 320, height: int = 240) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    i, j = np.mgrid[0:height, 0:width].astype(np.float32)
    # visible: dim sky, brick wall texture, road, shop window, headlights
    vis = np.zeros((height, width, 3), np.float32)
    vis[:] = (0.10, 0.11, 0.16)
    wall = (i > 40) & (i < 150)
    bricks = ((i // 8 + (j // 16 + (i // 8) % 2)) % 2) * 0.04 + 0.16
    vis[wall] = np.stack([bricks * 1.3, bricks * 0.9, bricks * 0.7], -1)[wall]
    vis[(i >= 150)] = (0.18, 0.18, 0.19)
    vis[(i >= 150) & (np.abs(j - width / 2) < 3) & ((i // 10) % 2 == 0)] = (0.7, 0.7, 0.6)
    window = (i > 70) & (i < 130) & (j > 200) & (j < 290)
    vis[window] = (0.85, 0.75, 0.45)
    vis += rng.normal(0, 0.02, vis.shape).astype(np.float32)
    # ir: cool background with faint structure, warm person and car
    ir = 0.22 + 0.05 * (i / height) + rng.normal(0, 0.015, (height, width)).astype(np.float32)
    ir[window] = 0.35
    person = ((j - 95) / 10) ** 2 + ((i - 120) / 32) ** 2 < 1
    head = ((j - 95) ** 2 + (i - 80) ** 2) < 9**2
    ir[person | head] = 0.92
    vis[person | head] = (0.12, 0.12, 0.14)  # the pedestrian is hard to see in the dark
    car = (i > 160) & (i < 205) & (j > 150) & (j < 250)
    vis[car] = (0.25, 0.05, 0.06)
    ir[car] = 0.5
    ir[(i > 165) & (i < 185) & (j > 225) & (j < 250)] = 0.85  # engine
    for cx in (170, 230):
        wheel = ((j - cx) ** 2 + (i - 205) ** 2) < 12**2
        ir[wheel], vis[wheel] = 0.75, (0.03, 0.03, 0.03)
    for cx in (153, 160):
        lamp = ((j - cx) ** 2 + (i - 180) ** 2) < 5**2
        vis[lamp] = (1.0, 1.0, 0.9)
    ir = cv2.GaussianBlur(ir, (0, 0), 1.2)
    return np.clip(ir, 0, 1), np.clip(vis, 0, 1)


def make_ivf_person(width: int = 320, height: int = 240) -> tuple[np.ndarray, np.ndarray]:
    photo = data.astronaut()[40:424].astype(np.float32) / 255  # 512x384: 4:3
    rgb = cv2.resize(photo, (width, height), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(11)
    vis = np.clip(rgb**1.8 * 0.45 + rng.normal(0, 0.02, rgb.shape).astype(np.float32), 0, 1)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    skin = ((r > 0.35) & (r > 1.15 * g) & (g > b)).astype(np.float32)
    ir = 0.55 * cv2.GaussianBlur(grey, (0, 0), 1.5) ** 0.6 + 0.4 * cv2.GaussianBlur(skin, (0, 0), 2.0)
    return np.clip(ir, 0, 1), vis


def make_mif(size: int = 256) -> tuple[np.ndarray, np.ndarray]:
    phantom = cv2.resize(data.shepp_logan_phantom().astype(np.float32), (size, size), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(3)
    skull = phantom > 0.9
    mri = np.where(skull, 0.15, phantom * 2.2)
    mri = cv2.GaussianBlur(mri + rng.normal(0, 0.03, mri.shape).astype(np.float32), (0, 0), 0.8)
    ct = np.where(skull, 1.0, 0.25 * (phantom > 0.05))
    return np.clip(mri, 0, 1), np.clip(ct, 0, 1)


def make_mef() -> tuple[np.ndarray, np.ndarray]:
    img = cv2.resize(data.coffee(), (300, 200), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    linear = img**2.2
    under = (linear * 0.25) ** (1 / 2.2)
    over = np.minimum(linear * 4.0, 1.0) ** (1 / 2.2)
    return under, over


def make_mff() -> tuple[np.ndarray, np.ndarray]:
    img = cv2.resize(data.chelsea(), (300, 200), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
    blurred = cv2.GaussianBlur(img, (0, 0), 3.0)
    ramp = np.clip((np.arange(img.shape[1], dtype=np.float32) - 130) / 40, 0, 1)[None, :, None]
    near = img * (1 - ramp) + blurred * ramp
    far = blurred * (1 - ramp) + img * ramp
    return near, far


def main() -> None:
    ir, vis = make_ivf()
    _save(HERE / "ivf" / "ir.png", ir)
    _save(HERE / "ivf" / "vi.png", vis)
    ir, vis = make_ivf_person()
    _save(HERE / "ivf_person" / "ir.png", ir)
    _save(HERE / "ivf_person" / "vi.png", vis)
    mri, ct = make_mif()
    _save(HERE / "mif" / "mri.png", mri)
    _save(HERE / "mif" / "ct.png", ct)
    under, over = make_mef()
    _save(HERE / "mef" / "under.png", under)
    _save(HERE / "mef" / "over.png", over)
    near, far = make_mff()
    _save(HERE / "mff" / "near.png", near)
    _save(HERE / "mff" / "far.png", far)


if __name__ == "__main__":
    main()
