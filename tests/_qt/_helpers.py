"""Shared helpers for the GUI tests: the real CT in a viewer, a docked Segment widget, waits."""

from __future__ import annotations

import json

import numpy as np
import pytest

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


def press(qtbot, button) -> None:
    """Click a widget button with the left mouse button, as a user would."""
    from qtpy.QtCore import Qt

    qtbot.mouseClick(button, Qt.MouseButton.LeftButton)


def load_backend(qtbot, widget, name: str = "classic", checkpoint: str = "", timeout: int = 60000):
    """Choose ``name`` in the backend box, press Load, wait until it is bound to the image."""
    from qtpy.QtCore import Qt

    widget.backend.backend.setCurrentText(name)
    if checkpoint:
        widget.backend.checkpoint.setText(checkpoint)
        widget.backend.update_status()
    qtbot.mouseClick(widget.backend.load_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: widget._seg_ready or any(lv == "error" for lv, _ in widget.messages),
                    timeout=timeout)
    assert widget._seg_ready, widget.messages


def isolate_sessions(monkeypatch, folder):
    """Keep session folders under ``folder`` (never beside the shared test data)."""
    from napari_medprompt._qt import session_binding
    from napari_medprompt.session.store import MANIFEST

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "image.medprompt"
    monkeypatch.setattr(session_binding, "session_folder_for", lambda key: target)
    monkeypatch.setattr(
        session_binding, "find_session", lambda key: target if (target / MANIFEST).is_file() else None
    )
    # sessions are found / created as if the image were folder/image.nii.gz
    fake_source = folder / "image.nii.gz"
    fake_source.touch()
    real_find, real_new = session_binding.find_sessions, session_binding.new_session_folder
    monkeypatch.setattr(session_binding, "find_sessions", lambda source, keys: real_find(fake_source, keys))
    monkeypatch.setattr(session_binding, "new_session_folder",
                        lambda source, key, name="image": real_new(fake_source, key, name))
    return target


def dock_plugin_widget(viewer, display_name: str):
    """Open the plugin's widget ``display_name`` (napari.yaml) as Plugins > MedPrompt does: napari
    builds it with its own viewer proxy and docks it. Returns the widget."""
    _dock, widget = viewer.window.add_plugin_dock_widget("napari-medprompt", display_name)
    if display_name == "Segment":
        _WIDGETS.append(widget)
    return widget


def make_widget(make_napari_viewer, monkeypatch, tmp_path, restore=True, add_image=add_real_ct):
    """A viewer with the real CT (or ``add_image(viewer)``) and the Segment widget, opened from the
    Plugins menu as a user would (napari hands it a viewer proxy)."""
    from napari_medprompt._qt.segment.widget import SegmentWidget

    isolate_sessions(monkeypatch, tmp_path / "sessions")
    monkeypatch.setattr(SegmentWidget, "ask_restore", staticmethod(lambda folder: restore))
    viewer = make_napari_viewer()
    if add_image is not None:
        add_image(viewer)
    widget = dock_plugin_widget(viewer, "Segment")
    assert isinstance(widget, SegmentWidget)
    return viewer, widget


def click_and_preview(qtbot, widget, z, r, c, positive=None, timeout=30000):
    """Go to slice ``z`` and click at (r, c) as a user would; wait for the preview."""
    widget.ctrl.jump_to_slice(z)
    with qtbot.waitSignal(widget.preview_updated, timeout=timeout):
        widget.prompts.add_point(z, r, c, positive=positive)
    return widget.preview_layer.data[z] > 0


@pytest.fixture(autouse=True)
def stop_workers_after_test(make_napari_viewer):
    """Let no worker thread outlive its test (torn down before the viewer is closed)."""
    yield
    from napari_medprompt._qt.workers import wait_for_workers

    for w in list(_WIDGETS):
        try:
            w._step_timer.stop()
            w._resume_timer.stop()
            w._cancel_all()
        except RuntimeError:  # the Qt side is already gone
            pass
    _WIDGETS.clear()
    wait_for_workers(60000)


_WIDGETS: list = []
