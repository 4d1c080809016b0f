"""The training loop behind ``tgif train``.

Paper schedule: Adam, learning rate 1e-4 halved every 50 epochs (an epoch = one pass over the
training pairs at the batch size), batch size 2, random crops. A run is bounded by a step budget.
It checkpoints every ``checkpoint_every`` steps (model as safetensors with its config and text
encoder name, optimizer/scheduler/RNG state for ``--resume``), logs the loss terms to
``log.csv``, scores the held-out pairs with the fusion metrics into ``val.csv``, and draws both
into ``curves.png``.

Data parallel: ``batch_size`` is the number of pairs per optimizer step, whatever the number of
processes. Launched with ``torchrun --nproc_per_node=K -m tgif train ...`` (one process per GPU) or
with ``procs: K`` (K processes on this CPU, started here, Gloo), the K processes split each step's
batch (every K-th pair of the batch one process would draw, see
:class:`tgif.train.data.StepBatchSampler`), one all-reduce averages their gradients
(:func:`tgif.parallel.average_gradients`) and rank 0 writes the files:
the maths of a step is the same as in one process. On a small CPU, ``procs: 2`` with one thread each is
usually faster than one process with two threads, not always (``tgif bench train`` prints both).

Resume: the data stream is a function of the step, and the state file holds the model, Adam, the
learning-rate schedule and torch's RNG, so an interrupted run resumed with ``--resume`` ends bit-equal
to an uninterrupted one. AMP (``amp``): bfloat16 autocast of the network (the loss stays float32),
by default on CUDA only; ``amp: true`` uses it on the CPU too, ``amp: false`` nowhere.

Memory: every training process first asks glibc to keep freed memory (:func:`retain_freed_memory`), so that a
step reuses the previous step's activations' pages instead of faulting them in again.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from tgif.errors import CheckpointError, TgifError
from tgif.metrics import PAPER_METRICS, compute_metrics
from tgif.model import TGIFConfig, TGIFNet, build_tgif, load_tgif, save_tgif
from tgif.parallel import average_gradients, barrier, divergence
from tgif.train.data import PackDataset, StepBatchSampler, collate_fusion
from tgif.train.losses import FusionLoss
from tgif.train.pack import load_pack

logger = logging.getLogger(__name__)

LOSS_TERMS = ("total", "int", "grad", "ssim")


@dataclass
class TrainSettings:
    """What a training run does (saved as ``settings.json`` in the run folder).

    Attributes:
        task: ``ivf``, ``mef`` or ``mff``.
        pack: path of the training pack (see :mod:`tgif.train.pack`).
        out_dir: run folder for checkpoints, logs and plots.
        steps: total optimizer steps (the budget).
        batch_size: pairs per step (per process under torchrun).
        crop: side of the square training crops.
        lr: initial Adam learning rate.
        halve_every_epochs: the learning rate is halved every this many epochs.
        checkpoint_every: steps between checkpoints.
        val_every: steps between validation passes over the held-out pairs.
        seed: seed of model init, sampling and crops.
        use_text: False trains the no-text ablation.
        model: overrides of :class:`tgif.model.TGIFConfig` fields.
        num_workers: DataLoader workers.
        grad_weight: weight of the gradient term; None for the paper's (see :data:`tgif.train.losses.TASK_LOSSES`).
        ssim_weight: weight of the SSIM term; None for the paper's.
        procs: CPU data-parallel processes started by :func:`train` (each with its share of the threads).
        amp: bfloat16 autocast: None on CUDA only, True on any device, False never.
        init_from: a TGIF checkpoint to start from (its config is used; ``model`` overrides must match it), e.g.
            another task's model; None starts from a random initialisation.
        select: keep the weights of every validation (``checkpoints/step_NNNNNN.safetensors``) and at the end pick
            one by the held-out choice rule of :mod:`tgif.train.sweep` (VIF and Qabf kept within 2% of the
            Laplacian pyramid's, then wins, then margin, on the held-out pairs): ``selected.safetensors``, with
            every candidate's row in ``selection.csv`` (:func:`tgif.train.sweep.select_checkpoint`).

    Raises:
        ValueError: a count is not positive, or ``batch_size`` is not a multiple of ``procs``.
    """

    task: str
    pack: str
    out_dir: str
    steps: int = 2000
    batch_size: int = 2
    crop: int = 128
    lr: float = 1e-4
    halve_every_epochs: int = 50
    checkpoint_every: int = 500
    val_every: int = 500
    seed: int = 0
    use_text: bool = True
    model: dict[str, Any] = field(default_factory=dict)
    num_workers: int = 0
    grad_weight: float | None = None
    ssim_weight: float | None = None
    procs: int = 1
    amp: bool | None = None
    init_from: str | None = None
    select: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "crop", "checkpoint_every", "val_every", "procs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.batch_size % self.procs:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of procs {self.procs}: "
                             "the processes share each step's batch")


#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD and M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def retain_freed_memory() -> bool:
    """Make glibc's malloc keep the memory a training step frees for the next step; returns whether it could.

    A step allocates tens of MiB of activations and frees them all at the end of its backward pass. By default
    glibc hands that memory back to the kernel (a free top of the heap above 128 KiB is trimmed, and large
    buffers are mmap-ed and unmapped one by one), so the next step page-faults it in again: thousands of faults
    per step, made dearer by two threads (``tgif bench train``). With a 32 MiB mmap threshold (glibc's maximum)
    and no trimming, the heap stays at the peak of one step and is reused. The maths is untouched. A no-op
    (False) where the C library is not glibc.
    """
    import ctypes

    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: glibc's on Linux
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 32 * 1024 * 1024)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank); the process group is :mod:`tgif.parallel`'s (started under torchrun)."""
    from tgif.parallel import local_rank, world

    rank, size = world()
    return rank, size, local_rank()


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@torch.inference_mode()
def validate(model: TGIFNet, dataset: PackDataset, device: torch.device, use_text: bool) -> dict[str, float]:
    """Mean fusion metrics (EN, SD, SF, AG, VIF, Qabf on 8-bit luminance) over the held-out pairs."""
    was_training = model.training
    model.eval()
    rows = []
    for index in range(len(dataset)):
        item = collate_fusion([dataset[index]])
        text = item["text"].to(device) if use_text else None
        mask = item["text_mask"].to(device) if use_text else None
        fused = model(item["y_a"].to(device), item["y_b"].to(device), text, mask)
        planes = [np.round(t[0, 0].float().cpu().numpy() * 255.0) for t in (fused, item["y_a"], item["y_b"])]
        rows.append(compute_metrics(*planes))
    model.train(was_training)
    return {name: float(np.nanmean([row[name] for row in rows])) for name in PAPER_METRICS} if rows else {}


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, step: int,
               **extra: Any) -> None:
    """Write what ``--resume`` needs: model, optimiser, scheduler, step, torch RNG state and ``extra`` entries."""
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "step": step, "torch_rng": torch.get_rng_state(), **extra}, path)


def load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               scheduler: Any) -> dict[str, Any]:
    """Restore what :func:`save_state` wrote into the given objects (and torch's RNG); returns the whole state."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["torch_rng"])
    return state


def append_csv(path: Path, row: dict[str, Any]) -> None:
    """Append ``row`` to a CSV file, writing the header first when the file is new."""
    new = not path.exists()
    with path.open("a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def log_row(step: int, terms: dict[str, torch.Tensor], names: tuple[str, ...], lr: float,
            seconds: float) -> dict[str, str]:
    """One ``log.csv`` row of a training step: the step, each loss term of ``names``, the learning rate, seconds."""
    return {"step": str(step), **{k: f"{terms[k].item():.6f}" for k in names}, "lr": f"{lr:.3g}",
            "seconds": f"{seconds:.3f}"}


def truncate_csv(path: Path, last_step: int) -> None:
    """Drop rows after ``last_step`` (written by an interrupted run after its last checkpoint)."""
    if not path.exists():
        return
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    kept = [row for row in rows if int(row["step"]) <= last_step]
    if len(kept) == len(rows):
        return
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)


def export_logs(run_dir: str | os.PathLike, out_dir: str | os.PathLike, stem: str,
                max_rows: int = 2000) -> list[Path]:
    """Copy a run's ``log.csv`` (thinned to ``max_rows`` evenly spaced steps, plus the last step)
    and ``val.csv`` (and ``selection.csv`` when the run selected a checkpoint) to ``<out_dir>/<stem>_train.csv``,
    ``<stem>_val.csv`` (and ``<stem>_selection.csv``), small enough to commit; a region-grounding run's
    ``matcher_log.csv`` and ``emphasis_log.csv`` (thinned alike) to ``<stem>_matcher.csv`` and
    ``<stem>_emphasis.csv``."""
    run, out = Path(run_dir), Path(out_dir)
    written: list[Path] = []
    for source, target, thin in (("log.csv", "train", True), ("val.csv", "val", False),
                                 ("selection.csv", "selection", False), ("matcher_log.csv", "matcher", True),
                                 ("emphasis_log.csv", "emphasis", True)):
        if not (run / source).exists():
            continue
        out.mkdir(parents=True, exist_ok=True)
        lines = (run / source).read_text().splitlines()
        if thin:
            header, rows = lines[0], lines[1:]
            stride = max(1, -(-len(rows) // max_rows))
            lines = [header, *rows[::stride], *([rows[-1]] if rows and (len(rows) - 1) % stride else [])]
        (out / f"{stem}_{target}.csv").write_text("\n".join(lines) + "\n")
        written.append(out / f"{stem}_{target}.csv")
    return written


def plot_curves(run_dir: str | os.PathLike) -> Path | None:
    """Draw ``log.csv`` (losses) and ``val.csv`` (metrics) of a run into ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    if not (run / "log.csv").exists():
        return None
    with (run / "log.csv").open() as handle:
        log = list(csv.DictReader(handle))
    val: list[dict[str, str]] = []
    if (run / "val.csv").exists():
        with (run / "val.csv").open() as handle:
            val = list(csv.DictReader(handle))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    steps = [int(r["step"]) for r in log]
    window = max(1, len(log) // 100)
    for term in LOSS_TERMS:
        values = np.array([float(r[term]) for r in log])
        if values.any():
            line = axes[0].plot(steps, values, alpha=0.2, linewidth=0.5)[0]
            smooth = np.convolve(values, np.ones(window) / window, mode="valid")
            axes[0].plot(steps[window - 1:], smooth, color=line.get_color(), label=f"{term} (mean of {window})")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss")
    axes[0].legend()
    if val:
        vsteps = [int(r["step"]) for r in val]
        for name in PAPER_METRICS:
            first = float(val[0][name]) or 1.0
            axes[1].plot(vsteps, [float(r[name]) / first for r in val], marker="o", label=name)
        axes[1].set_title("validation metrics (relative to first)")
        axes[1].set_xlabel("step")
        axes[1].legend()
    fig.tight_layout()
    out = run / "curves.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _initial_model(path: str, config: TGIFConfig, text_encoder: str) -> TGIFNet:
    """The network of checkpoint ``path`` (float32, train mode) to start a run from; its config must be ``config``.

    Raises:
        CheckpointError: the file cannot be loaded, was trained with another text encoder than the pack's, or has
            another architecture than the run asks for.
    """
    model, metadata = load_tgif(path, expected_text_encoder=text_encoder)
    if metadata.config != config:
        raise CheckpointError(f"init_from {path}: its network ({metadata.config}) is not the one this run builds "
                              f"({config}); drop the model overrides or start from another checkpoint")
    logger.info("starting from %s (%s, %d steps)", path, metadata.task, metadata.steps)
    return model.train()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _procs_worker(rank: int, settings: TrainSettings, resume: bool, progress: bool, port: int,
                  threads: int) -> None:
    """One of the ``procs`` processes: join the local Gloo group as ``rank`` and train."""
    os.environ.update({"WORLD_SIZE": str(settings.procs), "RANK": str(rank), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    try:
        _train_process(settings, resume, progress)
        barrier()  # no process tears its connections down while another is still in a collective
    finally:
        torch.distributed.destroy_process_group()


def train(settings: TrainSettings, resume: bool = False, progress: bool = True) -> Path:
    """Run (or resume) a training run; returns the path of the last checkpoint (with ``settings.select``, the
    selected one).

    With ``settings.procs > 1`` it starts that many CPU processes (this process's threads split between
    them) and waits for them.

    Raises:
        TgifError: ``procs > 1`` under torchrun or with CUDA (launch one process per GPU with torchrun).
    """
    if settings.procs == 1:
        return _train_process(settings, resume, progress)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 or torch.cuda.is_available():
        raise TgifError("procs > 1 starts CPU processes; on GPUs or under torchrun set procs: 1 and launch "
                        "torchrun --nproc_per_node=K -m tgif train ...")
    threads = max(1, torch.get_num_threads() // settings.procs)
    logger.info("training with %d processes x %d threads", settings.procs, threads)
    torch.multiprocessing.spawn(_procs_worker, args=(settings, resume, progress, _free_port(), threads),
                                nprocs=settings.procs, join=True)
    return Path(settings.out_dir) / ("selected.safetensors" if settings.select else "last.safetensors")


def _train_process(settings: TrainSettings, resume: bool, progress: bool) -> Path:
    """The training loop of one process (the only one, or one rank of a data-parallel run)."""
    retain_freed_memory()
    rank, world, local_rank = _distributed()
    device = _device(local_rank)
    _seed_everything(settings.seed)
    out = Path(settings.out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        (out / "settings.json").write_text(json.dumps(asdict(settings), indent=2))

    pack = load_pack(settings.pack)
    # no flips: captions say "on the left", "at the top"; a flipped crop would contradict its caption
    train_set = PackDataset(pack, "train", crop=settings.crop, flips=False, seed=settings.seed)
    val_set = PackDataset(pack, "val")
    config = TGIFConfig.from_dict({**settings.model, "text_dim": train_set.text_dim, "use_text": settings.use_text})
    model = (build_tgif(config) if settings.init_from is None
             else _initial_model(settings.init_from, config, train_set.text_encoder)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, fused=True)
    steps_per_epoch = max(1, math.ceil(len(train_set) / settings.batch_size))
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, settings.halve_every_epochs * steps_per_epoch, gamma=0.5)
    loss_fn = FusionLoss(settings.task, settings.grad_weight, settings.ssim_weight)

    step = 0
    state_path = out / "last_state.pt"
    if resume and state_path.exists():
        step = int(load_state(state_path, model, optimizer, scheduler)["step"])
        if rank == 0:
            for name in ("log.csv", "val.csv"):
                truncate_csv(out / name, step)
        logger.info("resumed %s at step %d", out, step)
    parameters = [p for p in model.parameters() if p.requires_grad]  # same init on every rank (same seed)
    sampler = StepBatchSampler(train_set.weights, settings.batch_size, range(step, settings.steps),
                               seed=settings.seed, rank=rank, world=world)
    loader = DataLoader(train_set, batch_sampler=sampler, collate_fn=collate_fusion, num_workers=settings.num_workers)
    use_amp = device.type == "cuda" if settings.amp is None else settings.amp
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp)

    def save(step_done: int) -> Path:
        extra = {"settings": asdict(settings), "train_pairs": len(train_set), "device": str(device),
                 "max_tokens": int(pack["max_tokens"]), "pack_text_dtype": str(pack["text_dtype"])}
        path = save_tgif(out / "last.safetensors", model, train_set.text_encoder, settings.task, step_done, extra)
        save_state(state_path, model, optimizer, scheduler, step_done)
        return path

    model.train()
    bar = tqdm(total=settings.steps, initial=step, desc=f"train {settings.task}", unit="step",
               disable=not progress or rank != 0)
    last_path = out / "last.safetensors"
    start = time.perf_counter()
    for batch in loader:
        text = batch["text"].to(device) if settings.use_text else None
        mask = batch["text_mask"].to(device) if settings.use_text else None
        y_a, y_b = batch["y_a"].to(device), batch["y_b"].to(device)
        with amp:
            fused = model(y_a, y_b, text, mask)
        losses = loss_fn(fused.float(), y_a, y_b)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        # one all-reduce averages the gradients and the loss terms (the log shows the whole batch's loss)
        terms = average_gradients(parameters, torch.stack([losses[k].detach() for k in LOSS_TERMS]))
        losses = dict(zip(LOSS_TERMS, terms))
        optimizer.step()
        scheduler.step()
        step += 1
        bar.update(1)
        if rank == 0:
            append_csv(out / "log.csv", log_row(step, losses, LOSS_TERMS, scheduler.get_last_lr()[0],
                                                time.perf_counter() - start))
            bar.set_postfix(loss=f"{losses['total'].item():.4f}")
            if step % settings.val_every == 0 or step == settings.steps:
                append_csv(out / "val.csv", {"step": step, **validate(model, val_set, device, settings.use_text)})
                if settings.select:
                    save_tgif(out / "checkpoints" / f"step_{step:06d}.safetensors", model, train_set.text_encoder,
                              settings.task, step, {"settings": asdict(settings)})
            if step % settings.checkpoint_every == 0 or step == settings.steps:
                last_path = save(step)
                plot_curves(out)
    bar.close()
    gap = divergence(parameters)
    if gap:
        raise RuntimeError(f"the {world} data-parallel replicas ended with different weights (max difference {gap:g})")
    if settings.select and rank == 0:
        from tgif.train.sweep import select_checkpoint  # the sweep module builds on this one

        return select_checkpoint(out, val_set)
    return last_path
