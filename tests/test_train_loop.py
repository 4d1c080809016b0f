"""The training loop (``tgif train``) and TGIF inference (``TGIFFuser``) on a tiny pack and model."""

from __future__ import annotations

import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from test_train_data import FakeEncoder, ivf_pack, tree  # noqa: F401 - pytest fixtures

from tgif.errors import CheckpointMismatchError, TgifError
from tgif.io import load_pair
from tgif.model import read_metadata
from tgif.pipeline import TGIFFuser
from tgif.train.loop import TrainSettings, train

TINY = {"dim": 16, "heads": 2, "text_heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "text_blocks": 1}


def _rows(path):
    with path.open() as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def run(ivf_pack, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("run")
    settings = TrainSettings(task="ivf", pack=str(ivf_pack), out_dir=str(out), steps=4, batch_size=2, crop=32,
                             checkpoint_every=2, val_every=2, model=TINY)
    return settings, train(settings, progress=False)


def test_training_writes_checkpoint_logs_and_plot(run) -> None:
    settings, checkpoint = run
    out = checkpoint.parent
    log, val = _rows(out / "log.csv"), _rows(out / "val.csv")
    assert [r["step"] for r in log] == ["1", "2", "3", "4"]
    assert all(float(r["total"]) > 0 and np.isfinite(float(r["grad"])) for r in log)
    assert [r["step"] for r in val] == ["2", "4"] and {"EN", "VIF", "Qabf"} <= set(val[0])
    assert (out / "curves.png").stat().st_size > 1000
    meta = read_metadata(checkpoint)
    assert meta.steps == 4 and meta.task == "ivf" and meta.text_encoder == FakeEncoder.name
    assert meta.extra["max_tokens"] == 8 and meta.config.dim == 16
    assert json.loads((out / "settings.json").read_text())["steps"] == 4


def test_resume_continues_from_the_last_step(run) -> None:
    settings, checkpoint = run
    log = checkpoint.parent / "log.csv"
    with log.open("a") as handle:  # rows an interrupted run wrote after its last checkpoint
        handle.write("5,1,1,1,0,0.0001,9\n")
    settings.steps = 6
    train(settings, resume=True, progress=False)
    assert [r["step"] for r in _rows(log)] == ["1", "2", "3", "4", "5", "6"]
    assert read_metadata(checkpoint).steps == 6


def test_no_text_ablation_trains_without_text(ivf_pack, tmp_path) -> None:  # noqa: F811
    settings = TrainSettings(task="ivf", pack=str(ivf_pack), out_dir=str(tmp_path), steps=2, crop=32,
                             checkpoint_every=2, val_every=2, use_text=False, model=TINY)
    assert read_metadata(train(settings, progress=False)).config.use_text is False


def test_fuser_uses_captions_and_tiles_large_images(run, rng) -> None:
    _, checkpoint = run
    fuser = TGIFFuser(checkpoint, device="cpu", text_encoder=FakeEncoder())
    ir = rng.random((70, 90)).astype(np.float32)
    vi = rng.random((70, 90, 3)).astype(np.float32)
    pair = load_pair(ir, vi, task="ivf")
    result = fuser.fuse(pair, captions=("a person on the left", "a dark street"))
    assert result.image.shape == (70, 90, 3) and 0.0 <= result.image.min() and result.image.max() <= 1.0
    assert result.captions == ("a person on the left", "a dark street") and result.caption_sources == ("user", "user")
    other = fuser.fuse(pair, captions=("a car at the top", "bright sky"))
    assert np.abs(other.luminance - result.luminance).max() > 0  # the text steers the output
    no_text = fuser.fuse(pair, use_text=False)
    assert no_text.captions == ("", "") and "text" not in no_text.seconds
    fuser.max_model_pixels = 40 * 40
    tiled = fuser.fuse(pair, captions=result.captions)
    assert tiled.notes and "tiles" in tiled.notes[0]
    assert tiled.luminance.shape == (70, 90) and np.abs(tiled.luminance - result.luminance).mean() < 0.05


def test_fuser_errors(run, tmp_path) -> None:
    _, checkpoint = run
    with pytest.raises(TgifError, match="not found"):
        TGIFFuser(tmp_path / "missing.safetensors")

    class OtherEncoder(FakeEncoder):
        name = "minilm:all-MiniLM-L6-v2"

    with pytest.raises(CheckpointMismatchError, match="fake:words"):
        TGIFFuser(checkpoint, text_encoder=OtherEncoder())


def test_export_logs_thins_the_training_log(tmp_path):
    from tgif.train.loop import export_logs

    run = tmp_path / "run"
    run.mkdir()
    rows = [f"{step},{1.0 / step:.6f},0,0,0,0.0001,{step * 0.1:.1f}" for step in range(1, 1001)]
    (run / "log.csv").write_text("step,total,int,grad,ssim,lr,seconds\n" + "\n".join(rows) + "\n")
    (run / "val.csv").write_text("step,EN\n500,6.1\n1000,6.2\n")
    train, val = export_logs(run, tmp_path / "logs", "tgif_ivf", max_rows=100)
    kept = train.read_text().splitlines()
    assert kept[0].startswith("step,total") and len(kept) == 1 + 100 + 1  # every 10th step, plus the last
    steps = [int(line.split(",")[0]) for line in kept[1:]]
    assert steps[:2] == [1, 11] and steps[-2:] == [991, 1000]
    assert val.read_text() == "step,EN\n500,6.1\n1000,6.2\n"


def test_select_keeps_each_validation_and_picks_by_the_held_out_rule(ivf_pack, tmp_path, capsys) -> None:  # noqa: F811
    from safetensors.torch import load_file

    from tgif.cli import main
    from tgif.train.data import PackDataset
    from tgif.train.pack import load_pack
    from tgif.train.sweep import choose, reference_scores, score_row

    settings = TrainSettings(task="ivf", pack=str(ivf_pack), out_dir=str(tmp_path / "run"), steps=6, crop=32,
                             checkpoint_every=6, val_every=2, model=TINY, select=True)
    chosen_path = train(settings, progress=False)
    out = tmp_path / "run"
    assert chosen_path == out / "selected.safetensors"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000002.safetensors", "step_000004.safetensors", "step_000006.safetensors"]
    # the rule recomputed here from val.csv and the pyramid on the held-out pairs
    reference = reference_scores(PackDataset(load_pack(ivf_pack), "val"))
    rows = [{"step": int(r["step"]), **score_row({m: float(r[m]) for m in reference}, reference)}
            for r in _rows(out / "val.csv")]
    best = choose(rows)
    selection = _rows(out / "selection.csv")
    assert [r["chosen"] for r in selection].count("1") == 1
    assert int(next(r for r in selection if r["chosen"] == "1")["step"]) == best["step"]
    assert read_metadata(chosen_path).steps == best["step"]
    kept = load_file(out / "checkpoints" / f"step_{best['step']:06d}.safetensors")
    assert all((kept[k] == v).all() for k, v in load_file(chosen_path).items())
    # tgif export takes the selected weights, and their selection table goes with the logs
    assert main(["export", "--task", "ivf", "--run", str(out), "--out", str(tmp_path / "w" / "t.safetensors")]) == 0
    assert read_metadata(tmp_path / "w" / "t.safetensors").steps == best["step"]
    assert (tmp_path / "w" / "logs" / "t_selection.csv").read_text() == (out / "selection.csv").read_text()
    assert (tmp_path / "w" / "curves_t.png").read_bytes() == (out / "curves.png").read_bytes()
    # the command line says which step it kept
    config = tmp_path / "select.json"
    config.write_text(json.dumps({"steps": 4, "crop": 32, "val_every": 2, "checkpoint_every": 4, "model": TINY,
                                  "select": True}))
    capsys.readouterr()
    assert main(["train", "--task", "ivf", "--config", str(config), "--pack", str(ivf_pack),
                 "--out", str(tmp_path / "cli"), "--no-progress"]) == 0
    chosen = next(r for r in _rows(tmp_path / "cli" / "selection.csv") if r["chosen"] == "1")
    assert f"selected on the held-out pairs: step {chosen['step']} of 4" in capsys.readouterr().out


_FREED_MEMORY_PROBE = """
import resource, torch
from tgif.train.loop import retain_freed_memory
assert retain_freed_memory()
def step():  # 40 MiB alive at once, then all freed, as a training step's activations
    kept = [torch.ones(256 * 1024) for _ in range(40)]
    del kept
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 5)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_retained_memory_is_reused_without_page_faults() -> None:
    out = subprocess.run([sys.executable, "-c", _FREED_MEMORY_PROBE], capture_output=True, text=True, check=True)
    # 40 MiB is 10,240 pages: without the setting glibc usually trims the freed heap and the next step faults
    # nearly all of them in again (~10,000 per step; fewer when another allocation happens to sit above them)
    assert float(out.stdout.split()[-1]) < 500


def test_bench_train_times_a_git_revisions_loop_beside_this_one(ivf_pack) -> None:  # noqa: F811
    from tgif.bench import bench_train

    rows = bench_train(ivf_pack, "ivf", procs=(1,), steps=8, warmup=2, rounds=2, crop=32, against="HEAD")
    assert list(rows) == ["rev HEAD", "1 process"]
    assert rows["rev HEAD"]["ratio"] == rows["rev HEAD"]["ratio_low"] == rows["rev HEAD"]["ratio_high"] == 1.0
    for row in rows.values():
        assert 0 < row["seconds_per_step"] < 10
        assert row["steps_per_second"] == pytest.approx(1 / row["seconds_per_step"])
        assert row["ratio_low"] <= row["ratio"] <= row["ratio_high"]  # two rounds: the ratio is their mean
    with pytest.raises(TgifError, match="--against no-such-revision: cannot read that revision"):
        bench_train(ivf_pack, "ivf", procs=(1,), steps=8, warmup=2, rounds=1, crop=32, against="no-such-revision")


def test_a_revision_without_the_loop_is_one_error(tmp_path, ivf_pack) -> None:  # noqa: F811
    from tgif.bench import _revision_run

    (tmp_path / "tgif").mkdir()
    (tmp_path / "tgif" / "__init__.py").write_text("")  # a package without tgif.train: nothing may fill it in
    with pytest.raises(TgifError, match="--against revision failed: ModuleNotFoundError: No module named 'tgif.train'"):
        _revision_run(tmp_path, "ivf", ivf_pack, str(tmp_path / "out"), 4, 2, 32)


def test_a_checkpoint_names_the_tiles_it_fuses_in(run, rng, tmp_path) -> None:
    import shutil

    from safetensors.torch import load_file

    from tgif.model import update_extra
    from tgif.pipeline import FusionTile

    _, checkpoint = run
    tiled_path = shutil.copy(checkpoint, tmp_path / "tiled.safetensors")
    before = read_metadata(tiled_path).extra
    assert update_extra(tiled_path, fusion_tile=[32, 8]).extra == {**before, "fusion_tile": [32, 8]}
    stored, original = load_file(tiled_path), load_file(checkpoint)
    assert stored.keys() == original.keys()
    assert all(stored[k].dtype == v.dtype and torch.equal(stored[k], v) for k, v in original.items())

    fuser = TGIFFuser(tiled_path, device="cpu", text_encoder=FakeEncoder())
    assert fuser.tile == FusionTile(32, 8)
    y_a, y_b = (rng.random((40, 70)).astype(np.float32) for _ in range(2))
    text, mask = fuser.encode("a person on the left", "a dark street")
    tiled, notes = fuser.fuse_luminance(y_a, y_b, text, mask)
    assert notes == ["70x40 fused in 32x32 tiles with 8-pixel overlaps, the tiles this checkpoint was tuned for"]

    def forward(window: tuple[slice, slice]) -> np.ndarray:
        with torch.inference_mode():
            a, b = (torch.from_numpy(np.ascontiguousarray(p[window]))[None, None] for p in (y_a, y_b))
            return fuser.model(a, b, text, mask)[0, 0].clamp(0, 1).numpy()

    # rows start at 0 and 8, columns at 0, 24 and 38: away from the overlaps a pixel is its tile's output
    first, second = forward((slice(0, 32), slice(0, 32))), forward((slice(0, 32), slice(24, 56)))
    assert np.allclose(tiled[:8, :24], first[:8, :24], atol=1e-6)
    # in an overlap it is a blend of the tiles that cover it
    low, high = np.minimum(first[:8, 24:32], second[:8, :8]), np.maximum(first[:8, 24:32], second[:8, :8])
    assert np.all(tiled[:8, 24:32] >= low - 1e-6) and np.all(tiled[:8, 24:32] <= high + 1e-6)
    whole = forward((slice(None), slice(None)))
    assert np.abs(tiled - whole).max() > 1e-3  # tiles are not the whole image's attention
    # --tile 0 fuses whole images again; an image inside one tile is fused whole either way
    assert np.allclose(TGIFFuser(tiled_path, device="cpu", text_encoder=FakeEncoder(), tile="0")
                       .fuse_luminance(y_a, y_b, text, mask)[0], whole, atol=1e-6)
    small = (slice(0, 30), slice(0, 32))
    assert np.allclose(fuser.fuse_luminance(y_a[small], y_b[small], text, mask)[0], forward(small), atol=1e-6)
    fuser.max_model_pixels = 20 * 20  # smaller than a fusion tile: memory tiles instead
    assert "to bound memory" in fuser.fuse_luminance(y_a, y_b, text, mask)[1][0]
    assert update_extra(tiled_path, fusion_tile=None).extra == before
    assert TGIFFuser(tiled_path, device="cpu", text_encoder=FakeEncoder()).tile is None


@pytest.mark.parametrize("spec, message", [("320", "SIZE/OVERLAP"), ("a/b", "SIZE/OVERLAP"), ("8/2", "at least 16"),
                                           ("64/40", "half the size")])
def test_a_malformed_tile_is_one_clear_error(run, spec, message, capsys) -> None:
    from tgif.cli import main
    from tgif.pipeline import FusionTile, checkpoint_tile

    with pytest.raises(TgifError, match=message):
        FusionTile.parse(spec)
    assert FusionTile.parse(" 0 ") is None and FusionTile.parse("Whole") is None
    assert str(FusionTile.parse("320/32")) == "320/32"
    with pytest.raises(TgifError, match="expected \\[size, overlap\\]"):
        checkpoint_tile({"fusion_tile": "320/32"})
    assert main(["eval", "--dataset", "nowhere", "--method", "tgif", "--tile", spec]) == 2
    assert message in capsys.readouterr().err


def test_sweep_tiles_scores_whole_and_tiled_fusion_by_the_held_out_rule(run, ivf_pack, tmp_path,  # noqa: F811
                                                                        capsys) -> None:
    import shutil

    from tgif.cli import main
    from tgif.model import load_tgif
    from tgif.pipeline import FusionTile
    from tgif.train.data import PackDataset
    from tgif.train.loop import validate
    from tgif.train.sweep import choose, run_tile_sweep

    _, checkpoint = run
    val = PackDataset(ivf_pack, "val")
    rows = run_tile_sweep(checkpoint, val, [None, FusionTile(32, 8)], tmp_path / "tiles.csv", progress=False)
    assert [r["tile"] for r in rows] == ["whole", "32/8"] and [r["size"] for r in rows] == [0, 32]
    whole = validate(load_tgif(checkpoint)[0], val, torch.device("cpu"), True)  # whole images, as training validates
    assert all(np.isclose(rows[0][m], v, rtol=1e-5) for m, v in whole.items())
    assert any(abs(rows[1][m] - rows[0][m]) > 1e-6 for m in whole)
    assert [r["tile"] for r in _rows(tmp_path / "tiles.csv")] == ["whole", "32/8"]
    # the command prints the table and applies the rule's choice to the checkpoint
    target = shutil.copy(checkpoint, tmp_path / "t.safetensors")
    assert main(["sweep-tiles", "--task", "ivf", "--weights", str(target), "--pack", str(ivf_pack), "--tiles",
                 "32/8", "--out", str(tmp_path / "cli.csv"), "--apply", "--no-progress"]) == 0
    best = choose(rows)
    out = capsys.readouterr().out
    assert f"chosen: {best['tile']}" in out and "laplacian" in out
    assert read_metadata(target).extra.get("fusion_tile") == ([32, 8] if best["size"] else None)
