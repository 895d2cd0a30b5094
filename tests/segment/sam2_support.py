"""Shared helpers for the SAM2 tests: a real checkpoint file in SAM2's format, written once per run.

No pretrained weights can be downloaded here, so the tests build SAM2.1-tiny from its real config
with random weights, save ``{"model": state_dict}`` with ``torch.save`` exactly as Meta's files are
laid out, and load it through the same code a downloaded checkpoint goes through.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest

import torch  # noqa: E402  (a hard dependency: a broken install must fail, not skip)
import sam2  # noqa: E402,F401  (a hard dependency too)

MODEL = "sam2.1-hiera-tiny"
_DIR: Path | None = None
_CKPT: dict[str, Path] = {}


def checkpoint_file(model: str = MODEL) -> Path:
    """Path of a random-weights checkpoint of ``model`` in SAM2's format (one per test run)."""
    global _DIR
    if model not in _CKPT:
        from napari_medprompt.models.sam2_weights import write_random_checkpoint

        if _DIR is None:
            _DIR = Path(tempfile.mkdtemp(prefix="medprompt-sam2-ckpt-"))
            atexit.register(shutil.rmtree, _DIR, True)
        torch.set_num_threads(2)
        _CKPT[model] = write_random_checkpoint(model, _DIR / f"{model}.pt")
    return _CKPT[model]


def install_in_hf_cache(cache_root: Path, model: str = MODEL) -> Path:
    """Put the checkpoint where ``huggingface_hub`` keeps a downloaded file (offline layout)."""
    from napari_medprompt.models.sam2_weights import model_spec

    spec = model_spec(model)
    repo = cache_root / "hf" / ("models--" + spec.repo_id.replace("/", "--"))
    commit = "0" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    snap = repo / "snapshots" / commit
    snap.mkdir(parents=True, exist_ok=True)
    target = snap / spec.filename
    target.symlink_to(checkpoint_file(model))
    return target
