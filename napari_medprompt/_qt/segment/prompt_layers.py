"""The napari layers that hold the prompts of the current object: a Points layer and a Shapes layer.

Points: a click (in the Points layer's *add* mode, which the widget turns on) adds a **positive**
point drawn green; a **Shift**-click adds a **negative** point drawn red. ``N`` flips the polarity of
plain clicks (then Shift-click adds a positive point). Shapes: rectangles drawn on a slice are box
prompts (the newest rectangle on a slice is the one used).

Both layers share the image's scale, translation and display affine (the radiological flip, see
:func:`napari_medprompt.io.layers.display_affine`), so their data coordinates are the image's voxel
indices ``(z, row, col)`` and a click lands on the voxel under the cursor. :class:`PromptLayers`
turns their contents on one slice into a :class:`~napari_medprompt.segment.base.Prompt` and emits
``changed`` whenever the user edits them.
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from napari_medprompt.segment.base import Prompt

POSITIVE_COLOR = "#00e000"
NEGATIVE_COLOR = "#ff2020"
POINTS_NAME = "prompts (points)"
BOX_NAME = "prompts (box)"


class PromptLayers:
    """Create, own and read the prompt layers of one image layer."""

    changed = Signal()  # the prompts changed (a point or box added, moved or removed)

    def __init__(self, viewer, image_layer) -> None:
        self.viewer = viewer
        self.ndim = image_layer.ndim
        self.positive_default = True  # polarity of a plain click (N toggles it)
        self._pending_polarity: bool | None = None
        self._muted = False
        self.last_slice: int | None = None  # slice of the newest prompt edit (None for 2D)
        geo = layer_geometry(image_layer)
        self.points = viewer.add_points(
            np.zeros((0, self.ndim)),
            name=POINTS_NAME,
            ndim=self.ndim,
            size=max(4.0, 0.012 * float(max(image_layer.data.shape[-2:]) * image_layer.scale[-1])),
            face_color=POSITIVE_COLOR,
            border_color="white",
            border_width=0.1,
            features={"positive": np.zeros(0, dtype=bool)},
            feature_defaults={"positive": True},
            out_of_slice_display=False,
            **geo,
        )
        self.shapes = viewer.add_shapes(
            None,
            ndim=self.ndim,
            name=BOX_NAME,
            shape_type="rectangle",
            edge_color="#ffd000",
            face_color=[0, 0, 0, 0],
            edge_width=1.5 * float(image_layer.scale[-1]),
            **geo,
        )
        self.points.mouse_drag_callbacks.insert(0, self._on_press)
        self.points.events.data.connect(self._on_points_data)
        self.shapes.events.data.connect(self._on_shapes_data)

    # -- user interaction --------------------------------------------------------------------
    def _on_press(self, layer, event):
        """Remember the polarity of the point a click in add mode is about to create."""
        shift = "Shift" in set(getattr(event, "modifiers", ()) or ())
        self._pending_polarity = self.positive_default != shift
        layer.feature_defaults = {"positive": self._pending_polarity}

    def _on_points_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):  # "adding", "removing", "changing": wait for the result
            return
        if action.endswith("added"):
            idx = list(getattr(event, "data_indices", ()) or ())
            polarity = self.positive_default if self._pending_polarity is None else self._pending_polarity
            feats = self.points.features
            for i in idx:
                i = int(i) % max(len(feats), 1)
                feats.loc[feats.index[i], "positive"] = polarity
                if self.ndim == 3:
                    self.last_slice = int(round(float(self.points.data[i][0])))
            self._pending_polarity = None
        elif self.ndim == 3 and len(self.points.data) and getattr(event, "data_indices", None):
            i = int(list(event.data_indices)[-1]) % len(self.points.data)
            self.last_slice = int(round(float(self.points.data[i][0])))
        self._emit()  # the prediction starts first; recolouring the points overlaps it
        self._recolor()

    def _on_shapes_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):
            return
        if self.ndim == 3 and len(self.shapes.data) and action.endswith(("added", "changed")):
            idx = list(getattr(event, "data_indices", ()) or ())
            i = int(idx[-1]) if idx else len(self.shapes.data) - 1
            self.last_slice = _shape_slice(self.shapes.data[i % len(self.shapes.data)])
        self._emit()

    def _emit(self) -> None:
        if not self._muted:
            self.changed.emit()

    def _recolor(self) -> None:
        n = len(self.points.data)
        if n == 0:
            return
        pos = self.points.features["positive"].to_numpy(dtype=bool)
        colors = np.where(pos[:, None], _rgba(POSITIVE_COLOR), _rgba(NEGATIVE_COLOR))
        self.points.face_color = colors

    # -- programmatic use --------------------------------------------------------------------
    def add_point(self, z: int | None, row: float, col: float, positive: bool | None = None) -> None:
        """Add a point as a click would (``positive=None`` follows the current default polarity)."""
        self._pending_polarity = self.positive_default if positive is None else bool(positive)
        coords = [row, col] if self.ndim == 2 else [z, row, col]
        self.points.feature_defaults = {"positive": self._pending_polarity}
        self.points.add(np.asarray([coords], dtype=float))

    def add_box(self, z: int | None, r0: float, c0: float, r1: float, c1: float) -> None:
        """Add a box prompt on slice ``z`` as drawing a rectangle would."""
        corners = [[r0, c0], [r0, c1], [r1, c1], [r1, c0]]
        if self.ndim == 3:
            corners = [[z, r, c] for r, c in corners]
        self.shapes.add_rectangles(np.asarray(corners, dtype=float))

    def toggle_polarity(self) -> bool:
        self.positive_default = not self.positive_default
        self.points.feature_defaults = {"positive": self.positive_default}
        self.points.current_face_color = POSITIVE_COLOR if self.positive_default else NEGATIVE_COLOR
        return self.positive_default

    def clear(self, z: int | None = None) -> None:
        """Remove the prompts on slice ``z`` (all slices when None) without emitting ``changed``."""
        self._muted = True
        try:
            if z is None or self.ndim == 2:
                self.points.data = np.zeros((0, self.ndim))
                self.shapes.data = []
            else:
                keep = np.round(self.points.data[:, 0]) != z if len(self.points.data) else []
                if len(self.points.data):
                    self.points.selected_data = set(np.flatnonzero(~np.asarray(keep)).tolist())
                    self.points.remove_selected()
                idx = [i for i, d in enumerate(self.shapes.data) if _shape_slice(d) == z]
                if idx:
                    self.shapes.selected_data = set(idx)
                    self.shapes.remove_selected()
        finally:
            self._muted = False

    def slices_with_prompts(self) -> list[int]:
        zs = set()
        if self.ndim == 3:
            zs |= {int(round(p[0])) for p in self.points.data}
            zs |= {_shape_slice(d) for d in self.shapes.data}
        elif len(self.points.data) or len(self.shapes.data):
            zs.add(0)
        return sorted(zs)

    def prompt_on(self, z: int) -> Prompt:
        """The points and the newest box lying on slice ``z`` (``z`` is ignored for a 2D image)."""
        pts = np.asarray(self.points.data, dtype=float).reshape(-1, self.ndim)
        pos = self.points.features["positive"].to_numpy(dtype=bool) if len(pts) else np.zeros(0, bool)
        if self.ndim == 3:
            on = np.round(pts[:, 0]).astype(int) == int(z) if len(pts) else np.zeros(0, bool)
            pts, pos = pts[on][:, 1:], pos[on]
        box = None
        for d in reversed(list(self.shapes.data)):
            if self.ndim == 2 or _shape_slice(d) == int(z):
                rc = np.asarray(d)[:, -2:]
                (r0, c0), (r1, c1) = rc.min(axis=0), rc.max(axis=0)
                box = (float(r0), float(c0), float(r1), float(c1))
                break
        return Prompt(points=pts, labels=pos.astype(int), box=box)

    def as_record(self, z: int) -> dict:
        """The prompts on slice ``z`` in the session's record format."""
        p = self.prompt_on(z)
        return {
            "points": p.points.tolist(),
            "labels": p.labels.tolist(),
            "box": list(p.box) if p.box is not None else None,
        }

    def remove(self) -> None:
        """Take both layers out of the viewer."""
        for layer in (self.points, self.shapes):
            if layer in self.viewer.layers:
                self.viewer.layers.remove(layer)


def layer_geometry(image_layer) -> dict:
    """The kwargs that put a new layer exactly over ``image_layer`` (same data coordinates):
    its scale, translation and display affine (rotation and shear, when napari set any)."""
    return {"scale": image_layer.scale, "translate": image_layer.translate,
            "rotate": image_layer.rotate, "shear": image_layer.shear,
            "affine": image_layer.affine.affine_matrix}


def _shape_slice(data) -> int:
    arr = np.asarray(data)
    return int(round(float(arr[:, 0].mean()))) if arr.shape[1] == 3 else 0


def _rgba(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]
