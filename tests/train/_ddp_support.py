"""Helpers for the torchrun tests: a MedMNIST-style archive and commands run as subprocesses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
EVAL_SCRIPT = "import sys; from napari_medprompt.train.cli import eval_main; sys.exit(eval_main())"


def npz(path: Path, n_train=12, n_val=4, n_test=6) -> Path:
    from tests.classify.synthetic import blob_task

    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1), ("test", n_test, 2)):
        t = blob_task(n, seed=seed)
        arrays[f"{split}_images"] = (t.images * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = t.labels[:, None]
    np.savez(path, **arrays)
    return path


def env(**extra) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    e.update({k: str(v) for k, v in extra.items()})
    return e


def run(module_args, *, nproc: int = 0, script: str | None = None, timeout: int = 500, **extra):
    """``python -m napari_medprompt.train.cli ARGS`` (or ``script``), under torchrun with ``nproc`` > 0."""
    tmp_script = None
    if script is not None:
        tmp_script = Path(os.environ.get("TMPDIR", "/tmp")) / f"medprompt_eval_{os.getpid()}.py"
        tmp_script.write_text(script)
    target = [str(tmp_script)] if tmp_script else ["-m", "napari_medprompt.train.cli"]
    if nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               *(target if tmp_script else ["-m", "napari_medprompt.train.cli"]), *module_args]
    else:
        cmd = [sys.executable, *target, *module_args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), cwd=REPO, timeout=timeout)


def weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path))
