"""An interrupted run (SIGKILL after some steps) resumes from its last epoch state and ends with the
same steps and weights as an uninterrupted run; a resume from another recipe's state is refused; bad
input gives a clear message and writes nothing."""

from __future__ import annotations

import json
import signal

import torch

from tests.train._ddp_support import npz, run, weights

ARGS = ["--method", "linear-probe", "--backbone", "test-vit-tiny", "--pretrained", "random", "--epochs", "4",
        "--batch-size", "4", "--lr", "0.05", "--quiet", "--seeds", "0", "--device", "cpu"]


def test_killed_run_resumes_to_the_same_weights_and_other_recipe_is_refused(tmp_path):
    data = npz(tmp_path / "d.npz")
    full, cut = tmp_path / "full", tmp_path / "cut"
    r = run(["--data", str(data), "--out", str(full), *ARGS])
    assert r.returncode == 0, r.stderr
    # 24 images, batch 4: 6 steps per epoch; killed (SIGKILL) after step 15, inside epoch 3
    k = run(["--data", str(data), "--out", str(cut), *ARGS], MEDPROMPT_FAULT_AT="0:15")
    assert k.returncode == -signal.SIGKILL
    state = torch.load(cut / "resume_state.pt", weights_only=True)
    assert (state["epoch"], state["done_steps"], state["finished"]) == (2, 12, False)
    assert not (cut / "adapter.safetensors").exists()
    # another recipe (other lr) is refused, naming the difference; nothing written
    bad = run(["--data", str(data), "--out", str(cut), *ARGS, "--lr", "0.01", "--resume"])
    assert bad.returncode == 2 and "another recipe" in bad.stderr and "lr" in bad.stderr
    assert not (cut / "adapter.safetensors").exists()
    res = run(["--data", str(data), "--out", str(cut), *ARGS, "--resume"])
    assert res.returncode == 0, res.stderr
    assert "resumed after epoch 2 (12 steps)" in res.stderr
    wa, wb = weights(full / "adapter.safetensors"), weights(cut / "adapter.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-6, rtol=0)
    fin = torch.load(cut / "resume_state.pt", weights_only=True)
    assert (fin["epoch"], fin["done_steps"], fin["finished"]) == (4, 24, True)
    ha = json.loads((full / "adapter.safetensors.json").read_text())["metrics"]["history"]
    hb = json.loads((cut / "adapter.safetensors.json").read_text())["metrics"]["history"]
    assert [h["epoch"] for h in hb] == [1, 2, 3, 4]
    assert [round(h["train_loss"], 6) for h in ha] == [round(h["train_loss"], 6) for h in hb]
    # resuming a finished run writes nothing new
    again = run(["--data", str(data), "--out", str(cut), *ARGS, "--resume"])
    assert again.returncode == 0, again.stderr
    assert sorted(p.name for p in cut.glob("adapter*.safetensors")) == ["adapter.safetensors"]


def test_bad_input_messages(tmp_path):
    data = npz(tmp_path / "d.npz")
    cfg = tmp_path / "r.yaml"
    cfg.write_text("method: no-such-method\nbackbone: test-vit-tiny\npretrained: random\n")
    r = run(["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "o"), "--quiet"])
    assert r.returncode == 2 and "no-such-method" in r.stderr and "linear-probe" in r.stderr
    assert not (tmp_path / "o").exists()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    r = run(["--data", str(data), "--out", str(blocker / "o"), *ARGS])
    assert r.returncode == 2 and "cannot write to" in r.stderr
    one = tmp_path / "one"
    (one / "only").mkdir(parents=True)
    from PIL import Image
    import numpy as np

    for i in range(3):
        Image.fromarray((np.random.RandomState(i).rand(16, 16) * 255).astype(np.uint8)).save(one / "only" / f"{i}.png")
    r = run(["--data", str(one), "--out", str(tmp_path / "o2"), *ARGS])
    assert r.returncode == 2 and "two classes" in r.stderr
    assert not list((tmp_path / "o2").glob("adapter*")) if (tmp_path / "o2").exists() else True


def test_unreadable_images_skipped_with_count_then_fatal(tmp_path):
    import numpy as np
    import pytest
    from PIL import Image

    from napari_medprompt.train.data import DataError, from_folder

    root = tmp_path / "cls"
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray((np.random.RandomState(i).rand(16, 16) * 255).astype(np.uint8)).save(root / c / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"not a png")
    d = from_folder(root)
    assert len(d) == 24 and len(d.unreadable) == 1 and "broken.png" in d.unreadable[0]
    r = run(["--data", str(root), "--out", str(tmp_path / "o"), *ARGS, "--epochs", "1"])
    assert r.returncode == 0, r.stderr
    assert "skipped 1 unreadable image(s) (at most 5% allowed)" in r.stderr and "broken.png" in r.stderr
    for i in range(2):
        (root / "b" / f"broken{i}.png").write_bytes(b"")
    with pytest.raises(DataError, match=r"3 of 27 image files .* cannot be read, more than 5%"):
        from_folder(root)
    r = run(["--data", str(root), "--out", str(tmp_path / "o2"), *ARGS, "--epochs", "1"])
    assert r.returncode == 2 and "cannot be read, more than 5%" in r.stderr
    assert not (tmp_path / "o2").exists() or not list((tmp_path / "o2").iterdir())


def test_torchrun_run_with_a_lost_rank_resumes_to_the_one_process_weights(tmp_path):
    """Two Gloo processes, rank 1 killed inside epoch 3: torchrun ends the run; a --resume under torchrun
    continues after epoch 2 and ends with the weights of an uninterrupted one-process run."""
    data = npz(tmp_path / "d.npz")
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert run(["--data", str(data), "--out", str(full), *ARGS]).returncode == 0
    k = run(["--data", str(data), "--out", str(cut), *ARGS], nproc=2, MEDPROMPT_FAULT_AT="1:15",
            MEDPROMPT_DIST_TIMEOUT_S="60")
    assert k.returncode != 0 and not (cut / "adapter.safetensors").exists()
    assert torch.load(cut / "resume_state.pt", weights_only=True)["epoch"] == 2
    res = run(["--data", str(data), "--out", str(cut), *ARGS, "--resume"], nproc=2)
    assert res.returncode == 0, res.stderr
    assert "resumed after epoch 2 (12 steps)" in res.stderr
    wa, wb = weights(full / "adapter.safetensors"), weights(cut / "adapter.safetensors")
    for key in wa:
        torch.testing.assert_close(wa[key], wb[key], atol=1e-5, rtol=0)
