"""Prompts where the clinician works: coronal and sagittal views (napari's rolled dims) prompt and
propagate in that plane, in data space, through the radiological display flip; the 3D view refuses
prompts; the modality and model-window choosers. A synthetic non-square CT (z 36, y 52, x 68,
spacing 2 x 1 x 1 mm) with a bright ellipsoid, shown with all three axes flipped (RAS file)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dice,
    load_backend,
    make_widget,
    press,
    stop_workers_after_test,
)

SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")  # a folder: keep the screenshots to look at
SHAPE = (36, 52, 68)
CENTRE = (18, 24, 40)
MARKER = (slice(31, 35), slice(20, 29), slice(57, 63))


def phantom():
    z, y, x = np.mgrid[: SHAPE[0], : SHAPE[1], : SHAPE[2]]
    vol = np.full(SHAPE, -1000.0)
    body = ((y - 26) / 24) ** 2 + ((x - 34) / 32) ** 2 < 1
    vol[body] = 20.0
    obj = ((z - CENTRE[0]) / 12) ** 2 + ((y - CENTRE[1]) / 9) ** 2 + ((x - CENTRE[2]) / 14) ** 2 < 1
    vol[obj] = 250.0
    vol[MARKER] = 1500.0  # superior (high z), patient's right (high x in RAS): upper left on screen
    vol += np.random.default_rng(0).normal(0, 8, SHAPE)
    return vol.astype(np.int16), obj


def add_phantom(viewer):
    from napari_medprompt.io.layers import volume_to_layer_data
    from napari_medprompt.io.volume import Volume

    data, _ = phantom()
    vol = Volume(data, spacing=(2.0, 1.0, 1.0), affine=np.eye(4), modality="CT", name="phantom")
    assert vol.radiological_flips() == (True, True, True)  # every axis is mirrored on screen
    layer_data, kwargs, _ = volume_to_layer_data(vol)
    return viewer.add_image(layer_data, **kwargs)


ORDERS = {"axial": (0, 1, 2), "coronal": (1, 0, 2), "sagittal": (2, 0, 1)}


def show_plane(viewer, widget, plane, index):
    """Roll the dims to ``plane`` and go to its slice ``index`` (data index), as a user would."""
    layer = widget.ctrl.image_layer
    viewer.dims.order = ORDERS[plane]
    ax = {"axial": 0, "coronal": 1, "sagittal": 2}[plane]
    pt = np.zeros(3)
    pt[ax] = index
    viewer.dims.set_point(ax, float(layer.data_to_world(pt)[ax]))
    assert widget.view_plane() == plane
    assert widget.view_index(plane) == index


def _mouse(kind, position, displayed):
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.events import Event

    return ReadOnlyWrapper(Event(
        type_name=kind, is_dragging=False, modifiers=[], position=position, pos=np.array([10, 10]),
        view_direction=None, dims_displayed=list(displayed), dims_point=position,
    ))


def click_data_point(viewer, widget, zyx):
    """A mouse click in the prompt points layer where voxel ``zyx`` is drawn."""
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    layer = widget.ctrl.image_layer
    world = tuple(float(v) for v in layer.data_to_world(np.asarray(zyx, float)))
    displayed = viewer.dims.displayed
    mouse_press_callbacks(widget.prompts.points, _mouse("mouse_press", world, displayed))
    mouse_release_callbacks(widget.prompts.points, _mouse("mouse_release", world, displayed))


@pytest.fixture
def phantom_widget(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    viewer, widget = make_widget(lambda: make_napari_viewer(show=bool(SHOTS)), monkeypatch, tmp_path,
                                 add_image=add_phantom)
    load_backend(qtbot, widget, "classic")
    return viewer, widget


@pytest.mark.parametrize("plane", ["coronal", "sagittal"])
def test_click_in_a_rolled_view_segments_that_plane_and_propagates_along_its_axis(phantom_widget, qtbot, plane):
    viewer, widget = phantom_widget
    _, obj = phantom()
    ax = {"coronal": 1, "sagittal": 2}[plane]
    index = CENTRE[ax]
    show_plane(viewer, widget, plane, index)
    assert "coronal" in widget.ui.plane.text() or "sagittal" in widget.ui.plane.text()
    # click on the object's centre as drawn (mirrored axes: the world point is not the data point)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        click_data_point(viewer, widget, CENTRE)
    pts = widget.prompts.points.data
    assert len(pts) == 1 and np.allclose(pts[0], CENTRE)  # the clicked voxel, in data space
    assert widget.prompts.points.features["plane"].iloc[0] == plane
    preview = widget.preview_layer.data > 0
    sl = [slice(None)] * 3
    sl[ax] = index
    truth = obj[tuple(sl)]
    assert dice(preview[tuple(sl)], truth) > 0.9
    assert preview.sum() == preview[tuple(sl)].sum()  # only that plane slice, no axial slice
    press(qtbot, widget.ui.accept)
    session, oid = widget.ctrl.session, widget.ctrl.current_object
    lab = session.labels == oid
    assert dice(lab[tuple(sl)], truth) > 0.9 and lab.sum() == lab[tuple(sl)].sum()
    accepted = lab[tuple(sl)].copy()
    crossed = np.flatnonzero(truth.any(axis=1))  # the axial slices (rows of a coronal/sagittal slice)
    # recorded as the plane decision it is; the crossed axial slices hold only its line
    assert session.objects[oid].plane_status == {plane: {index: "prompted"}}
    assert all(session.objects[oid].slice_status[int(z)] == "needs review" for z in crossed)
    assert session.objects[oid].provenance["plane"] == plane

    with qtbot.waitSignal(widget.propagation_finished, timeout=60000):
        press(qtbot, widget.ui.propagate)
    lab = session.labels == oid
    extent = np.flatnonzero(lab.any(axis=tuple(i for i in range(3) if i != ax)))
    true_extent = np.flatnonzero(obj.any(axis=tuple(i for i in range(3) if i != ax)))
    assert len(extent) >= 0.8 * len(true_extent)  # it went along the plane's axis
    assert dice(lab, obj) > 0.85
    assert widget.ui.status.text().startswith("Propagation done"), widget.ui.status.text()
    statuses = set(session.objects[oid].slice_status.values())
    assert statuses <= {"propagated", "needs review"}
    assert session.objects[oid].plane_status == {plane: {index: "prompted"}}
    np.testing.assert_array_equal(lab[tuple(sl)], accepted)  # the accepted plane slice kept its voxels
    prov = session.objects[oid].provenance
    assert prov["action"] == "propagate" and prov["plane"] == plane  # the last commit: this run
    assert len(prov["log"]) == 2  # the accept, then the run (one commit per status)
    if SHOTS and plane == "coronal":
        viewer.window._qt_window.resize(1400, 900)
        viewer.reset_view()
        from PIL import Image

        img = np.asarray(viewer.screenshot(canvas_only=False, flash=False))[..., :3]
        Image.fromarray(img).save(os.path.join(SHOTS, "coronal_segmentation.png"))
        canvas = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
        bright = np.argwhere(canvas.min(axis=2) > 235)  # the white marker
        h, w = canvas.shape[:2]
        r, c = bright.mean(axis=0)
        assert r < h / 2 and c < w / 2, (r, c, h, w)  # superior up, the patient's right on the left


def test_3d_view_refuses_prompts_with_a_message(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    viewer.dims.ndisplay = 3
    assert widget.view_plane() == "3d"
    assert "3D" in widget.ui.plane.text()
    before = widget.ctrl.session.labels.copy()
    widget.prompts.add_point(CENTRE[0], CENTRE[1], CENTRE[2])
    qtbot.wait(50)
    assert len(widget.prompts.points.data) == 0
    widget.prompts.add_box(CENTRE[0], 10, 10, 30, 50)
    assert len(widget.prompts.shapes.data) == 0
    assert any(lv == "error" and "3D view" in m for lv, m in widget.messages)
    assert np.array_equal(widget.ctrl.session.labels, before) and not widget.preview_layer.data.any()
    viewer.dims.ndisplay = 2  # back to 2D: clicks work again
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(CENTRE[0], CENTRE[1], CENTRE[2])


def test_modality_chooser_updates_presets_segmenter_and_provenance(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    ui = widget.ui
    assert ui.modality.currentText() == "CT" and ui.window.findText("lung") >= 0
    ui.modality.setCurrentText("MR")
    ui.modality.activated.emit(ui.modality.currentIndex())
    assert widget.volume.modality == "MR"
    assert ui.window.findText("lung") < 0 and ui.window.currentText() == "auto"  # MR presets
    assert ui.model_window.findText("fixed preset: lung") < 0
    qtbot.waitUntil(lambda: widget._seg_ready and widget.ctrl.segmenter.modality == "MR", timeout=30000)
    ui.model_window.setCurrentText("fixed preset: narrow")
    ui.model_window.activated.emit(ui.model_window.currentIndex())
    assert widget.ctrl.segmenter.model_window == "narrow"
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(*CENTRE)
    press(qtbot, ui.accept)
    prov = widget.ctrl.session.objects[widget.ctrl.current_object].provenance
    assert prov["modality"] == "MR" and prov["model_window_choice"] == "narrow"
    assert widget.ctrl.image_layer.metadata["medprompt"]["modality"] == "MR"
    # a fixed CT preset is refused for MR with a message; the choice stays
    widget.set_model_window("fixed preset: lung")
    assert widget.ctrl.segmenter.model_window == "narrow"


def test_model_window_choice_changes_what_sam2_sees(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    """Random-init SAM2: following the display, a fixed preset and the checkpoint convention give the
    window the chooser names, whatever the display shows; recorded in provenance."""
    import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=add_phantom)
    names = [widget.backend.backend.itemText(i) for i in range(widget.backend.backend.count())]
    name = next((n for n in names if "tiny" in n), None)
    if name is None:
        pytest.skip("no SAM2 tiny backend registered")
    widget.backend.random.setChecked(True)
    load_backend(qtbot, widget, name, timeout=240000)
    seg = widget.ctrl.segmenter
    assert widget.ui.model_window.currentText() == "auto (checkpoint or display)"
    assert widget._provenance()["model_window_choice"] is None  # no convention declared: the display
    widget.set_window("lung")
    assert tuple(seg.window) == (-1350.0, 150.0)  # follows the display by default
    widget.set_model_window("fixed preset: bone")
    widget.set_window("soft_tissue")
    assert tuple(seg.window) == (-500.0, 1300.0)  # fixed: the display no longer moves it
    widget.set_model_window("convention: medsam2")
    assert tuple(seg.window) == (-160.0, 240.0)
    assert widget._provenance()["model_window_choice"] == "medsam2"
    assert widget._provenance()["model_window"]["window"] == [-160.0, 240.0]


def test_sam2_prompts_in_the_coronal_plane_with_a_lasso_mask(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    """Random-init SAM2 bound to the coronal view (non-square 36 x 68 slices): a click and a lasso (mask
    input + box) give previews on that coronal slice only, with the slice's shape; the masks of a
    random model mean nothing, only where they land is checked."""
    import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=add_phantom)
    names = [widget.backend.backend.itemText(i) for i in range(widget.backend.backend.count())]
    name = next((n for n in names if "tiny" in n), None)
    if name is None:
        pytest.skip("no SAM2 tiny backend registered")
    widget.backend.random.setChecked(True)
    load_backend(qtbot, widget, name, timeout=240000)
    z, y, x = CENTRE
    show_plane(viewer, widget, "coronal", y)
    with qtbot.waitSignal(widget.preview_updated, timeout=120000):
        click_data_point(viewer, widget, CENTRE)
    seg = widget.ctrl.segmenter
    assert widget._bound_plane == "coronal" and seg.slice_shape == (SHAPE[0], SHAPE[2])
    assert widget._pending[y].shape == (SHAPE[0], SHAPE[2])
    preview = widget.preview_layer.data > 0
    assert preview.sum() == preview[:, y, :].sum()
    widget.clear_prompts()
    with qtbot.waitSignal(widget.preview_updated, timeout=120000):
        widget.prompts.add_lasso(y, [[z - 8, x - 10], [z - 8, x + 10], [z + 8, x + 10], [z + 8, x - 10]])
    assert widget.prompts.prompt_on(y, "coronal").mask is not None
    assert not any(lv == "error" for lv, _ in widget.messages)
    # back to the axial view: the segmenter is bound to the axial slices again for the next click
    show_plane(viewer, widget, "axial", z)
    with qtbot.waitSignal(widget.preview_updated, timeout=120000):
        widget.prompts.add_point(z, y, x)
    assert widget._bound_plane == "axial" and seg.slice_shape == (SHAPE[1], SHAPE[2])


def test_real_ct_liver_from_a_coronal_click(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    """The TotalSegmentator example CT (real anatomy, RAS NIfTI shown radiologically): one click on
    the liver in a coronal view (a negative click at the deepest point of the leak), accepted and
    propagated front to back (along y)."""
    from tests._qt._helpers import add_real_ct, deepest_point, reference_mask

    viewer, widget = make_widget(lambda: make_napari_viewer(show=bool(SHOTS)), monkeypatch, tmp_path,
                                 add_image=lambda v: add_real_ct(v)[0])
    liver = reference_mask("liver")
    load_backend(qtbot, widget, "classic")
    y = int(np.argmax(liver.sum(axis=(0, 2))))  # the coronal slice with the most liver
    show_plane(viewer, widget, "coronal", y)
    r, c = deepest_point(liver[:, y, :])
    with qtbot.waitSignal(widget.preview_updated, timeout=60000):
        click_data_point(viewer, widget, (r, y, c))
    d1 = dice(widget.preview_layer.data[:, y, :] > 0, liver[:, y, :])
    assert d1 > 0.6, d1
    # a second click as a clinician would: negative, at the deepest point of the largest leak
    from scipy import ndimage

    leak, n = ndimage.label((widget.preview_layer.data[:, y, :] > 0) & ~liver[:, y, :])
    assert n > 0
    r2, c2 = deepest_point(leak == 1 + int(np.argmax(np.bincount(leak.ravel())[1:])))
    widget.toggle_polarity()
    with qtbot.waitSignal(widget.preview_updated, timeout=60000):
        click_data_point(viewer, widget, (r2, y, c2))
    widget.toggle_polarity()
    prompt = widget.prompts.prompt_on(y, "coronal")
    assert prompt.labels.tolist() == [1, 0]
    d_slice = dice(widget.preview_layer.data[:, y, :] > 0, liver[:, y, :])
    assert d_slice > 0.85, (d1, d_slice)
    with qtbot.waitSignal(widget.propagation_finished, timeout=300000):
        press(qtbot, widget.ui.propagate)  # accepts the preview first
    lab = widget.ctrl.session.labels == widget.ctrl.current_object
    d3 = dice(lab, liver)
    assert d3 > 0.7, d3
    if SHOTS:
        from PIL import Image

        viewer.window._qt_window.resize(1400, 900)
        viewer.reset_view()
        img = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
        Image.fromarray(img).save(os.path.join(SHOTS, "coronal_real_ct_liver.png"))
    print(f"coronal clicks: slice Dice {d1:.3f} (1 click), {d_slice:.3f} (2 clicks); 3D Dice after "
          f"propagation along y {d3:.3f}")


def test_restored_object_propagates_in_the_plane_it_was_accepted_in(phantom_widget, qtbot):
    """What the widget remembers of the plane is also in the object's provenance: an object whose
    session was restored (the widget knows nothing of it) still propagates along the coronal axis;
    an axial accept afterwards makes it axial again."""
    viewer, widget = phantom_widget
    _, obj = phantom()
    z, y, x = CENTRE
    show_plane(viewer, widget, "coronal", y)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        click_data_point(viewer, widget, CENTRE)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    prov = widget.ctrl.session.objects[oid].provenance
    assert prov["plane"] == "coronal" and prov["plane_slices"] == [y]
    widget._object_plane.clear()  # as after a restart
    with qtbot.waitSignal(widget.propagation_finished, timeout=60000):
        press(qtbot, widget.ui.propagate)
    lab = widget.ctrl.session.labels == oid
    assert len(np.flatnonzero(lab.any(axis=(0, 2)))) > 10 and dice(lab, obj) > 0.85
    assert prov["plane"] == "coronal" and prov["plane_slices"] == [y]
    show_plane(viewer, widget, "axial", z)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(z, y, x)
    press(qtbot, widget.ui.accept)
    assert prov["plane"] == "axial" and prov["plane_slices"] is None
    assert widget._object_plane[oid] == "axial"


def _accept_coronal_click(viewer, widget, qtbot, y, point=CENTRE):
    show_plane(viewer, widget, "coronal", y)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        click_data_point(viewer, widget, (point[0], y, point[2]))
    press(qtbot, widget.ui.accept)


def test_coronal_accept_is_a_plane_decision_that_axial_propagation_keeps(phantom_widget, qtbot):
    """Accept in the coronal view: the crossed axial slices "need review" (not "prompted"), the
    prompt is saved with its plane; a following axial propagation starts from the axial slice the
    user prompted only and leaves the accepted coronal voxels as they are."""
    from napari_medprompt.session import AnnotationSession

    viewer, widget = phantom_widget
    z, y, x = CENTRE
    _accept_coronal_click(viewer, widget, qtbot, y)
    session, oid = widget.ctrl.session, widget.ctrl.current_object
    obj = session.objects[oid]
    coronal = session.labels[:, y, :] == oid
    crossed = [int(v) for v in np.flatnonzero(coronal.any(axis=1))]
    assert len(crossed) > 15
    assert obj.plane_status == {"coronal": {y: "prompted"}}
    assert {obj.slice_status[c] for c in crossed} == {"needs review"}
    assert obj.plane_prompts["coronal"][y] == {"points": [[float(z), float(x)]], "labels": [1], "box": None}
    assert y not in obj.prompts  # not mistaken for an axial prompt
    text = widget.ui.status.text()
    assert text.startswith(f"Accepted 1 coronal slice: {len(crossed)} axial slices now hold part of it "
                           "and need review."), text
    if SHOTS:
        widget.ui.status.grab().save(os.path.join(SHOTS, "coronal_accept_status.png"))
    on_disk = AnnotationSession.load(session.folder, image_key=session.image_key, shape=session.shape)
    assert on_disk.objects[oid].plane_prompts == obj.plane_prompts
    assert on_disk.objects[oid].plane_status == obj.plane_status

    # an axial click and accept on the centre slice, then an axial propagation
    show_plane(viewer, widget, "axial", z)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(z, y, x)
    press(qtbot, widget.ui.accept)
    assert obj.slice_status[z] == "prompted" and obj.plane_status == {"coronal": {y: "prompted"}}
    with qtbot.waitSignal(widget.propagation_finished, timeout=60000):
        press(qtbot, widget.ui.propagate)
        started = widget.ui.status.text()
    assert f"from slices [{z}]" in started, started  # the "needs review" slices are no seeds
    lab = session.labels == oid
    others = [c for c in crossed if c != z]
    np.testing.assert_array_equal(lab[others, y, :], coronal[others])  # inside and outside kept
    assert len(np.flatnonzero(lab.any(axis=(1, 2)))) >= len(crossed)
    assert [c for c, st in obj.slice_status.items() if st == "prompted"] == [z]


def test_reopened_session_propagates_along_the_coronal_axis_from_its_stored_plane_slices(
        make_napari_viewer, monkeypatch, tmp_path, qtbot):
    """Two coronal accepts, then the viewer is closed: the reopened session still knows both coronal
    slices (not only the last accept's provenance) and propagates along y from them."""
    from tests._qt._helpers import make_widget as _make

    _, obj = phantom()
    z, y, x = CENTRE
    viewer, widget = _make(make_napari_viewer, monkeypatch, tmp_path, add_image=add_phantom)
    load_backend(qtbot, widget, "classic")
    _accept_coronal_click(viewer, widget, qtbot, y)
    oid = widget.ctrl.current_object
    _accept_coronal_click(viewer, widget, qtbot, y + 4)
    assert widget.ctrl.session.objects[oid].provenance["plane_slices"] == [y + 4]
    saved = widget.ctrl.session.labels.copy()
    viewer.close()

    viewer2, widget2 = _make(make_napari_viewer, monkeypatch, tmp_path, add_image=add_phantom, restore=True)
    session = widget2.ctrl.session
    np.testing.assert_array_equal(session.labels, saved)
    assert session.objects[oid].plane_status == {"coronal": {y: "prompted", y + 4: "prompted"}}
    assert widget2._object_plane == {}
    load_backend(qtbot, widget2, "classic")
    assert widget2.ctrl.current_object == oid  # the restored object is selected
    with qtbot.waitSignal(widget2.propagation_finished, timeout=60000):
        press(qtbot, widget2.ui.propagate)
        started = widget2.ui.status.text()
    assert f"along the coronal axis from coronal slices [{y}, {y + 4}]" in started, started
    lab = session.labels == oid
    assert len(np.flatnonzero(lab.any(axis=(0, 2)))) > 10 and dice(lab, obj) > 0.85
    np.testing.assert_array_equal(lab[:, y, :], saved[:, y, :] == oid)  # the user's slices kept
    np.testing.assert_array_equal(lab[:, y + 4, :], saved[:, y + 4, :] == oid)


def test_plane_accept_on_a_locked_object_records_nothing_and_axial_accept_keeps_the_coronal_decision(
        phantom_widget, qtbot):
    """The plane's prompts are saved only with a committed mask; an accepted axial preview leaves the
    user's coronal row as the user decided it and says so."""
    viewer, widget = phantom_widget
    z, y, x = CENTRE
    session = widget.ctrl.session
    show_plane(viewer, widget, "coronal", y)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        click_data_point(viewer, widget, (z, y, x))
    oid = widget.ctrl.current_object
    session.set_locked(oid, True)
    press(qtbot, widget.ui.accept)
    obj = session.objects[oid]
    assert "locked" in widget.messages[-1][1].lower()
    assert obj.plane_prompts == {} and obj.plane_status == {} and not (session.labels == oid).any()
    session.set_locked(oid, False)
    press(qtbot, widget.ui.accept)  # the preview is still there: now it is committed, with its prompt
    assert obj.plane_status == {"coronal": {y: "prompted"}} and y in obj.plane_prompts["coronal"]
    row = session.labels[z, y].copy()
    # an axial preview that misses part of the user's coronal row: the row stays as the user decided
    show_plane(viewer, widget, "axial", z)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(z, y, x)
    widget._pending[z] = widget._pending[z] & (np.arange(SHAPE[2]) < x)[None, :]
    press(qtbot, widget.ui.accept)
    np.testing.assert_array_equal(session.labels[z, y], row)
    assert obj.slice_status[z] == "prompted"
    assert any("coronal / sagittal slices you decided" in m for _, m in widget.messages), widget.messages
