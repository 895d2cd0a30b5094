"""Shared fixtures: the real-data folder ``../shared/data`` (tests skip cleanly when it is absent)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# The GUI tests load Mesa's llvmpipe (libLLVM) into this process; triton, which torchvision imports
# when it is installed, carries its own LLVM and segfaults on import once Mesa's is loaded. No test
# uses triton (nothing is compiled with torch.compile), so it is made unimportable for the test run,
# as the widgets do at run time (napari_medprompt._qt.segment.backend_panel.avoid_llvm_clash).
if os.environ.get("MEDPROMPT_TEST_TRITON") != "1" and "triton" not in sys.modules:
    sys.modules["triton"] = None

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
