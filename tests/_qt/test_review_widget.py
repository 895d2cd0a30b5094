"""The Review dock widget over a real AnnotationSession, driven with mouse clicks under Xvfb."""

from __future__ import annotations

import os

import numpy as np
import pytest
from qtpy.QtCore import Qt

from napari_medprompt._qt.controller import controller_for
from napari_medprompt._qt.review.widget import ReviewWidget
from napari_medprompt.imaging.phantom import make_abdominal_phantom
from napari_medprompt.session import AnnotationSession

SAM2_PROV = {"backend": "sam2", "model": "sam2.1-hiera-tiny", "version": "1.1.0", "device": "cpu",
             "random_weights": True}
CLASSIC_PROV = {"backend": "classic", "model": "region-growing", "version": "0.1.0", "device": "cpu",
                "random_weights": False}


@pytest.fixture
def review(make_napari_viewer, qtbot, tmp_path):
    vol, lab, names = make_abdominal_phantom()
    viewer = make_napari_viewer()
    image = viewer.add_image(vol.data, scale=vol.spacing, name="phantom CT", colormap="gray",
                             contrast_limits=(-160, 240))
    session = AnnotationSession(vol.data.shape, vol.spacing, image_key="phantom", image_name="phantom CT",
                                folder=tmp_path / "phantom.medprompt")
    liver = session.new_object("liver")
    zs = [z for z in range(lab.shape[0]) if (lab[z] == 1).any()]
    mid = zs[len(zs) // 2]
    session.record_prompt(liver.id, mid, points=[[90, 60], [20, 20]], labels=[1, 0], box=None)
    session.commit_slices(liver.id, {mid: lab[mid] == 1}, "prompted", SAM2_PROV)
    session.commit_slices(liver.id, {z: lab[z] == 1 for z in zs if z != mid}, "propagated", SAM2_PROV)
    spleen = session.new_object("spleen")
    zs2 = [z for z in range(lab.shape[0]) if (lab[z] == 2).any()]
    session.commit_slices(spleen.id, {z: lab[z] == 2 for z in zs2}, "propagated", CLASSIC_PROV)
    session.set_status(spleen.id, zs2[:3], "accepted")
    labels_layer = viewer.add_labels(session.labels.copy(), scale=vol.spacing, name="segmentation", opacity=0.5)
    _color_layer(labels_layer, session)
    ctrl = controller_for(viewer)
    ctrl.bind_session(session, image, labels_layer)
    widget = ReviewWidget(viewer)
    viewer.window.add_dock_widget(widget, area="right", name="Review")
    qtbot.waitExposed(widget)
    return viewer, widget, session, lab, zs, zs2


def _color_layer(layer, session):
    """Draw each object in its session colour, as the Segment panel's layer does."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {None: np.array([0.6, 0.6, 0.6, 1.0]), 0: np.zeros(4)}
    colors.update({oid: np.array([*o.color, 1.0]) for oid, o in session.objects.items()})
    layer.colormap = DirectLabelColormap(color_dict=colors)


def _click_row(qtbot, table, row):
    table.scrollToItem(table.item(row, 0))
    rect = table.visualItemRect(table.item(row, 0))
    qtbot.mouseClick(table.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def _cells(table, col):
    return [table.item(r, col).text() for r in range(table.rowCount())]


def test_object_table_matches_session(review):
    viewer, w, session, lab, zs, zs2 = review
    assert _cells(w.objects, 0) == ["liver", "spleen"]
    assert _cells(w.objects, 1) == ["1", "2"]
    st = session.object_stats(1)
    assert w.objects.item(0, 2).text() == f"{len(zs)} ({zs[0]}-{zs[-1]})"
    assert w.objects.item(0, 3).text() == f"{st['volume_ml']:.1f}"
    # 2.5 x 1.5 x 1.5 mm voxels: the liver's mL follow from its voxel count
    assert st["volume_ml"] == pytest.approx((lab == 1).sum() * 2.5 * 1.5 * 1.5 / 1000)
    assert w.objects.item(1, 4).text() == f"3/{len(zs2)} accepted"


def test_click_slice_row_moves_viewer(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    _click_row(qtbot, w.objects, 0)
    assert [c.lstrip("▶ ") for c in _cells(w.slices, 0)] == [str(z) for z in zs]
    statuses = _cells(w.slices, 1)
    assert statuses.count("prompted") == 1 and statuses.count("propagated") == len(zs) - 1
    target = 5
    _click_row(qtbot, w.slices, target)
    assert controller_for(viewer).current_slice() == zs[target]
    assert viewer.dims.current_step[0] == zs[target]
    assert w.slices.item(target, 0).text() == f"▶ {zs[target]}"  # the shown slice is marked
    viewer.dims.set_current_step(0, zs[2])  # scrolling the viewer moves the marker
    assert w.slices.item(2, 0).text() == f"▶ {zs[2]}" and w.slices.item(target, 0).text() == str(zs[target])


def test_reject_range_clears_only_that_object(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    _click_row(qtbot, w.objects, 0)  # liver
    overlap = sorted(set(zs) & set(zs2))
    assert overlap, "phantom liver and spleen share slices"
    lo, hi = overlap[0], overlap[0] + 3
    spleen_before = session.labels == 2
    liver_before = session.labels == 1
    w.range_from.setValue(lo)
    w.range_to.setValue(hi)
    qtbot.mouseClick(w.reject_range, Qt.MouseButton.LeftButton)
    assert not (session.labels[lo:hi + 1] == 1).any()
    outside = np.ones(session.shape[0], bool)
    outside[lo:hi + 1] = False
    np.testing.assert_array_equal((session.labels == 1)[outside], liver_before[outside])
    np.testing.assert_array_equal(session.labels == 2, spleen_before)
    layer = viewer.layers["segmentation"]
    np.testing.assert_array_equal(layer.data, session.labels)  # the display follows
    rows = dict(zip([c.lstrip("▶ ") for c in _cells(w.slices, 0)], _cells(w.slices, 1)))
    assert all(rows[str(z)] == "rejected" for z in range(lo, hi + 1))
    assert "Reject" in w.messages[-1][1] and "liver" in w.messages[-1][1]
    # autosaved: the reopened session shows the rejection
    again = AnnotationSession.load(session.folder)
    assert again.objects[1].slice_status[lo] == "rejected" and not (again.labels[lo] == 1).any()


def test_accept_selected_slices_and_locked_object(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    _click_row(qtbot, w.objects, 1)  # spleen
    _click_row(qtbot, w.slices, 3)
    qtbot.mouseClick(w.slices.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.ShiftModifier,
                     w.slices.visualItemRect(w.slices.item(5, 0)).center())
    assert w.selected_slices() == zs2[3:6]
    qtbot.mouseClick(w.accept_selected, Qt.MouseButton.LeftButton)
    assert session.objects[2].slices_with("accepted") == zs2[:6]
    assert w.objects.item(1, 4).text() == f"6/{len(zs2)} accepted"
    session.set_locked(2, True)
    qtbot.waitUntil(lambda: w.objects.item(1, 5).text() == "locked", timeout=2000)
    assert not w.reject_range.isEnabled() and w.accept_range.isEnabled()


def test_provenance_shows_backend_model_user(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    _click_row(qtbot, w.objects, 0)
    text = w.provenance.toPlainText()
    assert "sam2" in text and "sam2.1-hiera-tiny" in text and "1.1.0" in text
    assert "RANDOM" in text  # random weights are said on screen
    assert "1 positive, 1 negative" in text
    assert session.objects[1].provenance["user"] in text
    _click_row(qtbot, w.objects, 1)
    text = w.provenance.toPlainText()
    assert "classic" in text and "pretrained" in text


def test_follows_session_changes_and_screenshot(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    kid = session.new_object("kidney_right")
    zs3 = [z for z in range(lab.shape[0]) if (lab[z] == 3).any()]
    session.commit_slices(kid.id, {z: lab[z] == 3 for z in zs3}, "propagated", CLASSIC_PROV)
    qtbot.waitUntil(lambda: w.objects.rowCount() == 3, timeout=2000)
    assert w.objects.item(2, 0).text() == "kidney_right"
    _click_row(qtbot, w.objects, 0)
    _click_row(qtbot, w.slices, len(zs) // 2)
    viewer.layers["segmentation"].data = session.labels.copy()
    _color_layer(viewer.layers["segmentation"], session)
    viewer.window._qt_window.resize(1500, 950)
    qtbot.wait(200)
    w._mark_current_slice()  # keep the shown slice in view after the resize
    shot = viewer.screenshot(canvas_only=False)
    assert shot.ndim == 3 and shot.shape[0] > 400
    out = os.environ.get("MEDPROMPT_REVIEW_SCREENSHOT", "/tmp/review.png")
    from skimage.io import imsave

    imsave(out, shot, check_contrast=False)


def test_waits_for_a_session_then_binds(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    w = ReviewWidget(viewer)
    qtbot.addWidget(w)
    assert "No image" in w.header.text() and w.objects.rowCount() == 0
    assert not w.accept_range.isEnabled() and not w.reject_selected.isEnabled()
    image = viewer.add_image(np.zeros((6, 16, 16), np.int16))
    s = AnnotationSession((6, 16, 16), (1.0, 1.0, 1.0), image_key="tiny")
    o = s.new_object("nodule")
    m = np.zeros((16, 16), bool)
    m[4:8, 4:8] = True
    s.commit_slices(o.id, {2: m, 3: m}, "propagated")
    controller_for(viewer).bind_session(s, image, viewer.add_labels(s.labels.copy()))
    assert _cells(w.objects, 0) == ["nodule"] and w.accept_range.isEnabled()
    assert (w.range_from.value(), w.range_to.value()) == (2, 3)
    # a second session replaces the first; the old one no longer drives the widget
    s2 = AnnotationSession((6, 16, 16), (1.0, 1.0, 1.0), image_key="tiny2")
    controller_for(viewer).bind_session(s2, image)
    assert w.objects.rowCount() == 0
    s.new_object("stale")
    qtbot.wait(150)
    assert w.objects.rowCount() == 0


def test_accept_shown_slice_walks_through_slices_to_review(review, qtbot):
    viewer, w, session, lab, zs, zs2 = review
    _click_row(qtbot, w.objects, 1)  # spleen: zs2[:3] already accepted
    ctrl = controller_for(viewer)
    ctrl.jump_to_slice(zs2[0])
    qtbot.mouseClick(w.next_review, Qt.MouseButton.LeftButton)
    assert ctrl.current_slice() == zs2[3]  # first slice not yet accepted
    qtbot.mouseClick(w.accept_shown, Qt.MouseButton.LeftButton)
    assert session.objects[2].slice_status[zs2[3]] == "accepted"
    assert ctrl.current_slice() == zs2[4]  # moved on by itself
    spleen_other = session.labels == 1
    qtbot.mouseClick(w.reject_shown, Qt.MouseButton.LeftButton)
    assert session.objects[2].slice_status[zs2[4]] == "rejected"
    assert not (session.labels[zs2[4]] == 2).any()
    np.testing.assert_array_equal(session.labels == 1, spleen_other)  # the liver is untouched
    w.filter.setCurrentText("To review")
    assert zs2[3] not in [int(c.lstrip("▶ ")) for c in _cells(w.slices, 0)]
