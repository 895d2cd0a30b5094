"""medprompt-embed: SAM2 embeddings for a folder of volumes, in the cache the plugin reads (same key,
same signature), skipping what is cached, the same slices from two torchrun processes as from one,
unreadable files counted and fatal above the threshold, an unwritable cache refused up front."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
import nibabel as nib

REPO = Path(__file__).resolve().parents[2]


def _cohort(folder: Path, n: int = 3, slices: int = 2, bad: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = (np.random.RandomState(i).rand(slices, 40, 40) * 400 - 100).astype(np.int16)
        nib.save(nib.Nifti1Image(a.T, np.diag([0.8, 0.8, 2.5, 1])), str(folder / f"case{i}.nii.gz"))
    for j in range(bad):
        (folder / f"broken{j}.nii.gz").write_bytes(b"not a nifti file")
    return folder


def _env(cache: Path) -> dict:
    return {**os.environ, "MEDPROMPT_CACHE_DIR": str(cache), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "PYTHONPATH": str(REPO)}


def _run(args, cache: Path, torchrun: int = 0, timeout: int = 400):
    cmd = [sys.executable, "-m", "napari_medprompt.segment.embed", *args]
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "napari_medprompt.segment.embed", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(cache), cwd=REPO, timeout=timeout)


def _slices(root: Path) -> dict:
    from safetensors.torch import load_file

    return {(p.parent.name, p.name): load_file(str(p)) for p in sorted(root.glob("*/slice_*.safetensors"))}


def test_embed_single_then_skip_then_plugin_reads_without_encoding(tmp_path, monkeypatch):
    vols = _cohort(tmp_path / "vols", n=2, slices=2, bad=1)
    cache = tmp_path / "cache"
    r = _run([str(vols), "--checkpoint", "random", "--device", "cpu", "--quiet", "--max-unreadable", "0.5",
              "--encoder-dtype", "float32"], cache)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert (s["files"], s["volumes"], s["slices"], s["computed"], s["cached"], s["unreadable"]) == (2, 2, 4, 4, 0, 1)
    assert s["random_weights"] is True and "RANDOM" in r.stderr and "broken0.nii.gz" in r.stderr
    root = cache / "sam2_embeddings"
    assert len(_slices(root)) == 4
    # a second run finds everything cached
    r2 = _run([str(vols / "case0.nii.gz"), str(vols / "case1.nii.gz"), "--checkpoint", "random", "--device", "cpu",
               "--quiet", "--encoder-dtype", "float32"], cache)
    s2 = json.loads(r2.stdout)
    assert (s2["computed"], s2["cached"], s2["unreadable"]) == (0, 4, 0), r2.stderr

    # the plugin: the backend loaded as the Segment dock loads it reads the folder, bound as the dock binds
    monkeypatch.setenv("MEDPROMPT_CACHE_DIR", str(cache))
    from napari_medprompt.io.napari_hooks import read_layers
    from napari_medprompt.segment.embed import plugin_binding, plugin_cache_dir
    from napari_medprompt.segment.embedding_cache import image_digest
    from napari_medprompt.segment.registry import create_segmenter
    from napari_medprompt.session import content_key

    assert plugin_cache_dir() == root
    seg = create_segmenter("sam2.1-hiera-tiny", checkpoint="random", device="cpu", cache_dir=plugin_cache_dir(),
                           encoder_bf16=False)
    data, kw, kind = read_layers(str(vols / "case1.nii.gz"))[0]
    from napari_medprompt.io.layers import volume_from_layer

    vol = volume_from_layer(np.asarray(data), kw["metadata"], kw["scale"])
    # the session key the dock uses (session_binding.open_session): content of the layer's array
    sh, sp = tuple(vol.spatial_shape), tuple(float(x) for x in vol.spacing)
    assert plugin_binding(vol)["key"] == content_key(image_digest(np.asarray(data)), sh, sp)
    preset = kw["metadata"]["medprompt"]["window_preset"]
    seg.bind(np.asarray(data), modality=vol.modality, spacing=vol.spacing,
             key=content_key(image_digest(np.asarray(data)), sh, sp), display_preset=preset)
    f0 = seg.features(0)
    f1 = seg.features(1)
    assert seg.encoder_calls == 0 and seg.cache.disk_hits == 2 and not seg.cache.rejected_disk_cache
    fresh = seg._encode(1)
    np.testing.assert_allclose(f1["fpn2"].float().numpy(), fresh["fpn2"].float().numpy(), atol=2e-2)
    assert f0["fpn0"].shape[-1] == 256


def test_embed_torchrun_two_processes_match_one(tmp_path):
    vols = _cohort(tmp_path / "vols", n=3, slices=2)
    one, two = tmp_path / "c1", tmp_path / "c2"
    args = [str(vols), "--checkpoint", "random", "--device", "cpu", "--quiet", "--encoder-dtype", "float32"]
    r1 = _run(args, one)
    r2 = _run(args, two, torchrun=2)
    assert r1.returncode == 0, r1.stderr
    assert r2.returncode == 0, r2.stderr
    s1, s2 = json.loads(r1.stdout), json.loads(r2.stdout)  # one summary: rank 0's, with summed counts
    assert s2["processes"] == 2 and (s2["files"], s2["slices"], s2["computed"]) == (3, 6, 6)
    a, b = _slices(one / "sam2_embeddings"), _slices(two / "sam2_embeddings")
    assert a.keys() == b.keys() and len(a) == 6
    for k in a:
        for level in ("fpn0", "fpn1", "fpn2"):
            np.testing.assert_allclose(a[k][level].float().numpy(), b[k][level].float().numpy(), atol=1e-2)


def test_embed_bad_input(tmp_path):
    vols = _cohort(tmp_path / "vols", n=1, slices=1, bad=2)
    r = _run([str(vols), "--checkpoint", "random", "--device", "cpu", "--quiet"], tmp_path / "c")
    assert r.returncode == 2 and "could not be read, more than --max-unreadable 0.1" in r.stderr
    assert "broken0.nii.gz" in r.stderr
    # an output folder that cannot be written (works as root too: its parent is a file)
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    r = _run([str(vols / "case0.nii.gz"), "--checkpoint", "random", "--cache-dir", str(blocker / "emb"), "--quiet"],
             tmp_path / "c")
    assert r.returncode == 2 and "cannot write to the embedding cache" in r.stderr
    r = _run([str(tmp_path / "nothing-here")], tmp_path / "c")
    assert r.returncode == 2 and "no such file or folder" in r.stderr
