"""Bad input in the Segment widget: a clear notification, and the viewer and the labels stay intact."""

from __future__ import annotations

import numpy as np

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    stop_workers_after_test,
    click_and_preview,
    deepest_point,
    load_backend,
    make_widget,
    press,
    reference_mask,
)


def last_error(widget, level="error"):
    msgs = [m for lv, m in widget.messages if lv == level]
    assert msgs, f"no {level} notification; got {widget.messages}"
    return msgs[-1]


def test_no_image_layer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=None)
    for button in (widget.ui.accept, widget.ui.propagate):
        press(qtbot, button)
        assert "No image" in last_error(widget) and "File > Open" in last_error(widget)
    widget.save_segmentation(tmp_path / "x.nii.gz")
    assert "No image" in last_error(widget)
    assert len(viewer.layers) == 0  # nothing was created behind the user's back
    assert not (tmp_path / "x.nii.gz").exists()


def test_2d_image_cannot_propagate(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_medprompt.io.read import read_image
    from tests.conftest import shared_file

    ct = read_image(shared_file("totalsegmentator/example_ct.nii.gz"))[0].data
    z = 106
    viewer, widget = make_widget(
        make_napari_viewer, monkeypatch, tmp_path,
        add_image=lambda v: v.add_image(np.asarray(ct[z]), name="CT slice", scale=(3.0, 3.0),
                                        contrast_limits=(-160, 240)),
    )
    load_backend(qtbot, widget)
    liver = reference_mask("liver")[z]
    r, c = deepest_point(liver)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(None, r, c)
    press(qtbot, widget.ui.accept)
    committed = widget.ctrl.session.labels.copy()
    assert committed.any() and widget.ctrl.labels_layer.data.shape == liver.shape
    press(qtbot, widget.ui.propagate)
    msg = last_error(widget)
    assert "2D" in msg and "propagate" in msg
    assert widget.run is None
    assert np.array_equal(widget.ctrl.session.labels, committed)
    assert np.array_equal(widget.ctrl.labels_layer.data, committed[0])


def test_prompt_outside_the_image(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    load_backend(qtbot, widget)
    widget.ctrl.jump_to_slice(80)
    widget.prompts.add_point(80, -40.0, 300.0)
    msg = last_error(widget, "warning")
    assert "outside" in msg and "101 x 122" in msg
    qtbot.wait(200)
    assert not widget.preview_layer.data.any() and not widget._pending
    press(qtbot, widget.ui.accept)
    assert "Nothing to accept" in last_error(widget, "warning")
    assert not widget.ctrl.session.labels.any()


def test_labels_layer_of_the_wrong_shape(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    user = viewer.add_labels(np.full((20, 30, 40), 3, dtype=np.uint8), name="my labels")
    combo = widget.ui.labels_source
    idx = combo.findText("my labels")
    assert idx > 0
    combo.setCurrentIndex(idx)
    combo.activated.emit(idx)
    msg = last_error(widget)
    assert "my labels" in msg and "(20, 30, 40)" in msg and "(112, 101, 122)" in msg
    assert (user.data == 3).all() and user.data.shape == (20, 30, 40)
    assert not widget.ctrl.session.labels.any() and not widget.ctrl.session.objects

    # a layer of the right shape is imported into the session (and itself left as it was)
    good = np.zeros((112, 101, 122), dtype=np.uint8)
    good[50:53, 40:60, 40:60] = 7
    ok = viewer.add_labels(good.copy(), name="right shape")
    idx = combo.findText("right shape")
    combo.setCurrentIndex(idx)
    combo.activated.emit(idx)
    assert np.array_equal(widget.ctrl.session.labels, good)
    assert 7 in widget.ctrl.session.objects
    assert np.array_equal(widget.ctrl.labels_layer.data, good) and np.array_equal(ok.data, good)


def test_unwritable_session_folder_keeps_the_work(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    load_backend(qtbot, widget)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the session folder should be")
    widget.ctrl.session.set_folder(blocker / "session", save=False)
    liver = reference_mask("liver")
    z = 106
    preview = click_and_preview(qtbot, widget, z, *deepest_point(liver[z]))
    press(qtbot, widget.ui.accept)
    msg = last_error(widget)
    assert "Autosave failed" in msg and "not-a-folder" in msg
    oid = widget.ctrl.current_object
    assert np.array_equal(widget.ctrl.session.labels[z] == oid, preview)  # kept in memory
    assert np.array_equal(widget.ctrl.labels_layer.data[z] == oid, preview)  # and on screen
    # the work can still be written elsewhere
    out = tmp_path / "elsewhere" / "seg.nii.gz"
    out.parent.mkdir()
    worker = widget.save_segmentation(out)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        pass
    assert out.is_file() and (out.parent / "seg.json").is_file()
