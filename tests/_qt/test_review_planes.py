"""The Review dock in coronal and sagittal planes, opened from Plugins > MedPrompt > Review over a
non-square synthetic CT (z 36, y 52, x 68; spacing 2 x 1 x 1 mm) shown with every axis flipped (a RAS
file): the plane chooser lists that plane's slices (voxel count, status), a click shows that slice of
that plane, accept records the plane decision without changing a voxel, reject clears the object on
those plane slices (one undo step), and a locked object says why nothing changed."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from qtpy.QtCore import Qt

from napari_medprompt._qt.controller import controller_for
from napari_medprompt._qt.review.widget import ReviewWidget
from napari_medprompt.session import AnnotationSession
from tests._qt._helpers import dock_plugin_widget, press
from tests._qt.test_segment_planes import ORDERS, SHAPE, add_phantom, phantom

SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")  # a folder: keep the screenshots to look at
VESSEL = (slice(1, 5), slice(38, 46), slice(30, 50))  # a second object beside the mass (z 1..4)


def _open(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    image = add_phantom(viewer)
    _, mass = phantom()
    session = AnnotationSession(SHAPE, (2.0, 1.0, 1.0), image_key="phantom", image_name="phantom",
                                folder=tmp_path / "phantom.medprompt")
    oid = session.new_object("mass").id
    session.commit_slices(oid, {z: mass[z] for z in range(SHAPE[0]) if mass[z].any()}, "propagated",
                          {"backend": "classic"})
    vessel = np.zeros(SHAPE, bool)
    vessel[VESSEL] = True
    vid = session.new_object("vessel").id
    session.commit_slices(vid, {z: vessel[z] for z in range(1, 5)}, "propagated", {"backend": "classic"})
    labels = viewer.add_labels(session.labels.copy(), name="segmentation", scale=image.scale,
                               affine=image.affine.affine_matrix, opacity=0.5)
    controller_for(viewer).bind_session(session, image, labels)
    w = dock_plugin_widget(viewer, "Review")  # as Plugins > MedPrompt > Review opens it
    assert isinstance(w, ReviewWidget)
    qtbot.waitExposed(w)
    w.select_object(oid)
    return viewer, w, session, oid


def _click_row(qtbot, table, row, modifier=Qt.KeyboardModifier.NoModifier):
    table.scrollToItem(table.item(row, 0))
    rect = table.visualItemRect(table.item(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, modifier, rect.center())


def _rows(w):
    """(index, status, voxels) of the listed slices."""
    return [(w.slices.item(r, 0).data(Qt.ItemDataRole.UserRole), w.slices.item(r, 1).text(),
             w.slices.item(r, 2).data(Qt.ItemDataRole.UserRole)) for r in range(w.slices.rowCount())]


def _shown(viewer, w, axis):
    """The data index along ``axis`` of the slice the viewer shows, and the axis it slices across."""
    layer = w.ctrl.image_layer
    idx = float(layer.world_to_data(np.asarray(viewer.dims.point, float))[axis])
    return int(round(idx)), tuple(viewer.dims.not_displayed)


def test_coronal_list_click_and_accept(make_napari_viewer, qtbot, tmp_path):
    viewer, w, session, oid = _open(make_napari_viewer, qtbot, tmp_path)
    assert w.chosen_plane() == "axial" and w.slices.horizontalHeaderItem(0).text() == "Slice"
    w.plane.setCurrentIndex(w.plane.findData("coronal"))  # the user picks Coronal
    assert w.view_plane() == "coronal"  # choosing a plane shows it
    assert w.slices.horizontalHeaderItem(0).text() == "Coronal slice"
    assert w.range_label.text() == "Coronal slices from" and w.range_to.maximum() == SHAPE[1] - 1
    counts = np.count_nonzero(session.labels == oid, axis=(0, 2))
    present = [int(i) for i in np.flatnonzero(counts)]
    assert _rows(w) == [(i, "—", int(counts[i])) for i in present]
    assert (w.range_from.value(), w.range_to.value()) == (present[0], present[-1])
    # area in cm² from the coronal pixel (z 2 mm x x 1 mm)
    assert w.slices.item(0, 2).text() == f"{counts[present[0]] * 2.0 * 1.0 / 100:.2f}"

    # a click shows that coronal slice, through the flipped display
    row = len(present) // 2
    target = present[row]
    _click_row(qtbot, w.slices, row)
    assert w.view_plane() == "coronal"
    assert _shown(viewer, w, 1) == (target, (1,))
    np.testing.assert_array_equal(np.asarray(viewer.layers["segmentation"]._data_view), session.labels[:, target, :])
    assert w.slices.item(row, 0).text() == f"▶ {target}"

    before = session.labels.copy()
    press(qtbot, w.accept_selected)
    assert session.objects[oid].plane_status == {"coronal": {target: "accepted"}}
    np.testing.assert_array_equal(session.labels, before)  # accepting changes no voxel
    assert dict((i, s) for i, s, _ in _rows(w))[target] == "accepted"
    assert w.messages[-1] == ("info", f"Accepted coronal slice {target} of 'mass' (no voxel changed).")
    assert AnnotationSession.load(session.folder).objects[oid].plane_status == {"coronal": {target: "accepted"}}

    # what the clinician sees: the dock's coronal list beside the coronal view
    shots = Path(SHOTS) if SHOTS else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    viewer.window._qt_window.resize(1400, 900)
    qtbot.wait(200)
    w._mark_current_slice()
    assert w.grab().save(str(shots / "review_dock_coronal.png"))
    from skimage.io import imsave

    imsave(shots / "viewer_coronal.png", viewer.screenshot(canvas_only=False), check_contrast=False)


def test_sagittal_range_reject_clears_columns_and_undo_restores(make_napari_viewer, qtbot, tmp_path):
    viewer, w, session, oid = _open(make_napari_viewer, qtbot, tmp_path)
    viewer.dims.order = ORDERS["sagittal"]  # the user rolls the dims: the list follows
    assert w.chosen_plane() == "sagittal" and w.plane.currentText() == "Sagittal"
    counts = np.count_nonzero(session.labels == oid, axis=(0, 1))
    assert [(i, v) for i, _, v in _rows(w)] == [(int(i), int(counts[i])) for i in np.flatnonzero(counts)]
    before = session.labels.copy()
    lo, hi = 36, 44  # through the mass and the vessel (x 30..49)
    w.range_from.setValue(hi)  # the range may be given either way round
    w.range_to.setValue(lo)
    press(qtbot, w.reject_range)
    cols = np.zeros(SHAPE[2], bool)
    cols[lo:hi + 1] = True
    assert not (session.labels[:, :, cols] == oid).any()  # the mass is gone from those columns
    np.testing.assert_array_equal(session.labels[:, :, ~cols], before[:, :, ~cols])
    np.testing.assert_array_equal(session.labels == 2, before == 2)  # the vessel is kept
    np.testing.assert_array_equal(viewer.layers["segmentation"].data, session.labels)  # the display follows
    plane = session.objects[oid].plane_status["sagittal"]
    assert plane == {i: "rejected" for i in range(lo, hi + 1)}
    changed_z = int(((before == oid) & (session.labels != oid)).any(axis=(1, 2)).sum())
    assert changed_z > 0
    assert w.messages[-1] == ("info", f"Rejected {hi - lo + 1} sagittal slices between {lo} and {hi} of 'mass' "
                                      f"and cleared them ({changed_z} axial slices changed; other objects kept; "
                                      "Undo restores).")
    listed = dict((i, (s, v)) for i, s, v in _rows(w))
    assert all(listed[i] == ("rejected", 0) for i in range(lo, hi + 1))

    assert session.undo()  # one undo step brings it all back
    np.testing.assert_array_equal(session.labels, before)
    assert session.objects[oid].plane_status.get("sagittal", {}) == {}
    qtbot.waitUntil(lambda: all(s == "—" for _, s, _ in _rows(w)), timeout=3000)


def test_a_locked_object_says_why_nothing_changed(make_napari_viewer, qtbot, tmp_path):
    viewer, w, session, oid = _open(make_napari_viewer, qtbot, tmp_path)
    w.set_plane("coronal")
    session.set_locked(oid, True)
    qtbot.waitUntil(lambda: not w.reject_range.isEnabled(), timeout=3000)
    before = session.labels.copy()
    w.review_range("rejected")
    level, text = w.messages[-1]
    assert level == "warning" and "locked" in text and "mass" in text
    np.testing.assert_array_equal(session.labels, before)
    assert session.objects[oid].plane_status == {}
    # unlocked, "Accept shown" accepts the coronal slice on screen and goes on to the next one to review
    session.set_locked(oid, False)
    present = [i for i, _, v in _rows(w) if v]
    w.jump_to(present[3])
    press(qtbot, w.accept_shown)
    assert session.objects[oid].plane_status == {"coronal": {present[3]: "accepted"}}
    assert _shown(viewer, w, 1) == (present[4], (1,))
    np.testing.assert_array_equal(session.labels, before)
    viewer.dims.order = ORDERS["axial"]  # back to the axial view: the list follows
    assert w.chosen_plane() == "axial" and w.slices.horizontalHeaderItem(0).text() == "Slice"


def test_a_2d_image_has_no_plane_to_choose(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    image = viewer.add_image(np.zeros((40, 30), np.int16))
    s = AnnotationSession((1, 40, 30), (1.0, 1.0, 1.0), image_key="xray")
    o = s.new_object("nodule")
    m = np.zeros((40, 30), bool)
    m[5:9, 5:9] = True
    s.commit_slices(o.id, {0: m}, "prompted")
    controller_for(viewer).bind_session(s, image, viewer.add_labels(s.labels[0].copy()))
    w = dock_plugin_widget(viewer, "Review")
    assert not w.plane.isEnabled() and w.chosen_plane() == "axial"
    assert _rows(w) == [(0, "prompted", 16)]


def test_rejecting_a_coronal_slice_says_which_of_your_decisions_it_changed(make_napari_viewer, qtbot, tmp_path):
    viewer, w, session, oid = _open(make_napari_viewer, qtbot, tmp_path)
    y = 24
    zs = [int(z) for z in np.flatnonzero((session.labels[:, y, :] == oid).any(axis=1))]
    session.set_status(oid, [zs[len(zs) // 2]], "accepted")
    w.plane.setCurrentIndex(w.plane.findData("coronal"))
    w.range_from.setValue(y)
    w.range_to.setValue(y)
    press(qtbot, w.reject_range)
    z = zs[len(zs) // 2]
    assert not (session.labels[:, y, :] == oid).any()
    assert session.objects[oid].slice_status[z] == "edited"
    level, text = w.messages[-1]
    assert level == "info" and f"what you had decided on axial slice {z}, now marked edited" in text, text
