"""Keyboard shortcuts of the Segment widget: one table, used for key bindings, tooltips and the README.

The keys are bound on the viewer and on the layers the widget owns (prompt points, box, segmentation),
so they work whichever of those layers is selected (a layer's own key bindings otherwise win).
"""

from __future__ import annotations

from collections.abc import Callable

# (napari key spec, human-readable key, action id, description)
SHORTCUTS: tuple[tuple[str, str, str, str], ...] = (
    ("A", "A", "accept", "Accept: commit the current object's preview to the segmentation"),
    ("P", "P", "propagate", "Propagate the current object through the volume (or the slice range)"),
    ("T", "T", "toggle_polarity", "Toggle point polarity: plain clicks add positive / negative points"),
    ("N", "N", "next_object", "Next object"),
    ("B", "B", "previous_object", "Previous object"),
    ("Control-Z", "Ctrl+Z", "undo", "Undo the last commit, deletion, edit or propagation"),
    ("Control-Shift-Z", "Ctrl+Shift+Z", "redo", "Redo"),
    ("Escape", "Esc", "cancel", "Cancel a running propagation"),
)

MOUSE_HELP = (
    ("Click", "add a positive point (green) on the current slice"),
    ("Shift+Click", "add a negative point (red)"),
    ("Drag a rectangle", "box prompt (select the 'prompts (box)' layer, rectangle tool)"),
)


def keyboard_shortcuts() -> list[tuple[str, str]]:
    """``[(key, what it does), ...]`` for the README and tooltips (mouse gestures included)."""
    return [(human, desc) for _, human, _, desc in SHORTCUTS] + list(MOUSE_HELP)


def shortcut_for(action: str) -> str:
    """The human-readable key of ``action`` (e.g. ``"A"``), or ``""``."""
    for _, human, act, _ in SHORTCUTS:
        if act == action:
            return human
    return ""


def markdown_table() -> str:
    rows = ["| Key | Action |", "|---|---|"]
    rows += [f"| {k} | {d} |" for k, d in keyboard_shortcuts()]
    return "\n".join(rows)


def bind_shortcuts(targets, actions: dict[str, Callable[[], object]]) -> None:
    """Bind every shortcut whose action is in ``actions`` on each of ``targets`` (viewer, layers)."""
    for target in targets:
        if target is None:
            continue
        for key, _, action, _ in SHORTCUTS:
            fn = actions.get(action)
            if fn is None:
                continue
            target.bind_key(key, _adapter(fn), overwrite=True)


def _adapter(fn: Callable[[], object]):
    def handler(_obj):
        fn()

    handler.__name__ = getattr(fn, "__name__", "medprompt_action")
    return handler
