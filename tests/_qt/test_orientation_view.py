"""What the user sees: volumes stored RAS, LPS or oblique are all shown radiologically (a marker at
the patient's right-anterior-superior appears in the upper-left quadrant of the axial view), the
segmentation and prompt layers sit exactly over the image, and a click on the marker makes a prompt
at the marker's voxel."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    add_real_ct,
    make_widget,
    stop_workers_after_test,
)
from tests.io._orientation import write_nifti, write_nrrd

SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")  # a folder: keep the screenshots to look at


def _shot(viewer, name):
    """The canvas as drawn (the window is shown: an unshown canvas renders black)."""
    img = np.asarray(viewer.screenshot(canvas_only=True, flash=False))[..., :3]
    if SHOTS:
        from PIL import Image

        Image.fromarray(img).save(os.path.join(SHOTS, f"{name}.png"))
    return img


def _mouse(kind, position, modifiers=()):
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.events import Event

    return ReadOnlyWrapper(Event(
        type_name=kind, is_dragging=False, modifiers=list(modifiers), position=position, pos=np.array([10, 10]),
        view_direction=None, dims_displayed=[1, 2], dims_point=position,
    ))


@pytest.mark.parametrize("kind,fmt", [("RAS", "nifti"), ("LPS", "nrrd"), ("oblique", "nifti")])
def test_marker_up_left_on_screen_and_clicked_voxel(make_napari_viewer, qtbot, tmp_path, monkeypatch, kind, fmt):
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    path, marker = (write_nifti(tmp_path / "m.nii.gz", kind) if fmt == "nifti"
                    else write_nrrd(tmp_path / "m.nrrd", kind))
    viewer, widget = make_widget(lambda: make_napari_viewer(show=True), monkeypatch, tmp_path,
                                 add_image=lambda v: v.open(str(path), plugin="napari-medprompt"))
    image = widget.ctrl.image_layer
    assert image is not None and image.data[marker] == 1500
    for layer in (widget.ctrl.labels_layer, widget.preview_layer, widget.prompts.points, widget.prompts.shapes):
        np.testing.assert_allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
        np.testing.assert_allclose(layer.scale, image.scale)
    z, y, x = marker
    widget.ctrl.jump_to_slice(z)
    assert widget.ctrl.current_slice() == z
    viewer.reset_view()
    img = _shot(viewer, f"marker_{kind}_{fmt}")
    bright = np.argwhere(img.mean(axis=2) > 200)
    assert len(bright) > 0
    r, c = bright.mean(axis=0)
    h, w = img.shape[:2]
    assert r < h / 2 and c < w / 2, (kind, (r, c), (h, w))  # upper-left: anterior up, right on the left

    # a click where the marker is drawn (the image's world position of the voxel) prompts that voxel
    points = widget.prompts.points
    world = tuple(image.data_to_world(marker))
    mouse_press_callbacks(points, _mouse("mouse_press", world))
    mouse_release_callbacks(points, _mouse("mouse_release", world))
    prompt = widget.prompts.prompt_on(z)
    np.testing.assert_allclose(prompt.points, [[y, x]], atol=1e-6)


def test_real_ct_axial_view_is_radiological(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The TotalSegmentator CT (RAS NIfTI) on screen: the spine in the lower half of the canvas,
    the liver (drawn through the segmentation layer) in the left half."""
    from tests._qt._helpers import reference_mask

    viewer, widget = make_widget(lambda: make_napari_viewer(show=True), monkeypatch, tmp_path)
    liver = reference_mask("liver")
    spine = np.zeros_like(liver)
    for name in ("vertebrae_L1", "vertebrae_T12", "vertebrae_L2"):
        try:
            spine |= reference_mask(name)
        except KeyError:
            pass
    z = int(np.argmax((liver.sum(axis=(1, 2)) > 0) * spine.sum(axis=(1, 2))))
    assert liver[z].any() and spine[z].any()
    session = widget.ctrl.session
    obj = session.new_object("liver")
    session.commit_slices(obj.id, {z: liver[z]}, "prompted",
                          {"backend": "test", "model": "reference", "version": "0", "device": "cpu",
                           "random_weights": False})
    widget.ctrl.refresh_labels()
    widget.ctrl.jump_to_slice(z)
    viewer.reset_view()
    img = _shot(viewer, "real_ct_axial")
    color = np.asarray(widget.ctrl.object_color(obj.id))[:3] * 255
    h, w = img.shape[:2]
    # the liver overlay: pixels whose hue follows the object colour (a 0.55 opacity blend over grey)
    rgb = img.astype(float)
    grey = rgb.mean(axis=2, keepdims=True)
    tint = rgb - grey
    target = color - color.mean()
    score = (tint * target).sum(axis=2) / (np.linalg.norm(target) + 1e-9)
    liver_px = np.argwhere(score > 25)
    assert len(liver_px) > 200
    assert liver_px[:, 1].mean() < w / 2, "the liver must be on the viewer's left"
    # the spine: bone (the brightest pixels) in the lower half of the canvas, near the middle
    bone = np.argwhere((rgb.min(axis=2) > 235))
    assert len(bone) > 50
    assert np.median(bone[:, 0]) > h / 2, "the spine must be at the bottom"
