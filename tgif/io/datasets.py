"""Paired datasets laid out as ``<root>/<dataset>/<modality>/<id>.<ext>``.

A pair is the two files sharing a stem (``<id>``) in the two modality folders of a dataset;
extensions may differ (``.png`` and ``.jpg``). The folder order (which modality is source
``a``) follows :data:`KNOWN_DATASETS` for the provided benchmarks, and alphabetical order
otherwise. This is the layout of ``shared/data`` and ``shared/train`` (see their READMEs).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tgif import settings
from tgif.errors import DatasetError
from tgif.io.image import OnLarge
from tgif.io.pair import ImagePair, load_pair

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    """What a known dataset holds: its fusion task and modality folders in source order."""

    task: str
    modalities: tuple[str, str]


#: Modality folder names of each task's two sources (the first is source ``a``).
TASK_MODALITIES: dict[str, tuple[str, str]] = {
    "ivf": ("ir", "vi"), "mif": ("mri", "ct"), "mef": ("under", "over"), "mff": ("near", "far"),
}

KNOWN_DATASETS: dict[str, DatasetInfo] = {
    "msrs_test": DatasetInfo("ivf", ("ir", "vi")),
    "roadscene_test": DatasetInfo("ivf", ("ir", "vi")),
    "harvard_mri_ct": DatasetInfo("mif", ("mri", "ct")),
    "harvard_mri_pet": DatasetInfo("mif", ("mri", "pet")),
    "harvard_mri_spect": DatasetInfo("mif", ("mri", "spect")),
    "mef": DatasetInfo("mef", ("under", "over")),
    "mff_lytro": DatasetInfo("mff", ("near", "far")),
    "mff_mffw": DatasetInfo("mff", ("a", "b")),
    "roadscene_train": DatasetInfo("ivf", ("ir", "vi")),
    "msrs_train": DatasetInfo("ivf", ("ir", "vi")),
    "msrs_train_128": DatasetInfo("ivf", ("ir", "vi")),
    "mef_train": DatasetInfo("mef", ("under", "over")),
    "mff_train": DatasetInfo("mff", ("a", "b")),
}


@dataclass(frozen=True)
class PairFiles:
    """The two files of one dataset pair."""

    id: str
    path_a: Path
    path_b: Path
    task: str | None = None

    def load(self, *, max_pixels: int | None = None, on_large: OnLarge = "error") -> ImagePair:
        """Load the pair (equal sizes are required)."""
        return load_pair(
            self.path_a, self.path_b, max_pixels=max_pixels, on_large=on_large, pair_id=self.id, task=self.task
        )


def resolve_dataset(dataset: str | os.PathLike) -> Path:
    """Turn a dataset name (``msrs_test``) or a folder path into an existing folder.

    A bare name is looked up in ``<shared>/data`` (see :mod:`tgif.settings`).
    """
    path = Path(dataset)
    if path.is_dir():
        return path
    if len(path.parts) == 1:
        data = settings.data_dir()
        if data is None:
            env = os.environ.get("TGIF_SHARED")
            found = f"TGIF_SHARED={env!r} is not a folder holding data/" if env else "no shared data folder found"
            raise DatasetError(
                f"dataset {str(dataset)!r}: {found}; set TGIF_SHARED to the folder"
                " holding data/, or pass the dataset folder's path"
            )
        candidate = data / path
        if candidate.is_dir():
            return candidate
        available = ", ".join(list_datasets(data)) or "none"
        raise DatasetError(f"dataset {str(dataset)!r} not found in {data} (available: {available})")
    raise DatasetError(f"dataset folder {str(dataset)!r} does not exist")


def list_datasets(root: str | os.PathLike | None = None) -> list[str]:
    """Names of the dataset folders under ``root`` (default: ``<shared>/data``)."""
    base = Path(root) if root is not None else settings.data_dir()
    if base is None or not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))


def dataset_modalities(folder: Path) -> tuple[str, str]:
    """Return the two modality folder names of a dataset, in source order."""
    known = KNOWN_DATASETS.get(folder.name)
    subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if known and all(m in subdirs for m in known.modalities):
        return known.modalities
    if len(subdirs) != 2:
        raise DatasetError(
            f"{folder}: expected two modality folders (<dataset>/<modality>/<id>.<ext>), found {subdirs or 'none'}"
        )
    return subdirs[0], subdirs[1]


def dataset_task(dataset: str | os.PathLike) -> str | None:
    """The fusion task (ivf, mif, mef, mff) of a known dataset, or None."""
    info = KNOWN_DATASETS.get(Path(dataset).name)
    return info.task if info else None


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            if path.stem in found:
                raise DatasetError(
                    f"{folder}: two files share the id {path.stem!r} ({found[path.stem].name}, {path.name})")
            found[path.stem] = path
    return found


def list_pairs(dataset: str | os.PathLike) -> list[PairFiles]:
    """List the pairs of a dataset (by name or folder), sorted by id.

    Raises:
        DatasetError: missing folder, wrong layout, or ids present in only one modality.
    """
    folder = resolve_dataset(dataset)
    mod_a, mod_b = dataset_modalities(folder)
    files_a, files_b = _images_by_stem(folder / mod_a), _images_by_stem(folder / mod_b)
    only_a, only_b = sorted(set(files_a) - set(files_b)), sorted(set(files_b) - set(files_a))
    if only_a or only_b:
        raise DatasetError(
            f"{folder.name}: unmatched ids (only in {mod_a}: {only_a[:5]}, only in {mod_b}: {only_b[:5]})"
        )
    if not files_a:
        raise DatasetError(f"{folder.name}: no images found in {mod_a}/ and {mod_b}/")
    task = dataset_task(folder)
    return [PairFiles(i, files_a[i], files_b[i], task) for i in sorted(files_a)]


def iter_pairs(
    dataset: str | os.PathLike, *, max_pixels: int | None = None, on_large: OnLarge = "error"
) -> Iterator[ImagePair]:
    """Yield the loaded :class:`ImagePair` of every pair in a dataset, sorted by id."""
    for files in list_pairs(dataset):
        yield files.load(max_pixels=max_pixels, on_large=on_large)
