"""Data-parallel evaluation and captioning under torchrun (2 CPU processes, Gloo) match one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tgif import parallel

ROOT = Path(__file__).resolve().parents[1]


def _dataset(root: Path, pairs: int = 5) -> Path:
    rng = np.random.default_rng(3)
    for modality in ("ir", "vi"):
        (root / "tiny" / modality).mkdir(parents=True, exist_ok=True)
    for k in range(pairs):
        for modality in ("ir", "vi"):
            Image.fromarray((rng.random((40, 48)) * 255).astype(np.uint8)).save(root / "tiny" / modality / f"p{k}.png")
    return root / "tiny"


def _run(args: list[str], tmp: Path, nproc: int | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TGIF_CACHE_DIR": str(tmp / "cache"),
           "TGIF_YOLO_WEIGHTS": "yolo11n.yaml", "PYTHONPATH": str(ROOT)}
    env.pop("OPENAI_API_KEY", None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
                "--standalone", "-m", "tgif"] if nproc else [sys.executable, "-m", "tgif"]
    proc = subprocess.run(launcher + args, capture_output=True, text=True, env=env, cwd=tmp, timeout=240)
    # a rank's own error comes first in the stream, torchrun's summary of it last
    assert proc.returncode == 0, proc.stderr if len(proc.stderr) < 6000 else proc.stderr[:4000] + proc.stderr[-2000:]
    return proc


def test_single_process_helpers_are_identities(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert parallel.world() == (0, 1) and parallel.is_main()
    assert parallel.shard([1, 2, 3]) == [1, 2, 3] and parallel.gather([4, 5]) == [4, 5]
    parallel.barrier()


def test_torchrun_eval_and_captioning_match_one_process(tmp_path):
    data = _dataset(tmp_path)
    _run(["eval", "--dataset", str(data), "--method", "laplacian", "--out", "one", "--no-progress"], tmp_path, None)
    proc = _run(["eval", "--dataset", str(data), "--method", "laplacian", "--out", "two", "--no-progress"],
                tmp_path, 2)
    assert proc.stdout.count("| laplacian |") == 1  # only rank 0 reports
    one = (tmp_path / "one" / "tiny" / "laplacian.csv").read_text().splitlines()
    two = (tmp_path / "two" / "tiny" / "laplacian.csv").read_text().splitlines()
    assert [r.split(",")[:7] for r in one] == [r.split(",")[:7] for r in two]  # same ids, order and scores
    assert len(list((tmp_path / "two" / "tiny" / "laplacian").glob("*.png"))) == 5

    _run(["caption", "--dataset", str(data), "--out", "caps.jsonl", "--captioner", "template", "--no-progress"],
         tmp_path, 2)
    records = [json.loads(line) for line in (tmp_path / "caps.jsonl").read_text().splitlines()]
    assert sorted((r["modality_folder"], r["id"]) for r in records) == sorted(
        (m, f"p{k}") for m in ("ir", "vi") for k in range(5))
    assert not list(tmp_path.glob("caps.jsonl.part*"))


def test_cli_leaves_the_process_group_after_success_and_after_an_error(tmp_path, monkeypatch):
    """A Gloo group left to the interpreter's exit can abort a rank; the CLI closes it on every path."""
    import torch.distributed as dist

    from tgif.cli import main

    monkeypatch.chdir(tmp_path)
    data = _dataset(tmp_path, pairs=1)
    ok = ["eval", "--dataset", str(data), "--method", "laplacian", "--out", "out", "--no-progress"]
    missing = ["eval", "--dataset", str(tmp_path / "missing"), "--method", "laplacian", "--no-progress"]
    for argv, status in ((ok, 0), (missing, 2)):
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / f'store{status}'}", rank=0, world_size=1)
        assert main(argv) == status
        assert not dist.is_initialized()
    parallel.close()  # and again: nothing to close
