"""torchrun with two Gloo processes on this CPU gives the one-process result (train, eval), writes once
(rank 0), and a rank that dies ends the run with a clear message and no half-written file; the same
with NCCL on a GPU machine (marked gpu)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.train._ddp_support import EVAL_SCRIPT, npz, run, weights

ARGS = ["--method", "linear-probe", "--backbone", "test-vit-tiny", "--pretrained", "random", "--epochs", "3",
        "--batch-size", "5", "--lr", "0.05", "--quiet", "--seeds", "0"]


def _train_and_eval(tmp_path: Path, nproc: int, device: str = "cpu", tag: str = ""):
    data = npz(tmp_path / "d.npz") if not (tmp_path / "d.npz").exists() else tmp_path / "d.npz"
    out = tmp_path / f"run{nproc}{tag}"
    r = run(["--data", str(data), "--out", str(out), "--device", device, *ARGS], nproc=nproc)
    assert r.returncode == 0, r.stdout + r.stderr
    ev = run(["--checkpoint", str(out / "adapter.safetensors"), "--data", str(data), "--device", device,
              "--out", str(out / "eval")], nproc=nproc, script=EVAL_SCRIPT)
    assert ev.returncode == 0, ev.stdout + ev.stderr
    return out, r, ev


def _compare(a: Path, b: Path, atol: float):
    wa, wb = weights(a / "adapter.safetensors"), weights(b / "adapter.safetensors")
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0)
    sa, sb = (json.loads((d / "summary.json").read_text()) for d in (a, b))
    ra, rb = sa["runs"][0], sb["runs"][0]
    assert ra["best_epoch"] == rb["best_epoch"] and ra["n_train"] == rb["n_train"]
    for split in ("val", "test"):
        for m in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
            assert ra[split][m] == pytest.approx(rb[split][m], abs=1e-6)
    ea, eb = (json.loads((d / "eval" / "metrics.json").read_text()) for d in (a, b))
    assert ea["n"] == eb["n"] == 12
    for m in ("accuracy", "balanced_accuracy", "macro_f1", "auroc"):
        assert ea[m] == pytest.approx(eb[m], abs=1e-6)
        assert ea[m] == pytest.approx(ra["test"][m], abs=1e-6)  # eval of the checkpoint = the run's test metrics


def test_torchrun_two_gloo_processes_match_one(tmp_path):
    one, _, _ = _train_and_eval(tmp_path, 0)
    two, r2, ev2 = _train_and_eval(tmp_path, 2)
    _compare(one, two, atol=1e-5)
    assert "2 processes (gloo)" in r2.stderr
    # rank 0 alone wrote: one checkpoint, one summary, one table; output printed once
    assert sorted(p.name for p in two.glob("adapter*.safetensors")) == ["adapter.safetensors"]
    assert r2.stdout.count("val balanced_accuracy") == 1
    assert (two / "results.csv").exists() and (two / "results.md").exists()
    md = (two / "eval" / "results.md").read_text()
    assert "| linear-probe on test-vit-tiny (test) | 1 |" in md and "RANDOM" in md
    assert ev2.stdout.count('"balanced_accuracy"') == 1


def test_torchrun_rank_that_dies_gives_clear_message_and_no_half_file(tmp_path):
    data = npz(tmp_path / "d.npz")
    out = tmp_path / "run"
    r = run(["--data", str(data), "--out", str(out), "--device", "cpu", *ARGS, "--epochs", "4"], nproc=2,
            MEDPROMPT_FAULT_AT="1:4", MEDPROMPT_DIST_TIMEOUT_S="60")
    assert r.returncode != 0
    text = r.stdout + r.stderr
    assert "rank 1: failing on purpose at step 4" in text
    assert "Signal 9 (SIGKILL)" in text and "rank      : 1" in text  # torchrun names the failed rank
    assert "another rank failed" in text  # the surviving rank says why it stops
    assert not list(out.glob("adapter*.safetensors")) and not (out / "summary.json").exists()
    assert not [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]  # no temp leftovers
    if (out / "resume_state.pt").exists():  # the last complete epoch's state, whole
        state = torch.load(out / "resume_state.pt", weights_only=True)
        assert state["epoch"] >= 1 and not state["finished"]


def test_torchrun_method_running_the_encoder_every_step(tmp_path):
    """vpt-shallow trains prompts inside the encoder (no cached features): DDP over its prompt tokens."""
    data = npz(tmp_path / "d.npz")
    args = [a for a in ARGS if a != "linear-probe"]
    args[args.index("--method") + 1 : args.index("--method") + 1] = ["vpt-shallow"]
    outs = []
    for nproc in (0, 2):
        out = tmp_path / f"vpt{nproc}"
        r = run(["--data", str(data), "--out", str(out), "--device", "cpu", *args, "--epochs", "2"], nproc=nproc)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    wa, wb = (weights(o / "adapter.safetensors") for o in outs)
    assert wa.keys() == wb.keys() and wa
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=0)


@pytest.mark.gpu
def test_torchrun_two_nccl_processes_match_one(tmp_path):
    if torch.cuda.device_count() < 1:
        pytest.skip("needs a CUDA GPU")
    n = min(2, torch.cuda.device_count())
    one, _, _ = _train_and_eval(tmp_path, 0, device="cuda")
    two, r2, _ = _train_and_eval(tmp_path, n, device="cuda", tag="gpu")
    if n == 2:
        assert "(nccl)" in r2.stderr
    _compare(one, two, atol=1e-3)  # AMP on CUDA
    assert np.isfinite(json.loads((two / "summary.json").read_text())["runs"][0]["test"]["auroc"])
