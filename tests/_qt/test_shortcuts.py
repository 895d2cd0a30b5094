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
    for human in ("A", "P", "T", "N", "B", "Ctrl+Z", "Shift+Click"):
        assert human in keys, human
    assert markdown_table().startswith("| Key | Action |")


def test_shortcuts_are_bound_and_act(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    targets = [viewer, widget.prompts.points, widget.prompts.shapes, widget.ctrl.labels_layer]
    for target in targets:
        for key, *_ in SHORTCUTS:
            assert coerce_keybinding(key) in target.keymap, (target, key)
    assert "Ctrl+Z" in widget.ui.undo.toolTip() and "[A]" in widget.ui.accept.text()

    press = lambda target, key: target.keymap[coerce_keybinding(key)](target)  # noqa: E731
    press(viewer, "A")  # nothing to accept yet: a clear message, nothing changes
    assert "Nothing to accept" in widget.messages[-1][1]
    before = widget.prompts.positive_default
    press(widget.prompts.points, "T")
    assert widget.prompts.positive_default is (not before)
    assert "negative" in widget.ui.polarity.text().split("Shift")[0]
    press(widget.prompts.points, "T")

    session = widget.ctrl.session
    a = widget.new_object("liver")
    b = widget.new_object("spleen")
    assert widget.ctrl.current_object == b
    press(viewer, "N")
    assert widget.ctrl.current_object == a
    press(viewer, "B")
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
