"""The training loop where the maths must not move: step-keyed sampling, resume, data parallel, AMP, sweeps."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train_data import ivf_pack, mff_pack, tree  # noqa: F401 - pytest fixtures

from tgif.train.data import PackDataset, StepBatchSampler, collate_fusion
from tgif.train.loop import TrainSettings, train
from tgif.train.sweep import choose, reference_scores, run_sweep, score_row

ROOT = Path(__file__).resolve().parents[1]
TINY = {"dim": 16, "heads": 2, "text_heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "text_blocks": 1}


def _settings(pack: Path, out: Path, **overrides) -> TrainSettings:
    values = {"task": "ivf", "pack": str(pack), "out_dir": str(out), "steps": 4, "batch_size": 2, "crop": 32,
              "checkpoint_every": 2, "val_every": 4, "model": TINY, **overrides}
    return TrainSettings(**values)


def _state(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "last_state.pt", weights_only=True)["model"]


def _losses(out: Path) -> list[float]:
    rows = (out / "log.csv").read_text().splitlines()[1:]
    return [float(row.split(",")[1]) for row in rows]


# --- step-keyed sampling -------------------------------------------------------------------------------------------


def test_step_batches_are_a_function_of_seed_and_step(ivf_pack: Path) -> None:  # noqa: F811
    dataset = PackDataset(ivf_pack, crop=16, flips=False)
    whole = list(StepBatchSampler(dataset.weights, 4, range(0, 6), seed=3))
    assert list(StepBatchSampler(dataset.weights, 4, range(2, 6), seed=3)) == whole[2:]  # a resumed stream
    assert whole != list(StepBatchSampler(dataset.weights, 4, range(0, 6), seed=4))
    ranks = [list(StepBatchSampler(dataset.weights, 4, range(0, 6), seed=3, rank=r, world=2)) for r in (0, 1)]
    for step, batch in enumerate(whole):  # two processes share each batch: every other item
        assert ranks[0][step] == batch[0::2] and ranks[1][step] == batch[1::2]
    index, key = whole[0][0]
    assert torch.equal(dataset[(index, key)]["y_a"], dataset[(index, key)]["y_a"])  # the key fixes the crop
    with pytest.raises(ValueError, match="multiple of the 2 processes"):
        StepBatchSampler(dataset.weights, 3, range(4), world=2)


def test_step_sampler_follows_weights(ivf_pack: Path) -> None:  # noqa: F811
    dataset = PackDataset(ivf_pack)
    draws = [index for batch in StepBatchSampler(dataset.weights, 10, range(2000), seed=5) for index, _ in batch]
    small = np.isin(draws, [i for i, key in enumerate(dataset.ids) if key.startswith("msrs_train_128/")]).mean()
    expected = float(dataset.weights[-4:].sum() / dataset.weights.sum())  # 9 / 14 here
    assert small == pytest.approx(expected, abs=0.015)


def test_dataloader_workers_change_nothing(ivf_pack: Path) -> None:  # noqa: F811
    from torch.utils.data import DataLoader

    dataset = PackDataset(ivf_pack, crop=16, flips=True)
    sampler = StepBatchSampler(dataset.weights, 2, range(4), seed=1)
    main, workers = (list(DataLoader(dataset, batch_sampler=sampler, collate_fn=collate_fusion, num_workers=n))
                     for n in (0, 2))
    assert all(torch.equal(a["y_a"], b["y_a"]) and a["id"] == b["id"] for a, b in zip(main, workers))


# --- resume, data parallel, AMP --------------------------------------------------------------------------------------


def test_interrupted_and_resumed_run_is_bit_equal(ivf_pack: Path, tmp_path: Path) -> None:  # noqa: F811
    straight = _settings(ivf_pack, tmp_path / "straight")
    train(straight, progress=False)
    split = _settings(ivf_pack, tmp_path / "split", steps=2)
    train(split, progress=False)  # "interrupted" after its checkpoint at step 2
    split.steps = 4
    train(split, resume=True, progress=False)
    one, two = _state(tmp_path / "straight"), _state(tmp_path / "split")
    assert all(torch.equal(one[k], two[k]) for k in one)
    assert _losses(tmp_path / "straight") == _losses(tmp_path / "split")
    saved = torch.load(tmp_path / "split" / "last_state.pt", weights_only=True)
    assert saved["step"] == 4 and saved["scheduler"]["last_epoch"] == 4 and saved["optimizer"]["state"]


def test_two_cpu_processes_train_like_one(ivf_pack: Path, tmp_path: Path) -> None:  # noqa: F811
    train(_settings(ivf_pack, tmp_path / "one"), progress=False)
    train(_settings(ivf_pack, tmp_path / "two", procs=2), progress=False)
    one, two = _state(tmp_path / "one"), _state(tmp_path / "two")
    # the same batches, the gradients averaged: equal up to float rounding (Adam amplifies it a little)
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-3
    np.testing.assert_allclose(_losses(tmp_path / "one"), _losses(tmp_path / "two"), rtol=1e-4)
    assert (tmp_path / "two" / "last.safetensors").exists() and (tmp_path / "two" / "val.csv").exists()
    with pytest.raises(ValueError, match="multiple of procs 2"):
        _settings(ivf_pack, tmp_path, batch_size=3, procs=2)


def test_torchrun_gloo_replicas_stay_equal(ivf_pack: Path, tmp_path: Path) -> None:  # noqa: F811
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--standalone",
               str(ROOT / "tests" / "helpers" / "ddp_train.py"), str(ivf_pack), str(tmp_path / "ddp")]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)
    report_path = tmp_path / "ddp" / "ranks.json"  # written by rank 0 once training and its replica check passed
    # the loop raises (exit 1, no report) when the replicas' weights differ; a worker killed by a signal after the
    # report, while Gloo tears down (SIGABRT in rank 1, seen once in CI), is not what this test is about
    assert proc.returncode == 0 or (report_path.exists() and "Signal" in proc.stderr), proc.stderr[-2000:]
    report = json.loads(report_path.read_text())
    assert report == {"world": 2, "probe_divergence": 0.5}  # and the check does see a difference
    train(_settings(ivf_pack, tmp_path / "one", steps=3, checkpoint_every=3, val_every=3), progress=False)
    np.testing.assert_allclose(_losses(tmp_path / "ddp"), _losses(tmp_path / "one"), rtol=1e-4)


def test_bfloat16_autocast_on_cpu(ivf_pack: Path, tmp_path: Path) -> None:  # noqa: F811
    seen: dict[str, set[torch.dtype]] = {"amp": set(), "fp32": set()}
    original = torch.nn.Conv2d.forward
    for name, amp in (("amp", True), ("fp32", None)):  # None: autocast on CUDA only

        def forward(self, x, _seen=seen[name]):
            out = original(self, x)
            _seen.add(out.dtype)
            return out

        torch.nn.Conv2d.forward = forward
        try:
            train(_settings(ivf_pack, tmp_path / name, steps=2, amp=amp, val_every=10), progress=False)
        finally:
            torch.nn.Conv2d.forward = original
    assert torch.bfloat16 in seen["amp"] and seen["fp32"] == {torch.float32}
    amp, fp32 = _losses(tmp_path / "amp"), _losses(tmp_path / "fp32")
    assert all(np.isfinite(amp)) and amp != fp32 and np.allclose(amp, fp32, rtol=0.05)


# --- loss-weight sweep ---------------------------------------------------------------------------------------------


def test_score_row_and_choice_rule() -> None:
    reference = {"EN": 7.0, "SD": 50.0, "SF": 20.0, "AG": 5.0, "VIF": 1.5, "Qabf": 0.75}
    sharper = {**reference, "EN": 7.1, "SD": 60.0, "SF": 22.0, "AG": 5.5, "VIF": 1.4, "Qabf": 0.70}
    faithful = {**reference, "EN": 7.05, "SD": 51.0, "VIF": 1.49, "Qabf": 0.74}
    row = score_row(sharper, reference)
    assert row["wins"] == 4 and row["fidelity_kept"] == 0
    gains = [0.1 / 7, 10 / 50, 2 / 20, 0.5 / 5, -0.1 / 1.5, -0.05 / 0.75]
    assert row["margin"] == pytest.approx(np.mean(gains))
    kept = score_row(faithful, reference)
    assert kept["wins"] == 2 and kept["fidelity_kept"] == 1  # VIF -0.7%, Qabf -1.3%: within 2%
    rows = [{"setting": "sharp", **row}, {"setting": "faithful", **kept}]
    assert choose(rows)["setting"] == "faithful"


def test_sweep_trains_scores_and_resumes(mff_pack: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: F811
    base = TrainSettings(task="mff", pack=str(mff_pack), out_dir="unused", steps=2, crop=32, model=TINY)
    rows = run_sweep(base, [300.0, 30.0], [1.0], tmp_path, progress=False)
    assert [r["setting"] for r in rows] == ["g300_s1", "g30_s1"]
    assert json.loads((tmp_path / "g30_s1" / "settings.json").read_text())["grad_weight"] == 30.0
    reference = reference_scores(PackDataset(mff_pack, "val"))
    assert rows[0]["ref_Qabf"] == pytest.approx(reference["Qabf"], abs=1e-4)
    assert rows[0]["wins"] == score_row({m: rows[0][m] for m in reference}, reference)["wins"]

    def no_training(*args, **kwargs):
        raise AssertionError("a finished setting was trained again")

    monkeypatch.setattr("tgif.train.sweep.train", no_training)
    again = run_sweep(base, [300.0, 30.0], [1.0], tmp_path, progress=False)
    assert [r["setting"] for r in again] == ["g300_s1", "g30_s1"] and again[1]["VIF"] == rows[1]["VIF"]


def test_run_can_start_from_another_checkpoint(ivf_pack: Path, tmp_path: Path) -> None:  # noqa: F811
    from tgif.errors import CheckpointError
    from tgif.model import load_tgif

    first = train(_settings(ivf_pack, tmp_path / "first", steps=2), progress=False)
    start, _ = load_tgif(first)
    train(_settings(ivf_pack, tmp_path / "second", steps=1, lr=0.0, init_from=str(first)), progress=False)
    after = _state(tmp_path / "second")
    assert all(torch.equal(after[k], v) for k, v in start.state_dict().items())  # lr 0: still the checkpoint
    with pytest.raises(CheckpointError, match="not the one this run builds"):
        train(_settings(ivf_pack, tmp_path / "third", init_from=str(first), model={**TINY, "dim": 8}), progress=False)
