"""A process killed with SIGKILL in the middle of a propagation loses nothing that was accepted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_medprompt.session import AnnotationSession
from napari_medprompt.session.store import SLICE_DIR
from tests.session._recovery_worker import KIDNEY_SLICES, LIVER_SLICES
from tests.session._synthetic import KEY, SHAPE, kidney, liver

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL (POSIX)")


def _run_and_kill(folder: Path, kill_after_steps: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.session._recovery_worker", str(folder)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        steps = 0
        while steps < kill_after_steps:
            line = proc.stdout.readline()
            if not line:
                raise AssertionError(f"worker exited early: {proc.stderr.read()}")
            if line.startswith("STEP"):
                steps = int(line.split()[1])
            assert time.monotonic() < deadline, "worker too slow"
        os.kill(proc.pid, signal.SIGKILL)  # mid-loop: saves are in flight all the time
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("kill_after_steps", [3, 37, 150])
def test_killed_process_keeps_all_accepted_work(tmp_path, kill_after_steps):
    folder = tmp_path / "ct.medprompt"
    _run_and_kill(folder, kill_after_steps)

    manifest = json.loads((folder / "session.json").read_text())  # complete, parseable JSON
    entries = manifest["labels"]["slices"].values()
    for e in entries:  # every referenced byte range exists: nothing referenced is truncated
        assert (folder / SLICE_DIR / e["pack"]).stat().st_size >= e["offset"] + e["length"]

    s = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)  # verifies every CRC-32
    names = {o.name: o for o in s.objects.values()}
    liv, kid, spl = names["liver"], names["kidney"], names["spleen"]
    assert liv.locked
    for z in range(SHAPE[0]):
        want = liver(z) if z in LIVER_SLICES else np.zeros(SHAPE[1:], bool)
        np.testing.assert_array_equal(s.labels[z] == liv.id, want, err_msg=f"liver slice {z}")
    for z in KIDNEY_SLICES:
        np.testing.assert_array_equal(s.labels[z] == kid.id, kidney(z), err_msg=f"kidney slice {z}")
        assert kid.slice_status[z] == "accepted"
    assert liv.slices_with("accepted") == list(LIVER_SLICES)
    # the propagated object got some slices, and none of them took an accepted voxel
    assert (s.labels == spl.id).any()
    # leftovers of the interrupted save are cleaned when the session is reopened
    on_disk = set(os.listdir(folder / SLICE_DIR))
    assert on_disk == {v["pack"] for v in s._store.slice_files.values()}
    assert not [n for n in os.listdir(folder) if n.endswith(".tmp")]
