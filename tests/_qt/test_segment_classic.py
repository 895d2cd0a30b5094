"""The Segment widget driven like a user, with the classic backend on the real CT (liver)."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medprompt._qt.segment_widget import SegmentWidget
from tests._qt._helpers import add_real_ct, deepest_point, dice, load_backend, reference_mask


@pytest.fixture
def ct_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    monkeypatch.setattr(SegmentWidget, "ask_restore", staticmethod(lambda folder: True))
    viewer = make_napari_viewer()
    layer, vol = add_real_ct(viewer)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    # the session folder goes to the per-test cache (the shared data folder is not ours to write)
    assert widget.ctrl.session is not None
    widget.ctrl.session.set_folder(tmp_path / "session", save=False)
    load_backend(qtbot, widget)
    return viewer, widget


def test_click_accept_propagate_liver(ct_widget, qtbot):
    viewer, widget = ct_widget
    liver = reference_mask("liver")
    z = int(np.argmax(liver.sum(axis=(1, 2))))  # the user clicks where the liver is largest
    widget.ctrl.jump_to_slice(z)
    r, c = deepest_point(liver[z])
    widget.objects.name.setCurrentText("liver")
    with qtbot.waitSignal(widget.preview_updated, timeout=20000):
        widget.prompts.add_point(z, r, c)
    preview = widget.preview_layer.data[z] > 0
    d2 = dice(preview, liver[z])
    print(f"liver slice {z}: 2D Dice {d2:.3f}")
    assert d2 > 0.8
    qtbot.mouseClick(widget.ui.accept, Qt.LeftButton)
    oid = widget.ctrl.current_object
    assert widget.ctrl.session.objects[oid].name == "liver"
    assert np.array_equal(widget.ctrl.labels_layer.data[z] == oid, preview)
    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        qtbot.mouseClick(widget.ui.propagate, Qt.LeftButton)
    run = blocker.args[0]
    got = widget.ctrl.session.labels == oid
    d3 = dice(got, liver)
    print(f"liver 3D Dice {d3:.3f} over {len(run.results)} propagated slices, lost at {run.lost}")
    assert np.array_equal(widget.ctrl.labels_layer.data, widget.ctrl.session.labels)
    assert d3 > 0.7
