"""Keyboard shortcuts: one table, bound on the viewer and the widget's layers, quoted in tooltips."""

from __future__ import annotations

from napari.utils.key_bindings import coerce_keybinding

from napari_medprompt._qt.shortcuts import SHORTCUTS, keyboard_shortcuts, markdown_table
from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    make_widget,
    stop_workers_after_test,
)


def test_shortcut_table_is_complete_and_quotable():
    keys = dict(keyboard_shortcuts())
    for human in ("K", "G", "N", ".", ",", "Ctrl+Z", "Esc", "Shift+Click"):
        assert human in keys, human
    assert markdown_table().startswith("| Key | Action |")


def test_no_shortcut_takes_a_key_napari_gives_a_layer():
    """napari's own layer and viewer keys (paint P, erase E, select all A, ...) stay napari's; only
    undo/redo replace the Labels layer's (the session's undo covers hand edits and more), and Escape
    is left to the Labels/Shapes layers, where it abandons a polygon or a shape being drawn."""
    from napari.utils.shortcuts import default_shortcuts

    from napari_medprompt._qt.shortcuts import NOT_ON

    napari_keys: dict = {}
    for name, keys in default_shortcuts.items():
        for k in keys:
            napari_keys.setdefault(coerce_keybinding(k), []).append(name)
    for key, _human, action, _ in SHORTCUTS:
        taken = napari_keys.get(coerce_keybinding(key), [])
        if action in ("undo", "redo"):
            continue
        if action in NOT_ON:
            assert all(("labels" in n or "shape" in n or "polygon" in n) for n in taken), (key, taken)
            continue
        assert not taken, (key, taken)


def test_shortcuts_are_bound_and_act(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    targets = [viewer, widget.prompts.points, widget.prompts.shapes, widget.ctrl.labels_layer]
    for target in targets:
        for key, _h, action, _d in SHORTCUTS:
            skipped = action == "cancel" and target in (widget.prompts.shapes, widget.ctrl.labels_layer)
            assert (coerce_keybinding(key) in target.keymap) is not skipped, (target, key)
    assert "Ctrl+Z" in widget.ui.undo.toolTip() and "[K]" in widget.ui.accept.text()

    press = lambda target, key: target.keymap[coerce_keybinding(key)](target)  # noqa: E731
    press(viewer, "K")  # nothing to accept yet: a clear message, nothing changes
    assert "Nothing to accept" in widget.messages[-1][1]
    before = widget.prompts.positive_default
    press(widget.prompts.points, "N")
    assert widget.prompts.positive_default is (not before)
    assert "negative" in widget.ui.polarity.text().split("Shift")[0]
    press(widget.prompts.points, "N")

    session = widget.ctrl.session
    a = widget.new_object("liver")
    b = widget.new_object("spleen")
    assert widget.ctrl.current_object == b
    press(viewer, ".")
    assert widget.ctrl.current_object == a
    press(viewer, ",")
    assert widget.ctrl.current_object == b
    press(widget.ctrl.labels_layer, "Control-Z")  # the session's undo, not napari's layer undo
    assert b not in session.objects
    press(viewer, "Control-Shift-Z")
    assert b in session.objects


def _mouse(kind, position, modifiers=()):
    import numpy as np
    from napari.utils._proxies import ReadOnlyWrapper
    from napari.utils.events import Event

    return ReadOnlyWrapper(Event(
        type_name=kind, is_dragging=False, modifiers=list(modifiers), position=position, pos=np.array([10, 10]),
        view_direction=None, dims_displayed=[1, 2], dims_point=position,
    ))


def test_click_adds_positive_and_shift_click_negative_points(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari.utils.interactions import mouse_press_callbacks, mouse_release_callbacks

    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    points = widget.prompts.points
    assert points.mode == "add" and viewer.layers.selection.active is points
    for pos, mods in (((60.0, 50.0, 60.0), ()), ((60.0, 55.0, 62.0), ("Shift",))):
        world = tuple(points.data_to_world(pos))
        mouse_press_callbacks(points, _mouse("mouse_press", world, mods))
        mouse_release_callbacks(points, _mouse("mouse_release", world, mods))
    assert len(points.data) == 2
    prompt = widget.prompts.prompt_on(60)
    assert prompt.labels.tolist() == [1, 0]
    assert prompt.points.tolist() == [[50.0, 60.0], [55.0, 62.0]]
    colors = points.face_color[:, :3]
    assert colors[0][1] > 0.8 and colors[0][0] < 0.2  # green
    assert colors[1][0] > 0.8 and colors[1][1] < 0.2  # red


def _key(viewer, qtbot, key):
    """Press ``key`` on the canvas, as a user would (napari dispatches it to the active layer first)."""
    canvas = viewer.window._qt_viewer.canvas.native
    canvas.setFocus()
    qtbot.keyClick(canvas, key)


def test_paint_key_on_the_segmentation_layer_stays_napari_s(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from qtpy.QtCore import Qt

    from napari_medprompt._qt.segment.widget import SegmentWidget

    calls = []
    original = SegmentWidget.propagate
    monkeypatch.setattr(SegmentWidget, "propagate", lambda self: (calls.append("propagate"), original(self)))
    viewer, widget = make_widget(lambda: make_napari_viewer(show=True), monkeypatch, tmp_path)
    labels = widget.ctrl.labels_layer
    viewer.layers.selection.active = labels
    labels.mode = "pan_zoom"
    n_messages = len(widget.messages)
    _key(viewer, qtbot, Qt.Key.Key_P)
    qtbot.waitUntil(lambda: labels.mode == "paint", timeout=3000)  # napari's paint brush
    _key(viewer, qtbot, Qt.Key.Key_E)
    qtbot.waitUntil(lambda: labels.mode == "erase", timeout=3000)  # napari's eraser
    assert calls == [] and len(widget.messages) == n_messages  # nothing of the plugin's ran
    _key(viewer, qtbot, Qt.Key.Key_G)  # the plugin's propagate key works on the same layer
    qtbot.waitUntil(lambda: calls == ["propagate"], timeout=3000)
    assert labels.mode == "erase"
