"""The ``tgif`` command line, run as a user would (in-process via ``main`` and as a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.cli import main
from tgif.metrics import compute_metrics, read_gray_levels

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
IR, VI = EXAMPLES / "ivf" / "ir.png", EXAMPLES / "ivf" / "vi.png"


def test_fuse_writes_a_colour_png_and_metrics_match(tmp_path, capsys) -> None:
    out = tmp_path / "fused.png"
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--task", "ivf"]) == 0
    assert "wrote" in capsys.readouterr().out
    fused = Image.open(out)
    assert fused.mode == "RGB" and fused.size == Image.open(VI).size
    assert main(["metrics", str(out), str(IR), str(VI), "--json"]) == 0
    values = json.loads(capsys.readouterr().out)
    expected = compute_metrics(read_gray_levels(out), read_gray_levels(IR), read_gray_levels(VI))
    assert values == pytest.approx(expected)


def test_metrics_all_prints_nine_rows(capsys) -> None:
    assert main(["metrics", str(VI), str(IR), str(VI), "--metrics", "all"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines] == ["EN", "SD", "SF", "AG", "VIF", "Qabf", "SSIM", "MI", "SCD"]


@pytest.mark.parametrize(
    "argv_tail, message",
    [
        (["missing.png"], "missing.png: file not found"),
        (["empty.png"], "empty.png: file is empty"),
        (["small.png"], "sizes differ"),
    ],
)
def test_errors_are_one_line_without_traceback(tmp_path, capsys, argv_tail, message) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "small.png")
    argv = ["fuse", str(IR), str(tmp_path / argv_tail[0]), "-o", str(tmp_path / "out.png")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("tgif: error:") and message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "out.png").exists()


def test_resize_flag_allows_mismatched_sizes(tmp_path) -> None:
    Image.fromarray(np.full((60, 80), 128, np.uint8)).save(tmp_path / "small.png")
    out = tmp_path / "out.png"
    assert main(["fuse", str(IR), str(tmp_path / "small.png"), "-o", str(out), "--resize"]) == 0
    assert Image.open(out).size == Image.open(IR).size


def test_pixel_limit_and_downscale(tmp_path, capsys) -> None:
    out = tmp_path / "out.png"
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--max-pixels", "10000"]) == 2
    assert "above the limit" in capsys.readouterr().err
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--max-pixels", "10000", "--downscale"]) == 0
    w, h = Image.open(out).size
    assert w * h <= 10000


def test_debug_shows_the_traceback_and_exits_like_the_one_line_error(tmp_path, capsys) -> None:
    assert main(["--debug", "fuse", str(IR), str(tmp_path / "nope.png"), "-o", str(tmp_path / "o.png")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and "ImageLoadError" in err and err.strip().splitlines()[-1].startswith("tgif: error:")


def test_eval_on_a_dataset_folder_prints_a_markdown_table(tmp_path, capsys) -> None:
    root = tmp_path / "pairs"
    for k, (a, b) in enumerate([(IR, VI), (IR, VI)]):
        for mod, src in (("ir", a), ("vi", b)):
            (root / mod).mkdir(parents=True, exist_ok=True)
            (root / mod / f"{k}.png").write_bytes(src.read_bytes())
    code = main(["eval", "--dataset", str(root), "--method", "average,laplacian", "--out", str(tmp_path / "res"),
                 "--no-progress", "--per-image"])
    assert code == 0
    out = capsys.readouterr().out
    assert "# pairs / average\nid,EN,SD,SF,AG,VIF,Qabf,fuse_s\n0," in out
    assert "| pairs (2 pairs) | EN | SD | SF | AG | VIF | Qabf |" in out
    assert "| average |" in out and "| laplacian |" in out
    assert (tmp_path / "res" / "pairs" / "laplacian.csv").exists()
    assert (tmp_path / "res" / "pairs" / "laplacian" / "0.png").exists()


def test_eval_unknown_method_fails_before_work(capsys) -> None:
    assert main(["eval", "--dataset", str(EXAMPLES), "--method", "wavelet"]) == 2
    assert "unknown method 'wavelet'" in capsys.readouterr().err


def test_bench_metrics_prints_timings(capsys) -> None:
    assert main(["bench", "metrics", "--size", "96x64", "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    for name in ("EN", "SD", "SF", "AG", "VIF", "Qabf", "paper six"):
        assert name in out


def test_console_entry_point_runs_as_a_subprocess(tmp_path) -> None:
    out = tmp_path / "f.png"
    proc = subprocess.run(
        [sys.executable, "-m", "tgif", "fuse", str(IR), str(VI), "-o", str(out), "--method", "max"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.exists()
    bad = subprocess.run([sys.executable, "-m", "tgif", "metrics", "a.png", "b.png", "c.png"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.strip() == "tgif: error: a.png: file not found"
