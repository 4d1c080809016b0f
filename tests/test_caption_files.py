"""The committed caption files: well-formed, and complete for every provided dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tgif import settings
from tgif.captions.dataset import dataset_images

CAPTIONS = Path(__file__).resolve().parents[1] / "assets" / "captions"
REQUIRED = {"dataset", "id", "modality_folder", "file", "task", "modality", "caption", "captioner", "prompt_version",
            "mode", "detections", "counts", "regions", "seconds"}


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("path", sorted(CAPTIONS.glob("*/*.jsonl")), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_caption_file_is_well_formed(path: Path) -> None:
    records = _records(path)
    assert records
    keys = [(r["id"], r["modality_folder"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicate images"
    for record in records:
        assert REQUIRED <= set(record)
        assert record["dataset"] == path.stem and record["mode"] == "full"
        assert record["caption"] and len(record["caption"].split()) <= 60
        assert record["task"] in ("ivf", "mif", "mef", "mff")


def test_every_provided_dataset_has_complete_captions() -> None:
    shared = settings.shared_dir()
    if shared is None:
        pytest.skip("shared folder not found (set TGIF_SHARED)")
    for split in ("data", "train"):
        for folder in sorted(p for p in (shared / split).iterdir() if p.is_dir()):
            path = CAPTIONS / split / f"{folder.name}.jsonl"
            assert path.exists(), f"missing {path}"
            expected = {(image_id, modality) for modality, image_id, _ in dataset_images(folder)}
            assert {(r["id"], r["modality_folder"]) for r in _records(path)} == expected, folder.name
