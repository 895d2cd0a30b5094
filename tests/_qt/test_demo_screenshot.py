"""`python -m napari_medprompt.demo --screenshot` renders the docked widgets over the sample CT."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
def test_demo_screenshot_is_written_and_not_blank(tmp_path):
    from PIL import Image

    out = tmp_path / "demo.png"
    env = {**os.environ, "MEDPROMPT_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "napari_medprompt.demo", "--screenshot", str(out), "--no-learn"],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert out.is_file() and out.stat().st_size < 500 * 1024
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    assert img.shape[0] >= 900 and img.shape[1] >= 1500  # the whole window, not just the canvas
    assert img.std() > 20  # not blank
    # the accepted liver is drawn in its object colour (orange, 0.902/0.624/0.0) over the CT
    liver = (abs(img[..., 0] - 230) < 40) & (abs(img[..., 1] - 159) < 40) & (img[..., 2] < 90)
    assert liver.sum() > 5000
    # and the CT itself is visible (grey pixels of many different levels)
    grey = (abs(img[..., 0] - img[..., 1]) < 4) & (abs(img[..., 1] - img[..., 2]) < 4)
    assert len(np.unique(img[grey][:, 0])) > 64


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (run under xvfb-run)")
def test_demo_with_learning_shows_the_heat_map_and_the_learn_dock(tmp_path):
    """The default demo trains a classifier on the segmented organs and overlays its heat map."""
    from PIL import Image

    out = tmp_path / "demo_learn.png"
    env = {**os.environ, "MEDPROMPT_CACHE_DIR": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "napari_medprompt.demo", "--screenshot", str(out)],
        env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "RANDOM" in proc.stderr  # the random-weights backbone is said in the log
    img = np.asarray(Image.open(out).convert("RGB")).astype(int)
    h, w = img.shape[:2]
    canvas = img[: int(h * 0.9), int(w * 0.25): int(w * 0.7)]
    # the heat map (inferno, additive) tints the CT: warm pixels where the grey image alone has none
    warm = (canvas[..., 0] - canvas[..., 2] > 40) & (canvas[..., 0] > 120)
    assert warm.sum() > 3000
    # the per-slice probability plot in the Learn dock: its two class curves (blue and orange)
    dock = img[:, int(w * 0.72):]
    blue = (abs(dock[..., 0] - 86) < 30) & (abs(dock[..., 1] - 180) < 30) & (dock[..., 2] > 200)
    orange = (dock[..., 0] > 200) & (abs(dock[..., 1] - 159) < 30) & (dock[..., 2] < 60)
    assert blue.sum() > 200 and orange.sum() > 200
