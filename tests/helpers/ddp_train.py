"""Run by ``torchrun`` in tests: train a tiny model data-parallel, then check the replica check itself.

Usage: ``torchrun --nproc_per_node 2 tests/helpers/ddp_train.py PACK OUT``. The training run ends with
:func:`tgif.parallel.divergence` of the replicas' weights (it raises when they differ). Rank 0 then writes
``OUT/ranks.json``: the world size and the divergence measured for a tensor that differs on rank 1 only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from tgif.parallel import divergence, world
from tgif.train.loop import TrainSettings, train

TINY = {"dim": 16, "heads": 2, "text_heads": 2, "encoder_blocks": 1, "decoder_blocks": 1, "text_blocks": 1}


def main(pack: str, out: str) -> None:
    settings = TrainSettings(task="ivf", pack=pack, out_dir=out, steps=3, batch_size=2, crop=32,
                             checkpoint_every=3, val_every=3, model=TINY)
    train(settings, progress=False)
    rank, size = world()
    probe = torch.full((4,), 1.0 + 0.5 * rank)  # differs on rank 1: the check must see it
    gap = divergence([probe])
    if rank == 0:
        (Path(out) / "ranks.json").write_text(json.dumps({"world": size, "probe_divergence": gap}))
    dist.barrier()  # no rank tears its connections down while the other is still in a collective
    dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
