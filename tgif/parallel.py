"""Data-parallel batch jobs under ``torchrun``: one process per GPU (or CPU worker), each taking a shard.

Without torchrun (no ``WORLD_SIZE`` > 1 in the environment) every function is the identity for a
single process, so the same code runs unchanged on one CPU. Under torchrun the process group is
started once (NCCL with CUDA, else Gloo) and each process pins its own GPU (``LOCAL_RANK``).

Example::

    torchrun --nproc_per_node 4 -m tgif eval --dataset all --method tgif,laplacian
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TypeVar

import torch

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size); starts the process group on first use under torchrun."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank())
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), dist.get_world_size()


def local_rank() -> int:
    """This process's GPU index on its machine (``LOCAL_RANK``; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    """True in the process that writes shared outputs (rank 0, or the only process)."""
    return world()[0] == 0


def shard(items: Sequence[T]) -> list[T]:
    """This process's share of ``items``: every ``world``-th item starting at its rank (balanced by position)."""
    rank, size = world()
    return list(items[rank::size])


def gather(items: list[T]) -> list[T]:
    """Every process's ``items`` concatenated in rank order (all processes get the whole list)."""
    rank, size = world()
    if size == 1:
        return list(items)
    import torch.distributed as dist

    parts: list[list[T] | None] = [None] * size
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in (part or [])]


def average_gradients(parameters: Sequence[torch.nn.Parameter],
                      values: torch.Tensor | None = None) -> torch.Tensor | None:
    """Replace each parameter's gradient by its mean over the processes, and return the mean of ``values``.

    One all-reduce of all gradients (and ``values``, e.g. the step's loss terms for the log) flattened into
    one buffer, after the backward pass: for a network of a few hundred thousand parameters this is cheaper
    than DDP's per-bucket hooks on a small CPU, and the same average. Parameters without a gradient are
    skipped (the same on every process). For one process nothing changes and ``values`` comes back as is.
    """
    size = world()[1]
    if size == 1:
        return values
    import torch.distributed as dist
    from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

    tensors = [p.grad for p in parameters if p.grad is not None] + ([values.detach()] if values is not None else [])
    flat = _flatten_dense_tensors(tensors)
    dist.all_reduce(flat)
    flat /= size
    means = _unflatten_dense_tensors(flat, tensors)
    for grad, mean in zip(tensors[:len(tensors) - (values is not None)], means):
        grad.copy_(mean)
    return means[-1] if values is not None else None


def divergence(tensors: Sequence[torch.Tensor]) -> float:
    """The largest absolute difference between this process's ``tensors`` and rank 0's, over all processes.

    Every process gets the same number (0.0 for one process, or when all hold the same values): a check that
    data-parallel replicas have stayed identical.
    """
    if world()[1] == 1:
        return 0.0
    import torch.distributed as dist

    mine = torch.cat([t.detach().flatten().float() for t in tensors])
    reference = mine.clone()
    dist.broadcast(reference, src=0)
    gap = (mine - reference).abs().max().reshape(1)
    dist.all_reduce(gap, op=dist.ReduceOp.MAX)
    return float(gap)


def barrier() -> None:
    """Wait for every process (no-op for one process)."""
    if world()[1] > 1:
        import torch.distributed as dist

        dist.barrier()


def close(wait: bool = True) -> None:
    """Leave the process group, if this process started one (no-op otherwise, and when called again).

    A Gloo group left to the interpreter's exit can abort a process ("terminate called without an active
    exception") when its threads are torn down. With ``wait`` every process first waits for the others, so
    that none closes its connections while another is still in a collective; after an error pass
    ``wait=False``, as the others may never reach the barrier.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    if wait:
        dist.barrier()
    dist.destroy_process_group()
