"""On-disk cache of perception results, so the app and the dataset tools never recompute maps.

One folder per (image, detector, segmenter) key under ``<cache root>/perception`` (:func:`tgif.settings.cache_dir`):
``meta.json`` (detections, region labels, timings), ``masks.npz`` (bit-packed region masks) and the
two rendered maps as PNG. Writes go to a temporary folder renamed into place, so a crash never
leaves a half-written entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from tgif import settings
from tgif.disk_cache import CacheBudget, touch
from tgif.perception.types import Detection, Detections, Region, Segmentation


def image_key(image: np.ndarray, config: str) -> str:
    """sha256 of the pixels, their shape and a configuration string."""
    digest = hashlib.sha256()
    digest.update(str(image.shape).encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    digest.update(config.encode())
    return digest.hexdigest()


def _detections_to_json(detections: Detections) -> dict:
    return {
        "model": detections.model,
        "image_size": list(detections.image_size),
        "items": [{"label": d.label, "score": d.score, "box": list(d.box), "class_id": d.class_id}
                  for d in detections.items],
    }


def _detections_from_json(data: dict) -> Detections:
    items = [Detection(tuple(d["box"]), d["label"], d["score"], d["class_id"]) for d in data["items"]]
    return Detections(items, tuple(data["image_size"]), data["model"])


class PerceptionCache:
    """Stores and retrieves (detections, segmentation, detection map, segmentation map) by key; at most
    ``TGIF_CACHE_MAX_MB`` on disk, least recently used entries evicted (:mod:`tgif.disk_cache`)."""

    def __init__(self, root: str | os.PathLike | None = None) -> None:
        self.root = Path(root) if root is not None else settings.cache_dir() / "perception"
        self._budget = CacheBudget(self.root, depth=2)

    def _folder(self, key: str) -> Path:
        return self.root / key[:2] / key

    def load(self, key: str) -> tuple[Detections, Segmentation, np.ndarray, np.ndarray, dict] | None:
        """Return the cached entry, or None when absent or unreadable."""
        folder = self._folder(key)
        try:
            meta = json.loads((folder / "meta.json").read_text())
            with np.load(folder / "masks.npz") as packed:
                bits, shape = packed["bits"], tuple(packed["shape"])
            masks = np.unpackbits(bits, count=int(np.prod(shape))).reshape(shape).astype(bool)
            det_map = np.asarray(Image.open(folder / "detection_map.png").convert("RGB"))
            seg_map = np.asarray(Image.open(folder / "segmentation_map.png").convert("RGB"))
        except (OSError, ValueError, KeyError, json.JSONDecodeError):
            return None
        touch(folder)
        seg_meta = meta["segmentation"]
        regions = [Region(mask, r["label"], r["kind"], r["score"]) for mask, r in zip(masks, seg_meta["regions"])]
        segmentation = Segmentation(regions, tuple(seg_meta["image_size"]), seg_meta["backend"], seg_meta["notes"])
        return _detections_from_json(meta["detections"]), segmentation, det_map, seg_map, meta.get("seconds", {})

    def save(self, key: str, detections: Detections, segmentation: Segmentation, detection_map: np.ndarray,
             segmentation_map: np.ndarray, seconds: dict[str, float]) -> None:
        """Write an entry atomically (an existing entry is kept)."""
        folder = self._folder(key)
        if folder.exists():
            return
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder.parent))
        try:
            w, h = segmentation.image_size
            masks = (np.stack([r.mask for r in segmentation.regions]) if segmentation.regions
                     else np.zeros((0, h, w), bool))
            np.savez_compressed(tmp / "masks.npz", bits=np.packbits(masks.ravel()), shape=np.array(masks.shape))
            meta = {
                "detections": _detections_to_json(detections),
                "segmentation": {
                    "backend": segmentation.backend,
                    "image_size": list(segmentation.image_size),
                    "notes": segmentation.notes,
                    "regions": [{"label": r.label, "kind": r.kind, "score": r.score} for r in segmentation.regions],
                },
                "seconds": seconds,
            }
            (tmp / "meta.json").write_text(json.dumps(meta))
            Image.fromarray(detection_map).save(tmp / "detection_map.png")
            Image.fromarray(segmentation_map).save(tmp / "segmentation_map.png")
            nbytes = sum(f.stat().st_size for f in tmp.iterdir())
            os.replace(tmp, folder)
        except OSError:
            shutil.rmtree(tmp, ignore_errors=True)
            if not folder.exists():
                raise
            return
        self._budget.added(nbytes)
