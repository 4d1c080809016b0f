"""Size caps of the on-disk caches (tgif.disk_cache): least recently used entries go first."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tgif.disk_cache import cache_limit_bytes, prune
from tgif.errors import TgifError
from tgif.text.cache import TextFeatureCache


def test_text_cache_keeps_the_recently_used_entries_under_its_cap(tmp_path, monkeypatch):
    import tgif.disk_cache as disk_cache

    cache = TextFeatureCache(tmp_path / "text")
    features = np.ones((40, 64), np.float32)  # 10,240 bytes of data per entry (plus the .npy header)
    entry = 10_240 + 128
    monkeypatch.setenv("TGIF_CACHE_MAX_MB", str(4.5 * entry / 2**20))  # room for four entries
    scans = []
    real = disk_cache._prune
    monkeypatch.setattr(disk_cache, "_prune", lambda *args: scans.append(args[2]) or real(*args))
    for index, caption in enumerate(["a", "b", "c", "d"]):
        cache.put("enc", caption, features)
        os.utime(cache.path("enc", caption), (1000 + index, 1000 + index))  # a, b, c, d: oldest first
    assert scans == [None]  # the first write measures the folder; the others only add to the running total
    assert cache.get("enc", "a", 64) is not None  # a read makes "a" the most recently used
    cache.put("enc", "e", features)  # over the cap: pruned to 80% of it (3.6 entries), least recently used first
    assert [cache.get("enc", c, 64) is not None for c in "abcde"] == [True, False, False, True, True]
    files = [p for p in (tmp_path / "text").rglob("*.npy")]
    assert len(files) == 3 and sum(p.stat().st_size for p in files) <= 0.8 * cache_limit_bytes()
    cache.put("enc", "f", features)  # back under the cap: no scan
    assert len(scans) == 2 and scans[1] == int(0.8 * cache_limit_bytes())


def test_prune_deletes_folder_entries_and_skips_writes_in_progress(tmp_path):
    for index, name in enumerate(["ab/old", "ab/new", "cd/.tmp-writing"]):
        folder = tmp_path / name
        folder.mkdir(parents=True)
        (folder / "data.bin").write_bytes(b"x" * 1000)
        os.utime(folder, (1000 + index, 1000 + index))
    assert prune(tmp_path, depth=2, max_bytes=1500) == 1000
    assert not (tmp_path / "ab" / "old").exists() and (tmp_path / "ab" / "new").exists()
    assert (tmp_path / "cd" / ".tmp-writing").exists()


def test_cache_cap_setting_is_checked(monkeypatch):
    monkeypatch.setenv("TGIF_CACHE_MAX_MB", "lots")
    with pytest.raises(TgifError, match="TGIF_CACHE_MAX_MB must be a number"):
        cache_limit_bytes()
    monkeypatch.setenv("TGIF_CACHE_MAX_MB", "2")
    assert cache_limit_bytes() == 2 * 2**20
