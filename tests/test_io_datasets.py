"""Tests for dataset listing and iteration in :mod:`tgif.io.datasets`.

Most tests build a tiny ``<root>/<dataset>/<modality>/<id>.<ext>`` tree in ``tmp_path``;
the last ones check the provided ``shared/data`` benchmarks (skipped when absent).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tgif.errors import DatasetError
from tgif.io import KNOWN_DATASETS, dataset_task, iter_pairs, list_datasets, list_pairs

H, W = 17, 23


def _make_dataset(root: Path, name: str, files: dict[str, list[str]], rng: np.random.Generator) -> Path:
    """Write ``files`` ({modality: [file names]}) under ``root/name``; grey for the first modality."""
    folder = root / name
    for index, (modality, names) in enumerate(files.items()):
        (folder / modality).mkdir(parents=True)
        shape = (H, W) if index == 0 else (H, W, 3)
        for file_name in names:
            Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(folder / modality / file_name)
    return folder


def test_list_pairs_matches_on_stem_across_extensions(tmp_path, rng):
    folder = _make_dataset(
        tmp_path, "scenes", {"a_mod": ["03.png", "01.jpg", "02.png"], "b_mod": ["01.png", "02.jpg", "03.png"]}, rng
    )
    (folder / "a_mod" / "README.txt").write_text("not an image")
    (folder / ".cache").mkdir()
    pairs = list_pairs(folder)
    assert [p.id for p in pairs] == ["01", "02", "03"]
    assert [(p.path_a.name, p.path_b.name) for p in pairs] == [
        ("01.jpg", "01.png"),
        ("02.png", "02.jpg"),
        ("03.png", "03.png"),
    ]
    assert all(p.path_a.parent.name == "a_mod" and p.path_b.parent.name == "b_mod" for p in pairs)
    assert list_pairs(str(folder)) == pairs


def test_iter_pairs_loads_every_pair(tmp_path, rng):
    folder = _make_dataset(tmp_path, "scenes", {"ir": ["x.png", "y.jpg"], "vi": ["x.jpg", "y.png"]}, rng)
    pairs = list(iter_pairs(folder))
    assert [p.id for p in pairs] == ["x", "y"]
    for pair in pairs:
        assert pair.a.pixels.shape == (H, W)
        assert pair.b.pixels.shape == (H, W, 3)
        assert pair.a.pixels.dtype == np.float32
    first = list_pairs(folder)[0].load()
    np.testing.assert_array_equal(first.a.pixels, pairs[0].a.pixels)
    assert first.id == "x"


def test_iter_pairs_passes_the_pixel_limit(tmp_path, rng):
    folder = _make_dataset(tmp_path, "scenes", {"ir": ["x.png"], "vi": ["x.png"]}, rng)
    (pair,) = iter_pairs(folder, max_pixels=100, on_large="downscale")
    assert pair.shape[0] * pair.shape[1] <= 100


@pytest.mark.parametrize(
    ("name", "folders", "order"),
    [
        ("msrs_test", ("vi", "ir"), ("ir", "vi")),
        ("mef", ("over", "under"), ("under", "over")),
        ("harvard_mri_ct", ("ct", "mri"), ("mri", "ct")),
        ("my_pairs", ("zeta", "alpha"), ("alpha", "zeta")),  # unknown name: alphabetical
    ],
)
def test_modality_order(tmp_path, rng, name, folders, order):
    folder = _make_dataset(tmp_path, name, {m: ["1.png"] for m in folders}, rng)
    (pair,) = list_pairs(folder)
    assert (pair.path_a.parent.name, pair.path_b.parent.name) == order


def test_unmatched_ids(tmp_path, rng):
    folder = _make_dataset(tmp_path, "scenes", {"ir": ["1.png", "2.png"], "vi": ["1.png", "3.jpg"]}, rng)
    with pytest.raises(DatasetError, match=r"scenes: unmatched ids \(only in ir: \['2'\], only in vi: \['3'\]\)"):
        list_pairs(folder)


@pytest.mark.parametrize("folders", [("ir",), ("ir", "vi", "extra")])
def test_wrong_number_of_modality_folders(tmp_path, rng, folders):
    folder = _make_dataset(tmp_path, "scenes", {m: ["1.png"] for m in folders}, rng)
    with pytest.raises(DatasetError, match="expected two modality folders") as info:
        list_pairs(folder)
    assert str(sorted(folders)) in str(info.value)


def test_no_modality_folders(tmp_path):
    (tmp_path / "scenes").mkdir()
    with pytest.raises(DatasetError, match="found none"):
        list_pairs(tmp_path / "scenes")


def test_empty_modality_folders(tmp_path, rng):
    folder = _make_dataset(tmp_path, "scenes", {"ir": [], "vi": []}, rng)
    with pytest.raises(DatasetError, match="no images found"):
        list_pairs(folder)


def test_two_files_with_the_same_id(tmp_path, rng):
    folder = _make_dataset(tmp_path, "scenes", {"ir": ["1.png", "1.jpg"], "vi": ["1.png"]}, rng)
    with pytest.raises(DatasetError, match=r"two files share the id '1' \(1.jpg, 1.png\)"):
        list_pairs(folder)


def test_dataset_by_name_from_tgif_shared(tmp_path, rng, monkeypatch):
    data = tmp_path / "shared" / "data"
    _make_dataset(data, "alpha_set", {"ir": ["1.png"], "vi": ["1.png"]}, rng)
    _make_dataset(data, "beta_set", {"ir": ["1.png"], "vi": ["1.png"]}, rng)
    monkeypatch.setenv("TGIF_SHARED", str(tmp_path / "shared"))
    monkeypatch.chdir(tmp_path)
    assert list_datasets() == ["alpha_set", "beta_set"]
    (pair,) = list_pairs("alpha_set")
    assert pair.path_a == data / "alpha_set" / "ir" / "1.png"
    with pytest.raises(DatasetError, match=r"dataset 'gamma_set' not found in .* \(available: alpha_set, beta_set\)"):
        list_pairs("gamma_set")


def test_tgif_shared_pointing_nowhere(tmp_path, monkeypatch):
    missing = tmp_path / "no_such_folder"
    monkeypatch.setenv("TGIF_SHARED", str(missing))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DatasetError, match="dataset 'msrs_test'") as info:
        list_pairs("msrs_test")
    assert "TGIF_SHARED" in str(info.value)
    assert str(missing) in str(info.value)
    assert list_datasets() == []


def test_missing_dataset_folder_path(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        list_pairs(tmp_path / "nothing" / "here")


def test_dataset_task():
    assert dataset_task("msrs_test") == "ivf"
    assert dataset_task(Path("/somewhere/harvard_mri_pet")) == "mif"
    assert dataset_task("mef") == "mef"
    assert dataset_task("mff_lytro") == "mff"
    assert dataset_task("my_pairs") is None


# --- the provided benchmarks ----------------------------------------------------------------

# (pairs, first pair's a is colour, first pair's b is colour), as documented in shared/data/README.md
SHARED = {
    "msrs_test": (22, False, True),
    "roadscene_test": (50, False, True),
    "harvard_mri_ct": (21, False, False),  # both gray-as-RGB
    "harvard_mri_pet": (42, False, True),
    "harvard_mri_spect": (73, False, True),
    "mef": (40, True, True),
    "mff_lytro": (20, True, True),
    "mff_mffw": (13, True, True),
}


def test_shared_data_lists_the_known_datasets(data_root):
    assert set(SHARED) <= set(list_datasets(data_root))
    assert set(SHARED) <= set(KNOWN_DATASETS)
    assert list_pairs("msrs_test") == list_pairs(data_root / "msrs_test")  # a bare name finds shared/data


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_dataset_pairs(data_root, name):
    count, a_colour, b_colour = SHARED[name]
    pairs = list_pairs(data_root / name)
    assert len(pairs) == count
    assert len({p.id for p in pairs}) == count
    expected_a, expected_b = KNOWN_DATASETS[name].modalities
    assert all(p.path_a.parent.name == expected_a and p.path_b.parent.name == expected_b for p in pairs)
    pair = pairs[0].load()
    assert pair.id == pairs[0].id
    assert pair.a.size == pair.b.size
    assert (pair.a.is_color, pair.b.is_color) == (a_colour, b_colour)
    for source in (pair.a, pair.b):
        assert source.pixels.dtype == np.float32
        assert 0.0 <= source.pixels.min() and source.pixels.max() <= 1.0
