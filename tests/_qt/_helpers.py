"""Shared helpers for the GUI tests: the real CT in a viewer, a docked Segment widget, waits."""

from __future__ import annotations

import json

import numpy as np

from tests.conftest import shared_file

CT = "totalsegmentator/example_ct.nii.gz"
SEG = "totalsegmentator/example_seg_fast_force_split.nii.gz"
NAMES = "totalsegmentator/label_names_total_and_total_mr.json"


def add_real_ct(viewer):
    """Read the real CT with the project's reader and add it the way the plugin's reader does."""
    from napari_medprompt.io.layers import volume_to_layer_data
    from napari_medprompt.io.read import read_image

    vol = read_image(shared_file(CT))[0]
    data, kwargs, _ = volume_to_layer_data(vol)
    return viewer.add_image(data, **kwargs), vol


def reference_mask(name: str) -> np.ndarray:
    """The TotalSegmentator label of ``name`` in (z, y, x), read with the project's label reader."""
    from napari_medprompt.io.read import read_image

    ids = {v: int(k) for k, v in json.loads(shared_file(NAMES).read_text())["total"].items()}
    seg = read_image(shared_file(SEG))[0].data
    return np.asarray(seg) == ids[name]


def deepest_point(mask2d: np.ndarray) -> tuple[int, int]:
    """The pixel of a 2D mask farthest from its border (a click a user would make inside it)."""
    from scipy import ndimage

    dt = ndimage.distance_transform_edt(mask2d)
    r, c = np.unravel_index(int(dt.argmax()), dt.shape)
    return int(r), int(c)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    s = a.sum() + b.sum()
    return float(2.0 * (a & b).sum() / s) if s else 1.0


def load_backend(qtbot, widget, name: str = "classic", checkpoint: str = "", timeout: int = 60000):
    """Choose ``name`` in the backend box, press Load, wait until it is bound to the image."""
    from qtpy.QtCore import Qt

    widget.backend.backend.setCurrentText(name)
    if checkpoint:
        widget.backend.checkpoint.setText(checkpoint)
        widget.backend.update_status()
    qtbot.mouseClick(widget.backend.load_button, Qt.LeftButton)
    qtbot.waitUntil(lambda: widget._seg_ready or any(lv == "error" for lv, _ in widget.messages),
                    timeout=timeout)
    assert widget._seg_ready, widget.messages


def click(qtbot, widget):
    from qtpy.QtCore import Qt

    def press(button):
        qtbot.mouseClick(button, Qt.LeftButton)

    return press
