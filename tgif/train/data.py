"""PyTorch dataset over a training pack (:mod:`tgif.train.pack`), its collate function and weighted sampler.

Train items are random ``crop`` x ``crop`` windows, the same window for both sources (and the ground
truth), reflect-padded when a side is shorter than ``crop``, with random horizontal and vertical flips.
Validation items are whole images, unflipped; use ``batch_size=1`` for them since sizes differ.

Randomness: the training loop samples with :class:`StepBatchSampler`, which makes every step's pairs and
crops a pure function of ``(seed, step)``: item ``(index, key)`` is cropped by a generator seeded with ``key``.
So a resumed run continues the exact data stream of an uninterrupted one, DataLoader workers change nothing,
and K data-parallel processes that each take every K-th item of a step's batch see together exactly the
batch one process would (the maths of a step does not depend on how many processes share it). A plain
integer index draws its crop from the dataset's own generator (seeded by ``seed``, and by ``(seed, worker
seed)`` inside a DataLoader worker).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler, get_worker_info

from tgif.train.pack import decode_plane, dequantize_tokens, load_pack

logger = logging.getLogger(__name__)

SPLITS = ("train", "val")


def _pad_to(planes: list[np.ndarray], crop: int) -> list[np.ndarray]:
    """Reflect-pad (H, W) planes, centred, so that both sides are at least ``crop``."""
    height, width = planes[0].shape
    pad_h, pad_w = max(0, crop - height), max(0, crop - width)
    if not pad_h and not pad_w:
        return planes
    widths = ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2))
    return [np.pad(p, widths, mode="reflect") for p in planes]


def random_crop_flip(planes: list[np.ndarray], crop: int, flips: bool, rng: np.random.Generator) -> list[np.ndarray]:
    """Apply one random crop (and, with ``flips``, one random h/v flip) to all ``planes`` alike."""
    planes = _pad_to(planes, crop)
    height, width = planes[0].shape
    top, left = int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1))
    planes = [p[top:top + crop, left:left + crop] for p in planes]
    if flips:
        if rng.random() < 0.5:
            planes = [p[:, ::-1] for p in planes]
        if rng.random() < 0.5:
            planes = [p[::-1, :] for p in planes]
    return planes


def _to_tensor(plane: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(plane)).float().div_(255.0)[None]


class PackDataset(Dataset):
    """The train or validation pairs of a pack.

    Args:
        pack: a pack dict or the path of a pack file.
        split: ``"train"`` (random crops) or ``"val"`` (whole images).
        crop: side of the square train crops.
        flips: random horizontal/vertical flips of train crops.
        seed: seed of the crop/flip generator.

    Attributes:
        task, text_encoder, text_dim: copied from the pack.
        weights: float32 (N,) sampling weights of this split's pairs.

    Each item is a dict: ``y_a``, ``y_b`` float32 (1, H, W) in [0, 1], ``text`` float32 (L, D) = the tokens of
    caption a then caption b, ``text_mask`` bool (L,) (all True; padding comes from :func:`collate_fusion`),
    ``id`` (``dataset/id``).
    """

    def __init__(self, pack: dict[str, Any] | str | os.PathLike, split: str = "train", crop: int = 128,
                 flips: bool = True, seed: int = 0) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        start = time.perf_counter()
        pack = pack if isinstance(pack, dict) else load_pack(pack)
        pairs = pack["pairs"]
        held_out = set(pack["val"].tolist())
        self.indices = [i for i in range(len(pairs["id"])) if (i in held_out) == (split == "val")]
        self.split, self.crop, self.flips, self.seed = split, crop, flips, seed
        self.task: str = pack["task"]
        self.text_encoder: str = pack["text_encoder"]
        self.text_dim: int = pack["text_dim"]
        self.ids = [f"{pairs['dataset'][i]}/{pairs['id'][i]}" for i in self.indices]
        self.weights = pairs["weight"][self.indices].clone()
        self._pairs = {k: pairs[k][self.indices] for k in ("plane_a", "plane_b", "caption_a", "caption_b")}
        self._planes = self._decode(pack["planes"], pairs["size"][self.indices])
        self._spans = pack["caption_spans"]
        self._tokens, self._scales = pack["tokens"], pack["token_scales"]
        self._rng: np.random.Generator | None = None
        self._rng_key: int | None = None
        logger.info("%s %s split: %d pairs decoded in %.1f s", self.task, split, len(self), time.perf_counter() - start)

    def _decode(self, planes: Sequence[torch.Tensor], sizes: torch.Tensor) -> dict[int, np.ndarray]:
        """Decode every plane this split uses once, at its pair's size."""
        decoded: dict[int, np.ndarray] = {}
        for row, size in enumerate(sizes.tolist()):
            for key in ("plane_a", "plane_b"):
                index = int(self._pairs[key][row])
                if index not in decoded:
                    decoded[index] = decode_plane(planes[index], tuple(size))
        return decoded

    def __len__(self) -> int:
        return len(self.indices)

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        key = None if info is None else info.seed
        if self._rng is None or key != self._rng_key:
            self._rng = np.random.default_rng(self.seed if key is None else [self.seed, key])
            self._rng_key = key
        return self._rng

    def _text(self, caption: int) -> torch.Tensor:
        start, length = self._spans[caption].tolist()
        scales = None if self._scales is None else self._scales[start:start + length]
        return dequantize_tokens(self._tokens[start:start + length], scales)

    def __getitem__(self, item: int | tuple[int, int]) -> dict[str, Any]:
        """The pair at ``item``: an index, or ``(index, key)`` to crop with a generator seeded by ``key``."""
        item, key = item if isinstance(item, tuple) else (item, None)
        planes = [self._planes[int(self._pairs["plane_a"][item])], self._planes[int(self._pairs["plane_b"][item])]]
        if self.split == "train":
            rng = self._generator() if key is None else np.random.default_rng(key)
            planes = random_crop_flip(planes, self.crop, self.flips, rng)
        y_a, y_b = (_to_tensor(p) for p in planes)
        text = torch.cat([self._text(int(self._pairs["caption_a"][item])),
                          self._text(int(self._pairs["caption_b"][item]))])
        return {"y_a": y_a, "y_b": y_b, "text": text,
                "text_mask": torch.ones(text.shape[0], dtype=torch.bool), "id": self.ids[item]}


def collate_fusion(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack items into a batch; text is zero-padded to the longest item with ``text_mask`` False there."""
    shapes = {tuple(item["y_a"].shape) for item in batch}
    if len(shapes) > 1:
        raise ValueError(f"items of different sizes {sorted(shapes)} cannot be stacked; use batch_size=1 for val")
    length = max(item["text"].shape[0] for item in batch)
    text = torch.zeros(len(batch), length, batch[0]["text"].shape[1])
    mask = torch.zeros(len(batch), length, dtype=torch.bool)
    for row, item in enumerate(batch):
        text[row, : item["text"].shape[0]] = item["text"]
        mask[row, : item["text"].shape[0]] = item["text_mask"]
    return {
        **{key: torch.stack([item[key] for item in batch]) for key in ("y_a", "y_b")},
        "text": text,
        "text_mask": mask,
        "id": [item["id"] for item in batch],
    }


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, crop key)`` items drawn per step, in proportion to the pack weights, with replacement.

    Step ``s`` draws ``batch_size`` indices with a torch generator seeded by ``(seed, s)`` and gives each a crop
    key from the same seed sequence, so a step's batch depends only on ``seed`` and ``s``. With ``world > 1``
    this process yields every ``world``-th item of that batch, from ``rank``: the processes of a data-parallel
    run share one batch between them.

    Args:
        weights: (N,) sampling weights of the dataset's pairs.
        batch_size: items per step, over all processes; a multiple of ``world``.
        steps: the steps to yield, ``range(first, last)``.
        seed: seed of the whole stream.
        rank, world: this process and the number of processes.

    Raises:
        ValueError: ``batch_size`` is not a positive multiple of ``world``.
    """

    def __init__(self, weights: torch.Tensor, batch_size: int, steps: range, seed: int = 0, rank: int = 0,
                 world: int = 1) -> None:
        if batch_size < 1 or batch_size % world:
            raise ValueError(f"batch size {batch_size} must be a positive multiple of the {world} processes")
        self.weights = weights.double()
        self.batch_size, self.steps, self.seed, self.rank, self.world = batch_size, steps, seed, rank, world

    def __len__(self) -> int:
        return len(self.steps)

    def batch(self, step: int) -> list[tuple[int, int]]:
        """The whole batch of ``step`` (every process's items), as ``(index, crop key)`` pairs."""
        sequence = np.random.SeedSequence([self.seed, step])
        index_seed, *crop_keys = sequence.generate_state(1 + self.batch_size, dtype=np.uint64).tolist()
        generator = torch.Generator().manual_seed(index_seed)
        indices = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=generator)
        return list(zip(indices.tolist(), crop_keys))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for step in self.steps:
            yield self.batch(step)[self.rank::self.world]
