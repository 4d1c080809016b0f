"""Training data and losses: task losses, synthetic focus and exposure pairs, training packs and the pack dataset."""

from tgif.train.data import PackDataset, StepBatchSampler, collate_fusion, random_crop_flip
from tgif.train.losses import TASK_LOSSES, FusionLoss, sobel_magnitude, ssim_loss
from tgif.train.pack import (
    PACK_FORMAT,
    PACK_PRESETS,
    TASK_DATASETS,
    PackSettings,
    PackSummary,
    build_pack,
    list_task_pairs,
    load_pack,
)
from tgif.train.synthetic import ExposurePair, MultiFocusPair, make_exposure_pair, make_multifocus_pair, pair_seed

__all__ = [
    "PACK_FORMAT",
    "PACK_PRESETS",
    "TASK_DATASETS",
    "TASK_LOSSES",
    "ExposurePair",
    "FusionLoss",
    "MultiFocusPair",
    "PackDataset",
    "PackSettings",
    "StepBatchSampler",
    "PackSummary",
    "build_pack",
    "collate_fusion",
    "list_task_pairs",
    "load_pack",
    "make_exposure_pair",
    "make_multifocus_pair",
    "pair_seed",
    "random_crop_flip",
    "sobel_magnitude",
    "ssim_loss",
]
