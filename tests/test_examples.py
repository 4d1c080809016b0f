"""The bundled examples: the real TNO pairs ship with their source, licence evidence and credit, are what the
README's first command and the app's first example use, and match the checksums their licence file gives."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TNO = ROOT / "assets" / "examples" / "tno"
LICENCE = TNO / "LICENCE.md"
DOI = "10.6084/m9.figshare.1008029"
CREDIT = "TNO Image Fusion Dataset (A. Toet, TNO Soesterberg, The Netherlands)"


def test_every_real_pair_is_listed_with_its_checksums_in_the_licence_file():
    text = LICENCE.read_text(encoding="utf-8")
    words = " ".join(text.split())  # the Markdown's line breaks aside
    assert DOI in words and CREDIT in words and "10.1016/j.dib.2017.09.038" in words  # dataset and paper
    assert "freely be used for research purposes" in words  # the dataset's own licence words
    pairs = sorted(path for path in TNO.iterdir() if path.is_dir())
    assert [p.name for p in pairs] == ["bosnia", "kaptein_1654", "marne_24"]
    for folder in pairs:
        row = next(line for line in text.splitlines() if line.startswith(f"| `{folder.name}/` |"))
        digests = re.findall(r"`([0-9a-f]{64})`", row)
        ir, vi = Image.open(folder / "ir.png"), Image.open(folder / "vi.png")
        assert ir.size == vi.size and ir.mode == vi.mode == "L" and f"{ir.size[0]}x{ir.size[1]}" in row
        assert digests == [hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in ("ir.png", "vi.png")]
        assert (folder / "ir.png").stat().st_size + (folder / "vi.png").stat().st_size < 400_000  # small files


def test_the_credit_is_referenced_where_the_real_pairs_are_shown():
    from app.layout import EXAMPLES

    assets_readme = " ".join((ROOT / "assets" / "README.md").read_text(encoding="utf-8").split())
    assert "examples/tno/LICENCE.md" in assets_readme and CREDIT in assets_readme and DOI in assets_readme
    assert EXAMPLES[0] == ("ivf", "tno/kaptein_1654/ir.png", "tno/kaptein_1654/vi.png")
    assert all(t != "ivf" or a.startswith("tno/") for t, a, _ in EXAMPLES)  # no synthetic IVF example in the app
    layout = (ROOT / "app" / "layout.py").read_text(encoding="utf-8")
    assert DOI in layout  # the examples' label credits the dataset
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    setup = readme[readme.index("## Set up and run"):readme.index("## Command line")]
    first_command = next(line for line in setup.splitlines() if line.startswith("pip install"))
    assert "tgif fuse assets/examples/tno/kaptein_1654/ir.png assets/examples/tno/kaptein_1654/vi.png" in first_command
    assert "assets/examples/tno/LICENCE.md" in setup and DOI in setup
    figure = re.search(r"!\[[^]]*\]\((docs/figures/[^)]+\.png)\)", setup)
    assert figure is not None and (ROOT / figure.group(1)).is_file()
    with Image.open(ROOT / figure.group(1)) as image:
        assert image.width <= 1000 and (ROOT / figure.group(1)).stat().st_size < 200_000
