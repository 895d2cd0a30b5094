"""Scribbles, lassos and an existing label object as prompts in the Segment dock, and bad input
(outside the image, zero-size box, one-pixel scribble, self-crossing lasso, a label layer of another
shape): a message, no change to the segmentation, the viewer goes on. Classic backend (real masks
without weights) on the non-square synthetic CT of ``test_segment_planes``."""

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
from tests._qt.test_segment_planes import CENTRE, add_phantom, phantom, show_plane

SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")


@pytest.fixture
def phantom_widget(make_napari_viewer, monkeypatch, tmp_path, qtbot):
    viewer, widget = make_widget(lambda: make_napari_viewer(show=bool(SHOTS)), monkeypatch, tmp_path,
                                 add_image=add_phantom)
    load_backend(qtbot, widget, "classic")
    return viewer, widget


def test_scribble_becomes_points_along_it(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    _, obj = phantom()
    z, y, x = CENTRE
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_scribble(z, [[y, x - 8], [y + 3, x], [y, x + 8]])
    prompt = widget.prompts.prompt_on(z)
    assert len(prompt.points) >= 5 and set(prompt.labels.tolist()) == {1}
    assert dice(widget.preview_layer.data[z] > 0, obj[z]) > 0.9
    # a negative scribble (N on) across the body outside the object trims nothing it should keep
    widget.toggle_polarity()
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_scribble(z, [[y + 14, x - 10], [y + 14, x + 10]])
    prompt = widget.prompts.prompt_on(z)
    assert (prompt.labels == 0).sum() >= 5
    assert dice(widget.preview_layer.data[z] > 0, obj[z]) > 0.9
    press(qtbot, widget.ui.accept)
    assert dice(widget.ctrl.session.labels[z] > 0, obj[z]) > 0.9


def test_lasso_is_a_mask_prompt_in_the_coronal_plane(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    _, obj = phantom()
    z, y, x = CENTRE
    show_plane(viewer, widget, "coronal", y)
    lasso = [[z - 11, x - 13], [z - 11, x + 13], [z + 11, x + 13], [z + 11, x - 13]]  # (z, x) rows, cols
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_lasso(y, lasso)
    prompt = widget.prompts.prompt_on(y, "coronal")
    assert prompt.mask is not None and prompt.mask.shape == (obj.shape[0], obj.shape[2])
    assert prompt.box is not None  # the lasso's box comes with it
    assert dice(widget.preview_layer.data[:, y, :] > 0, obj[:, y, :]) > 0.85
    if SHOTS:
        from PIL import Image

        Image.fromarray(np.asarray(viewer.screenshot(canvas_only=False, flash=False))[..., :3]
                        ).save(os.path.join(SHOTS, "lasso_coronal.png"))
        inner = widget.ui.root.widget()
        inner.resize(inner.sizeHint().width() + 40, inner.sizeHint().height())
        inner.grab().save(os.path.join(SHOTS, "segment_dock_controls.png"))


def test_label_object_initialises_refines_and_propagates(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    _, obj = phantom()
    from scipy import ndimage

    rough = np.zeros(obj.shape, np.uint8)
    rough[ndimage.binary_erosion(obj, iterations=2)] = 4  # an under-segmented earlier result
    layer = viewer.add_labels(rough, name="earlier result", scale=widget.ctrl.image_layer.scale,
                              affine=widget.ctrl.image_layer.affine.affine_matrix)
    z, y, x = CENTRE
    widget.ctrl.jump_to_slice(z)
    idx = widget.ui.init_source.findData(layer)
    assert idx > 0
    widget.ui.init_source.setCurrentIndex(idx)
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        press(qtbot, widget.ui.init_from_label)
    preview = widget.preview_layer.data[z] > 0
    assert dice(preview, obj[z]) > dice(rough[z] > 0, obj[z])  # refined towards the true edge
    with qtbot.waitSignal(widget.propagation_finished, timeout=60000):
        press(qtbot, widget.ui.propagate)  # accepts the preview, then propagates
    assert dice(widget.ctrl.session.labels > 0, obj) > 0.85
    assert np.array_equal(layer.data, rough)  # the user's layer is only read


def _object_voxels(widget):
    return int((widget.ctrl.session.labels > 0).sum())


BAD = {
    "point outside": (lambda w: w.prompts.add_point(CENTRE[0], -30, 20), "outside"),
    "zero-size box": (lambda w: w.prompts.add_box(CENTRE[0], 20, 30, 20, 50), "zero area"),
    "one-pixel scribble": (lambda w: w.prompts.add_scribble(CENTRE[0], [[20, 30], [20.2, 30.1]]), "single pixel"),
    "self-crossing lasso": (lambda w: w.prompts.add_lasso(CENTRE[0], [[10, 30], [35, 55], [10, 55], [35, 30]]),
                            "crosses itself"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_prompt_gives_a_message_and_changes_nothing(phantom_widget, qtbot, case):
    viewer, widget = phantom_widget
    z, y, x = CENTRE
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):  # a good object first
        widget.prompts.add_point(z, y, x)
    press(qtbot, widget.ui.accept)
    before, n_msgs = widget.ctrl.session.labels.copy(), len(widget.messages)
    act, words = BAD[case]
    act(widget)
    qtbot.wait(100)
    new = widget.messages[n_msgs:]
    assert any(words in m and "Nothing was changed in the segmentation" in m for _lv, m in new), new
    assert "removed from the prompt layer" in new[-1][1]  # the unusable prompt does not linger
    assert widget.prompts.targets_with_prompts() == []
    press(qtbot, widget.ui.accept)  # nothing to accept: the bad prompt made no preview
    assert np.array_equal(widget.ctrl.session.labels, before)
    assert not widget.preview_layer.data.any()
    # the viewer goes on: a good click after it works, with no clean-up by the user
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(z + 2, y, x)


def test_label_layer_of_another_shape_is_refused(phantom_widget, qtbot):
    viewer, widget = phantom_widget
    layer = viewer.add_labels(np.ones((10, 20, 30), np.uint8), name="other image's labels")
    before = widget.ctrl.session.labels.copy()
    widget.ui.init_source.setCurrentIndex(widget.ui.init_source.findData(layer))
    press(qtbot, widget.ui.init_from_label)
    qtbot.wait(50)
    lv, msg = widget.messages[-1]
    assert lv == "error" and "shape (10, 20, 30)" in msg and "Nothing was changed in the segmentation" in msg
    assert np.array_equal(widget.ctrl.session.labels, before) and not widget.preview_layer.data.any()
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        widget.prompts.add_point(*CENTRE)


def _drag(layer, world_points, displayed, modifiers=()):
    """Press at the first world point, drag through the others, release: napari's drawing tools."""
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.events import Event
    from napari.utils.interactions import (
        mouse_move_callbacks,
        mouse_press_callbacks,
        mouse_release_callbacks,
    )

    def ev(kind, p, drag):
        canvas = np.asarray(p)[list(displayed)] * 10.0
        return ReadOnlyWrapper(Event(
            type_name=kind, is_dragging=drag, modifiers=list(modifiers), position=tuple(p), pos=canvas,
            view_direction=None, dims_displayed=list(displayed), dims_point=tuple(p)), exceptions=("handled",))

    mouse_press_callbacks(layer, ev("mouse_press", world_points[0], False))
    for p in world_points[1:]:
        mouse_move_callbacks(layer, ev("mouse_move", p, True))
    mouse_release_callbacks(layer, ev("mouse_release", world_points[-1], True))


def test_mouse_drawn_lasso_and_negative_scribble_in_the_sagittal_view(phantom_widget, qtbot):
    """Drawn with napari's lasso and path tools in a sagittal view of the flipped volume."""
    viewer, widget = phantom_widget
    _, obj = phantom()
    z, y, x = CENTRE
    show_plane(viewer, widget, "sagittal", x)
    image, shapes = widget.ctrl.image_layer, widget.prompts.shapes
    displayed = viewer.dims.displayed

    def world(zz, yy):
        return tuple(float(v) for v in image.data_to_world(np.array([zz, yy, x], float)))

    ring = [(z + 10 * np.sin(t), y + 8 * np.cos(t)) for t in np.linspace(0, 2 * np.pi, 24, endpoint=False)]
    shapes.mode = "add_polygon_lasso"
    viewer.layers.selection.active = shapes
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        _drag(shapes, [world(*p) for p in ring], displayed)
    assert list(shapes.shape_type) == ["polygon"]
    assert shapes.features["plane"].iloc[0] == "sagittal"
    prompt = widget.prompts.prompt_on(x, "sagittal")
    assert prompt.mask is not None and prompt.mask[z, y] and not prompt.mask[z, y + 15]
    assert dice(widget.preview_layer.data[:, :, x] > 0, obj[:, :, x]) > 0.85
    shapes.mode = "add_path"
    with qtbot.waitSignal(widget.preview_updated, timeout=30000):
        _drag(shapes, [world(z + 14, y - 6), world(z + 14, y), world(z + 14, y + 6)], displayed,
              modifiers=("Shift",))
    assert list(shapes.shape_type) == ["polygon", "path"]
    assert not bool(shapes.features["positive"].iloc[1])  # Shift: a negative scribble
    prompt = widget.prompts.prompt_on(x, "sagittal")
    assert len(prompt.labels) >= 3 and not prompt.labels.any()
    assert np.allclose(prompt.points[:, 0], z + 14)  # rows of the sagittal slice are z
