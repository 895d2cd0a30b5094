"""Shared fixtures: the real-data folder ``../shared/data`` (tests skip cleanly when it is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MEDPROMPT_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests must never reach for weights on the network; the real download code is exercised with
# local files written by the tests.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_file(rel: str) -> Path:
    """Path to a file in ../shared/data, or skip the test when it is not there."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"real test data not available: {p}")
    return p


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data folder not available: {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own weight cache so nothing leaks between tests or to the user's cache."""
    monkeypatch.setenv("MEDPROMPT_CACHE_DIR", str(tmp_path_factory.mktemp("medprompt-cache")))
