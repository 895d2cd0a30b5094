"""The Segment widget driven like a user, with the classic backend on the real CT."""

from __future__ import annotations

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    stop_workers_after_test,
    click_and_preview,
    deepest_point,
    dice,
    load_backend,
    make_widget,
    press,
    reference_mask,
)


@pytest.fixture
def ct_widget(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    assert widget.ctrl.session is not None
    load_backend(qtbot, widget)
    return viewer, widget


@pytest.fixture(scope="module")
def liver():
    mask = reference_mask("liver")
    z = int(np.argmax(mask.sum(axis=(1, 2))))  # the user clicks where the liver is largest
    return mask, z, deepest_point(mask[z])


def test_click_accept_propagate_liver_then_undo(ct_widget, qtbot, liver):
    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    widget.objects.name.setCurrentText("liver")
    preview = click_and_preview(qtbot, widget, z, r, c)
    d2 = dice(preview, ref[z])
    print(f"liver slice {z}: 2D Dice {d2:.3f}")
    assert d2 > 0.85  # measured 0.914
    assert not widget.ctrl.session.labels.any()  # a preview is not a commit
    press(qtbot, widget.ui.accept)
    session, oid = widget.ctrl.session, widget.ctrl.current_object
    assert session.objects[oid].name == "liver"
    assert session.objects[oid].slice_status == {z: "prompted"}
    assert session.objects[oid].prompts[z]["points"] == [[float(r), float(c)]]
    assert np.array_equal(widget.ctrl.labels_layer.data[z] == oid, preview)
    after_accept = session.labels.copy()

    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        press(qtbot, widget.ui.propagate)
    run = blocker.args[0]
    d3 = dice(session.labels == oid, ref)
    print(f"liver 3D Dice {d3:.3f}: {len(run.results)} propagated slices, stopped at {run.lost}")
    assert d3 > 0.82  # measured 0.870
    assert run.lost, "the stop rule ends the liver by itself"
    assert np.array_equal(widget.ctrl.labels_layer.data, session.labels)
    assert {s for zz, s in session.objects[oid].slice_status.items() if zz != z} == {"propagated"}
    assert not widget.preview_layer.data.any()

    press(qtbot, widget.ui.undo)  # one undo step takes the whole propagation back, exactly
    assert np.array_equal(session.labels, after_accept)
    assert np.array_equal(widget.ctrl.labels_layer.data, after_accept)
    press(qtbot, widget.ui.redo)
    assert dice(session.labels == oid, ref) == pytest.approx(d3)
    press(qtbot, widget.ui.undo)
    press(qtbot, widget.ui.undo)
    assert not session.labels.any() and not widget.ctrl.labels_layer.data.any()


def test_cancel_stops_propagation(ct_widget, qtbot, liver):
    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    at_cancel = []

    def cancel_once(_result):
        if not at_cancel:
            at_cancel.append(len(widget.run.results))
            press(qtbot, widget.ui.cancel)

    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        press(qtbot, widget.ui.propagate)
        assert widget.ui.cancel.isEnabled() and not widget.ui.propagate.isEnabled()
        widget.run.worker.yielded.connect(cancel_once)
    run = blocker.args[0]
    assert run.cancelled
    # nothing arrives after Cancel; the uncancelled run covers 66 slices
    assert len(run.results) == at_cancel[0] <= 5
    covered = np.flatnonzero((widget.ctrl.session.labels == oid).any(axis=(1, 2)))
    assert len(covered) == 1 + len(run.results)
    assert widget.ui.propagate.isEnabled() and not widget.ui.cancel.isEnabled()


def test_locked_object_survives_another_objects_propagation(ct_widget, qtbot, liver):
    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    session = widget.ctrl.session
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    a = widget.ctrl.current_object
    a_mask = session.labels[z] == a
    widget.objects.locked.setChecked(True)  # "finished (locked)"
    assert session.objects[a].locked

    widget.objects.name.setCurrentText("tumour / lesion")
    press(qtbot, widget.objects.new_button)
    b = widget.ctrl.current_object
    assert b != a
    zb = z - 4
    click_and_preview(qtbot, widget, zb, *deepest_point(ref[zb]))
    press(qtbot, widget.ui.accept)
    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        press(qtbot, widget.ui.propagate)
    run = blocker.args[0]
    assert z in run.results and (run.results[z] & a_mask).sum() > 0.5 * a_mask.sum()  # B wanted A's voxels
    assert np.array_equal(session.labels[z] == a, a_mask)  # ... and did not get them
    assert (session.labels == b).any()
    # a locked object cannot be re-propagated either
    widget.select_object(a)
    press(qtbot, widget.ui.propagate)
    assert widget.run is None and "locked" in widget.messages[-1][1]


def test_hand_edit_is_recorded_and_undone(ct_widget, qtbot, liver):
    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    session = widget.ctrl.session
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    before = session.labels.copy()
    layer = widget.ctrl.labels_layer
    assert layer.selected_label == oid
    layer.brush_size = 6
    layer.paint((z + 1, r, c), oid)  # napari's own paint tool on the next slice
    qtbot.waitUntil(lambda: widget.edits.n_edits == 1)
    assert session.labels[z + 1].any() and session.objects[oid].slice_status[z + 1] == "edited"
    assert np.array_equal(layer.data, session.labels)
    layer.paint((z, r, c), 0)  # erase a hole into the accepted slice
    qtbot.waitUntil(lambda: widget.edits.n_edits == 2)
    assert session.objects[oid].slice_status[z] == "edited"
    press(qtbot, widget.ui.undo)
    press(qtbot, widget.ui.undo)
    assert np.array_equal(session.labels, before) and np.array_equal(layer.data, before)


def test_window_preset_changes_only_contrast(ct_widget, qtbot):
    viewer, widget = ct_widget
    image = widget.ctrl.image_layer
    data_before = image.data.copy()
    assert widget.ui.window.currentText() == "soft_tissue"
    widget.set_window("lung")
    assert tuple(image.contrast_limits) == pytest.approx((-1350.0, 150.0))
    assert widget.ui.window.currentText() == "lung"
    assert np.array_equal(image.data, data_before)


def test_session_restore_offer(make_napari_viewer, qtbot, tmp_path, monkeypatch, liver):
    ref, z, (r, c) = liver
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    load_backend(qtbot, widget)
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    saved = widget.ctrl.session.labels.copy()
    assert saved.any() and widget.ctrl.session.folder.is_dir()
    viewer.close()

    asked = []
    viewer2, widget2 = make_widget(make_napari_viewer, monkeypatch, tmp_path, restore=True)
    assert np.array_equal(widget2.ctrl.session.labels, saved)
    assert np.array_equal(widget2.ctrl.labels_layer.data, saved)
    assert widget2.ctrl.session.objects and "Restored" in widget2.messages[-1][1]
    del asked
    # the restored object is selected: the next click refines it instead of creating a second liver
    session = widget2.ctrl.session
    (oid,) = session.objects
    assert widget2.ctrl.current_object == oid
    assert widget2.objects.current_id() == oid
    load_backend(qtbot, widget2)
    click_and_preview(qtbot, widget2, z - 1, r, c)
    press(qtbot, widget2.ui.accept)
    assert list(session.objects) == [oid] and (session.labels[z - 1] == oid).any()
    # a new object never takes a name already used
    widget2.objects.name.setCurrentText("liver")
    new = widget2.new_object()
    assert session.objects[new].name == "liver 2" and session.objects[oid].name == "liver"


def test_box_prompt_from_the_shapes_layer(ct_widget, qtbot, liver):
    viewer, widget = ct_widget
    ref, z, _ = liver
    kidney = reference_mask("kidney_left")
    zk = int(np.argmax(kidney.sum(axis=(1, 2))))
    rows, cols = np.nonzero(kidney[zk])
    widget.ctrl.jump_to_slice(zk)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_box(zk, rows.min() - 2, cols.min() - 2, rows.max() + 2, cols.max() + 2)
    preview = widget.preview_layer.data[zk] > 0
    d = dice(preview, kidney[zk])
    print(f"left kidney from a box on slice {zk}: Dice {d:.3f}")
    assert d > 0.8
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    assert widget.ctrl.session.objects[oid].prompts[zk]["box"] is not None
    assert len(widget.prompts.shapes.data) == 0  # accepted prompts are cleared from the layers


def test_propagation_is_saved_in_chunks_as_one_undo_step(ct_widget, qtbot, liver):
    """Propagated slices reach the session folder while the run goes on (a crash mid-run keeps
    them), yet the whole run is still one undo step; the viewer's progress bar is not updated per
    slice."""
    from napari_medprompt._qt.segment.propagation import CHUNK_SLICES
    from napari_medprompt.session import AnnotationSession

    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    session = widget.ctrl.session
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    after_accept = session.labels.copy()
    on_disk_during_run = []

    def saved(event):
        if event.kind == "saved" and widget.run is not None:  # a save that finished mid-run
            on_disk = AnnotationSession.load(session.folder, image_key=session.image_key, shape=session.shape)
            on_disk_during_run.append(int(((on_disk.labels == oid).any(axis=(1, 2))).sum()))

    session.on_change(saved)
    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        press(qtbot, widget.ui.propagate)
    run = blocker.args[0]
    assert len(run.results) > 2 * CHUNK_SLICES
    assert on_disk_during_run and max(on_disk_during_run) > 1, "chunks were saved before the run ended"
    assert session.autosave and not session.unsaved_slices  # the last chunk is on disk at the end
    on_disk = AnnotationSession.load(session.folder, image_key=session.image_key, shape=session.shape)
    np.testing.assert_array_equal(on_disk.labels, session.labels)
    assert on_disk.objects[oid].slice_status == session.objects[oid].slice_status
    press(qtbot, widget.ui.undo)
    np.testing.assert_array_equal(session.labels, after_accept)
    np.testing.assert_array_equal(widget.ctrl.labels_layer.data, after_accept)


def test_file_save_of_the_segmentation_layer_overlays_the_source(ct_widget, qtbot, liver, tmp_path):
    """napari's own File > Save on the segmentation layer writes the CT's affine and the names."""
    import json

    import nibabel as nib

    from tests._qt._helpers import CT
    from tests.conftest import shared_file

    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    widget.objects.name.setCurrentText("liver")
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    layer = widget.ctrl.labels_layer
    assert layer.metadata["medprompt"]["affine"] == widget.ctrl.image_layer.metadata["medprompt"]["affine"]
    assert layer.metadata["label_names"] == {oid: "liver"}
    widget._rename(oid, "liver (segment 1)")
    assert layer.metadata["label_names"] == {oid: "liver (segment 1)"}

    out = tmp_path / "seg.nii.gz"
    layer.save(str(out), plugin="napari-medprompt")
    src, saved = nib.load(str(shared_file(CT))), nib.load(str(out))
    np.testing.assert_allclose(saved.affine, src.affine, atol=1e-4)
    assert saved.shape == src.shape
    data = np.asarray(saved.dataobj)
    assert (data == oid).sum() == (widget.ctrl.session.labels == oid).sum() > 0
    sidecar = json.loads((tmp_path / "seg.json").read_text())
    assert [(d["id"], d["name"]) for d in sidecar["labels"]] == [(oid, "liver (segment 1)")]


def test_fast_engine_predicts_on_the_main_thread_with_the_same_result(ct_widget, qtbot, liver):
    """After a prediction that took < INLINE_PREDICT_S, the next click skips the worker round trip;
    the preview is the same as through the worker, and a slow engine goes back to the worker."""
    viewer, widget = ct_widget
    ref, z, (r, c) = liver
    first = click_and_preview(qtbot, widget, z, r, c)
    assert widget.last_latency["inline"] is False  # nothing known about the engine yet
    widget.clear_prompts()
    widget._last_engine_s = 0.001  # as after a fast prediction
    with qtbot.waitSignal(widget.preview_updated, timeout=1) as blocker:  # shown before add_point returns
        widget.prompts.add_point(z, r, c)
    assert blocker.signal_triggered and widget.last_latency["inline"] is True
    np.testing.assert_array_equal(widget.preview_layer.data[z] > 0, first)
    widget.clear_prompts()
    widget._last_engine_s = 1.0  # a slow engine: back to the worker
    click_and_preview(qtbot, widget, z, r, c)
    assert widget.last_latency["inline"] is False
