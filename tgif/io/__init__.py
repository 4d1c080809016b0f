"""Image input/output: robust loading, pairs, colour handling and dataset iteration."""

from tgif.io.color import chroma, colorize, luminance, merge_chroma, rgb_to_ycbcr, ycbcr_to_rgb
from tgif.io.datasets import KNOWN_DATASETS, PairFiles, dataset_task, iter_pairs, list_datasets, list_pairs
from tgif.io.image import SourceImage, load_image, save_image, to_uint8
from tgif.io.pair import ImagePair, load_pair

__all__ = [
    "KNOWN_DATASETS",
    "ImagePair",
    "PairFiles",
    "SourceImage",
    "chroma",
    "colorize",
    "dataset_task",
    "iter_pairs",
    "list_datasets",
    "list_pairs",
    "load_image",
    "load_pair",
    "luminance",
    "merge_chroma",
    "rgb_to_ycbcr",
    "save_image",
    "to_uint8",
    "ycbcr_to_rgb",
]
