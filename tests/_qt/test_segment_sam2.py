"""The Segment widget's full SAM2 code path with a random-weight SAM2.1-tiny checkpoint file.

The checkpoint is written by the test in SAM2's own format and loaded through the same panel, loader
and worker a user's downloaded file goes through. Masks are not judged (the weights are random).
The image is the project's CT phantom on a non-square grid (no shared data needed: the test runs
everywhere and cannot skip; a height/width swap anywhere would show in the mask shapes).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from qtpy.QtCore import Qt

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    deepest_point,
    load_backend,
    make_widget,
    stop_workers_after_test,
)

MODEL = "sam2.1-hiera-tiny"
SHAPE = (9, 88, 120)  # slices, rows, columns: rows != columns


def _phantom():
    from napari_medprompt.imaging.phantom import make_abdominal_phantom

    vol, lab, names = make_abdominal_phantom(shape=SHAPE, spacing=(5.0, 3.0, 3.0))
    liver = lab == next(k for k, v in names.items() if v == "liver")
    return vol, liver


def _add_phantom(viewer):
    from napari_medprompt.io.layers import volume_to_layer_data

    vol, _ = _phantom()
    data, kwargs, _ = volume_to_layer_data(vol)
    return viewer.add_image(data, **kwargs), vol


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory):
    """A SAM2.1-tiny checkpoint file with random weights, written by a separate process.

    (Built outside the GUI process so that torch's native libraries load there in the order a user's
    napari session loads them: after the viewer, through the Segment widget.)
    """
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_hiera_tiny.pt"
    code = (
        "import sys, torch; torch.set_num_threads(2)\n"
        "from napari_medprompt.models.sam2_weights import write_random_checkpoint\n"
        f"write_random_checkpoint({MODEL!r}, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=300)
    return path


def test_sam2_click_accept_propagate(make_napari_viewer, qtbot, tmp_path, monkeypatch, random_checkpoint):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=_add_phantom)
    _, liver = _phantom()
    panel = widget.backend
    panel.backend.setCurrentText(MODEL)
    panel.random.setChecked(True)  # the random-weights choice is announced before loading
    assert panel.status.property("level") == "warn" and "RANDOM WEIGHTS" in panel.status.text()
    panel.random.setChecked(False)
    load_backend(qtbot, widget, MODEL, checkpoint=str(random_checkpoint), timeout=120000)
    seg = widget.ctrl.segmenter
    assert seg.name == MODEL and seg.device == "cpu"
    # the checkpoint file holds random weights (flagged by write_random_checkpoint): the panel says so
    assert seg.random_weights and "RANDOM WEIGHTS" in panel.status.text()

    z = int(np.argmax(liver.sum(axis=(1, 2))))
    assert 2 <= z <= SHAPE[0] - 3
    r, c = deepest_point(liver[z])
    widget.ctrl.jump_to_slice(z)
    with qtbot.waitSignal(widget.preview_updated, timeout=120000):
        widget.prompts.add_point(z, r, c)
    assert widget._pending[z].shape == SHAPE[1:]
    print(f"SAM2 click to preview {widget.last_latency}", flush=True)
    qtbot.mouseClick(widget.ui.accept, Qt.LeftButton)
    session, oid = widget.ctrl.session, widget.ctrl.current_object
    prov = session.objects[oid].provenance
    assert prov["backend"] == MODEL and prov["device"] == "cpu" and prov["random_weights"] is True
    if not (session.labels[z] == oid).any():
        # the random-weight model found nothing at the click: a box around the organ, as a user would
        # drag one, gives the seed (propagation is tested either way, never skipped)
        ys, xs = np.nonzero(liver[z])
        with qtbot.waitSignal(widget.preview_updated, timeout=120000):
            widget.prompts.add_box(z, float(ys.min()), float(xs.min()), float(ys.max()), float(xs.max()))
        qtbot.mouseClick(widget.ui.accept, Qt.LeftButton)
        oid = widget.ctrl.current_object
    assert (session.labels[z] == oid).any(), "no seed mask on the clicked slice: nothing to propagate from"

    widget.ui.whole.setChecked(False)
    widget.ui.first.setValue(z - 2)
    widget.ui.last.setValue(z + 2)
    with qtbot.waitSignal(widget.propagation_finished, timeout=240000) as blocker:
        qtbot.mouseClick(widget.ui.propagate, Qt.LeftButton)
    run = blocker.args[0]
    print(f"SAM2 propagation: {sorted(run.results)} lost {run.lost} in {run.t_end - run.t_start:.1f} s")
    assert run.error is None and not run.cancelled
    done = set(run.results) | set(run.lost)
    assert done and done <= set(range(z - 2, z + 3)) - {z}
    assert np.array_equal(widget.ctrl.labels_layer.data, session.labels)
    assert set(np.flatnonzero(session.labels.any(axis=(1, 2)))) <= set(range(z - 2, z + 3))
