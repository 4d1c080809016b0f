"""Turn images into what a captioner reads: uint8 RGB arrays, downscaled copies, PNG data URLs."""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image

from tgif.io.image import as_rgb_uint8, fit_within

#: Longest side of an image sent to the caption model (larger ones are downscaled first).
MAX_SIDE = 768


def png_data_url(image: np.ndarray, max_side: int = MAX_SIDE) -> str:
    """Encode an image as a ``data:image/png;base64,...`` URL, downscaled to ``max_side`` on its longer side."""
    rgb = fit_within(as_rgb_uint8(image), max_side)
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
