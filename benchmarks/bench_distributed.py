"""Group ``distributed``: torchrun with 2 processes against 1 on this machine.

- ``distributed.features_throughput``: cached-feature extraction (test-vit-tiny, random weights),
  sharded with DistributedSampler and gathered once; images/s, 2 processes vs 1 (ratio).
- ``distributed.embed_throughput``: ``medprompt-embed`` (SAM2.1-tiny, random weights, per-rank file
  lists) on a small cohort; computed slices/s, 2 processes vs 1 (ratio).

Each process runs one thread (OMP_NUM_THREADS=1). On a 2-core machine shared with other work the
ratio shows the overhead of a second process (start-up, Gloo rendezvous, gather) more than a
speed-up; on a GPU node run the same with ``--device cuda`` for scaling per GPU. Times are measured
inside the workers (after start-up and model build), medians of the repeats.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.runner import Record, median

REPO = Path(__file__).resolve().parents[1]


def _env(cache: str | None = None) -> dict:
    e = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    if cache:
        e["MEDPROMPT_CACHE_DIR"] = cache
    return e


def _torchrun(nproc: int, target: list[str], env: dict) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *target]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-2000:])
    return json.loads(r.stdout[r.stdout.index("{"):])


def run(args) -> list[Record]:
    quick = bool(getattr(args, "quick", False))
    repeats = 1 if quick else 3
    n_images = 64 if quick else 128
    rates = {}
    for nproc in (1, 2):
        rs = []
        for _ in range(repeats):
            out = _torchrun(nproc, [str(REPO / "benchmarks" / "distributed_worker.py"), str(n_images)], _env())
            rs.append(out["images"] / out["seconds"])
        rates[nproc] = median(rs)
    recs = [Record("distributed.features_throughput", "images_per_s_2proc", rates[2], "images/s", baseline=rates[1],
                   notes=f"test-vit-tiny random weights, {n_images} images, 1 thread per process; baseline = 1 process")]

    import nibabel as nib
    import numpy as np

    n_files, n_slices = (2, 2) if quick else (4, 2)
    srates = {}
    with tempfile.TemporaryDirectory() as tmp:
        vols = Path(tmp) / "vols"
        vols.mkdir()
        for i in range(n_files):
            a = (np.random.RandomState(i).rand(n_slices, 64, 64) * 400 - 100).astype(np.int16)
            nib.save(nib.Nifti1Image(a.T, np.diag([0.8, 0.8, 2.5, 1])), str(vols / f"case{i}.nii.gz"))
        for nproc in (1, 2):
            rs = []
            for rep in range(1 if quick else 2):
                cache = str(Path(tmp) / f"cache{nproc}_{rep}")
                out = _torchrun(nproc, ["-m", "napari_medprompt.segment.embed", str(vols), "--checkpoint", "random",
                                        "--device", "cpu", "--quiet", "--encoder-dtype", "float32"], _env(cache))
                rs.append(out["computed_slices_per_s"])
            srates[nproc] = median(rs)
    recs.append(Record("distributed.embed_throughput", "slices_per_s_2proc", srates[2], "slices/s", baseline=srates[1],
                       notes=f"SAM2.1-tiny random weights, float32 encoder, {n_files} files x {n_slices} slices, "
                             "1 thread per process; baseline = 1 process"))
    return recs
