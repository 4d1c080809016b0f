"""Shared test fixtures.

Tests that read the provided ``shared/`` folder use the ``data_root`` fixture, which skips
with a clear reason when the folder is absent; each such test has a sibling that runs the
same code on images built inside the test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tgif import settings


@pytest.fixture(scope="session")
def data_root() -> Path:
    """``<shared>/data``, or skip when it is not available."""
    root = settings.data_dir()
    if root is None:
        pytest.skip("shared data folder not found (set TGIF_SHARED or place shared/ beside the repo)")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    """A seeded random generator."""
    return np.random.default_rng(1234)
