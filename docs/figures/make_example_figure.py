"""Draw ``docs/figures/example_kaptein_1654.png``: the README's first example (a real TNO pair) and what
``tgif fuse`` makes of it, as three half-size panels (infrared, visible, TGIF fused) with their labels.

Run from the repository root: ``python docs/figures/make_example_figure.py`` (the committed IVF weights, the
offline template drafter, CPU; the same command as the README's first one).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[2]
PAIR = ROOT / "assets" / "examples" / "tno" / "kaptein_1654"
OUT = ROOT / "docs" / "figures" / "example_kaptein_1654.png"
#: Height of the label strip above the panels, in pixels.
LABEL_HEIGHT = 22


def make_figure(out: Path = OUT) -> Path:
    """Fuse the pair with ``tgif fuse`` and write the three-panel figure to ``out``."""
    with tempfile.TemporaryDirectory() as tmp:
        fused_path = Path(tmp) / "fused.png"
        subprocess.run([sys.executable, "-m", "tgif", "fuse", str(PAIR / "ir.png"), str(PAIR / "vi.png"), "-o",
                        str(fused_path), "--captioner", "template"], check=True, cwd=ROOT)
        panels = [("infrared (TNO)", Image.open(PAIR / "ir.png")), ("visible (TNO)", Image.open(PAIR / "vi.png")),
                  ("TGIF fused", Image.open(fused_path))]
        width, height = (side // 2 for side in panels[0][1].size)
        canvas = Image.new("L", (3 * width, height + LABEL_HEIGHT), 255)
        draw = ImageDraw.Draw(canvas)
        for index, (label, image) in enumerate(panels):
            canvas.paste(image.convert("L").resize((width, height), Image.Resampling.LANCZOS),
                         (index * width, LABEL_HEIGHT))
            draw.text((index * width + 6, 5), label, fill=0)
        canvas.save(out, optimize=True)
    return out


if __name__ == "__main__":
    print(f"wrote {make_figure()}")
