"""Keyboard shortcuts of the Segment widget: one table, used for key bindings, tooltips and the README.

The keys are bound on the viewer and on the layers the widget owns (prompt points, box, segmentation),
so they work whichever of those layers is selected (a layer's own key bindings otherwise win).

None of them takes a key napari gives a layer: napari's Labels, Points and Shapes layers use
P (paint / add points / polygon), E (erase / ellipse), A (select all), B (preserve labels / to back),
T (path), S, R, L, F, D, I, M, O, V, X, Y, Z, C, the digits, ``[ ]``, ``- =`` and Escape/Enter while
drawing (see ``napari.utils.shortcuts.default_shortcuts``); the letters below are the free ones.
Two bindings deliberately replace napari's on the segmentation layer: Ctrl+Z / Ctrl+Shift+Z are the
session's undo/redo there (they undo hand edits too, plus commits and propagations, which napari's
own layer undo knows nothing of). Escape (cancel a propagation) is not bound on the Labels and Shapes
layers, where napari uses it to abandon a polygon or a shape being drawn.
"""

from __future__ import annotations

from collections.abc import Callable

# (napari key spec, human-readable key, action id, description)
SHORTCUTS: tuple[tuple[str, str, str, str], ...] = (
    ("K", "K", "accept", "Keep (accept): commit the current object's preview to the segmentation"),
    ("G", "G", "propagate", "Go through the volume: propagate the current object (or the slice range)"),
    ("N", "N", "toggle_polarity", "Negative clicks on/off: plain clicks add positive / negative points"),
    (".", ".", "next_object", "Next object"),
    (",", ",", "previous_object", "Previous object"),
    ("Control-Z", "Ctrl+Z", "undo", "Undo the last commit, deletion, edit or propagation"),
    ("Control-Shift-Z", "Ctrl+Shift+Z", "redo", "Redo"),
    ("Escape", "Esc", "cancel", "Cancel a running propagation (with the prompt points layer selected)"),
)

#: action -> layer classes (by name) it is not bound on, because napari uses the key there.
NOT_ON: dict[str, tuple[str, ...]] = {"cancel": ("Labels", "Shapes")}

MOUSE_HELP = (
    ("Click", "add a positive point (green) on the current slice"),
    ("Shift+Click", "add a negative point (red)"),
    ("Drag a rectangle", "box prompt (select the 'prompts (box)' layer, rectangle tool)"),
    ("Draw a path", "scribble: positive points along it (negative with N on, or Shift held as it starts)"),
    ("Draw a polygon, lasso or ellipse", "mask prompt of its inside, with its box (a lasso must not cross itself)"),
)


def keyboard_shortcuts() -> list[tuple[str, str]]:
    """``[(key, what it does), ...]`` for the README and tooltips (mouse gestures included)."""
    return [(human, desc) for _, human, _, desc in SHORTCUTS] + list(MOUSE_HELP)


def shortcut_for(action: str) -> str:
    """The human-readable key of ``action`` (e.g. ``"K"``), or ``""``."""
    for _, human, act, _ in SHORTCUTS:
        if act == action:
            return human
    return ""


def markdown_table() -> str:
    rows = ["| Key | Action |", "|---|---|"]
    rows += [f"| {k} | {d} |" for k, d in keyboard_shortcuts()]
    return "\n".join(rows)


def bind_shortcuts(targets, actions: dict[str, Callable[[], object]]) -> None:
    """Bind every shortcut whose action is in ``actions`` on each of ``targets`` (viewer, layers),
    except where :data:`NOT_ON` says napari needs the key on that kind of layer."""
    for target in targets:
        if target is None:
            continue
        kinds = {cls.__name__ for cls in type(target).__mro__}
        for key, _, action, _ in SHORTCUTS:
            fn = actions.get(action)
            if fn is None or kinds & set(NOT_ON.get(action, ())):
                continue
            target.bind_key(key, _adapter(fn), overwrite=True)


def _adapter(fn: Callable[[], object]):
    def handler(_obj):
        fn()

    handler.__name__ = getattr(fn, "__name__", "medprompt_action")
    return handler
