"""The napari layers that hold the prompts of the current object: a Points layer and a Shapes layer.

Points: a click (in the Points layer's *add* mode, which the widget turns on) adds a **positive**
point drawn green; a **Shift**-click adds a **negative** point drawn red. ``N`` flips the polarity of
plain clicks (then Shift-click adds a positive point). Shapes (the "prompts (box)" layer):

- a **rectangle** is a box prompt (the newest rectangle on a slice is the one used);
- a **path** or **line** is a scribble: positive points along it (negative with ``N`` on or Shift
  held when it starts), see :func:`napari_medprompt.segment.prompts.scribble_points`;
- a **polygon** (the polygon or the lasso tool) or an **ellipse** is a lasso: a mask prompt with its
  box (the newest one on a slice), see :func:`napari_medprompt.segment.prompts.lasso_mask`.

Prompts are made in whichever plane the viewer shows: an axial, coronal or sagittal 2D view (napari's
rolled dims / ``dims.order``). Each point and shape records the plane it was drawn in (a ``plane``
feature, set from :meth:`PromptLayers.set_plane`); :meth:`PromptLayers.prompt_on` reads the prompts
of one slice of one plane in that plane's ``(row, col)`` order (the order of
:func:`napari_medprompt.segment.planes.plane_view`). In the 3D view no prompt is accepted: what is
drawn there is removed again and ``refused`` is emitted.

Both layers share the image's scale, translation and display affine (the radiological flip, see
:func:`napari_medprompt.io.layers.display_affine`), so their data coordinates are the image's voxel
indices ``(z, row, col)`` and a click lands on the voxel under the cursor, in any view.
"""

from __future__ import annotations

import numpy as np
from psygnal import Signal

from napari_medprompt.segment.base import Prompt, PromptError
from napari_medprompt.segment.planes import plane_axis, plane_shape
from napari_medprompt.segment.prompts import ellipse_mask, lasso_mask, mask_box, scribble_points

POSITIVE_COLOR = "#00e000"
NEGATIVE_COLOR = "#ff2020"
POINTS_NAME = "prompts (points)"
BOX_NAME = "prompts (box)"
SCRIBBLE_TYPES = ("path", "line")
LASSO_TYPES = ("polygon", "ellipse")


class PromptLayers:
    """Create, own and read the prompt layers of one image layer."""

    changed = Signal()  # the prompts changed (a point or box added, moved or removed)
    refused = Signal(str)  # a prompt drawn where none can be made (the 3D view): the reason

    def __init__(self, viewer, image_layer) -> None:
        self.viewer = viewer
        self.ndim = image_layer.ndim
        self.shape = tuple(int(n) for n in image_layer.data.shape[-self.ndim:])
        self.positive_default = True  # polarity of a plain click (N toggles it)
        self.plane = "axial"  # the plane new prompts are made in (the view shows it)
        self.view_3d = False  # the viewer shows the volume in 3D: prompts are refused
        self._pending_polarity: bool | None = None
        self._muted = False
        self.last_target: tuple[str, int] | None = None  # (plane, slice) of the newest prompt edit
        geo = layer_geometry(image_layer)
        defaults = {"positive": True, "plane": "axial"}
        self.points = viewer.add_points(
            np.zeros((0, self.ndim)),
            name=POINTS_NAME,
            ndim=self.ndim,
            size=max(4.0, 0.012 * float(max(image_layer.data.shape[-2:]) * image_layer.scale[-1])),
            face_color=POSITIVE_COLOR,
            border_color="white",
            border_width=0.1,
            features={"positive": np.zeros(0, dtype=bool), "plane": np.zeros(0, dtype=object)},
            feature_defaults=defaults,
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
            features={"positive": np.zeros(0, dtype=bool), "plane": np.zeros(0, dtype=object)},
            feature_defaults=defaults,
            **geo,
        )
        self.points.mouse_drag_callbacks.insert(0, self._on_press)
        self.shapes.mouse_drag_callbacks.insert(0, self._on_shape_press)
        self.points.events.data.connect(self._on_points_data)
        self.shapes.events.data.connect(self._on_shapes_data)

    @property
    def last_slice(self) -> int | None:
        """Axial slice of the newest prompt edit (None for 2D, or when it was in another plane)."""
        if self.last_target is None or self.ndim != 3 or self.last_target[0] != "axial":
            return None
        return self.last_target[1]

    def set_plane(self, plane: str, view_3d: bool = False) -> None:
        """The plane the viewer now shows (new prompts are made in it); ``view_3d``: none is allowed."""
        self.view_3d = bool(view_3d)
        if self.ndim == 3 and not view_3d:
            plane_axis(plane)
            self.plane = plane
        for layer in (self.points, self.shapes):
            layer.feature_defaults = {"positive": self.positive_default, "plane": self.plane}

    # -- user interaction --------------------------------------------------------------------
    def _polarity_of(self, event) -> bool:
        shift = "Shift" in set(getattr(event, "modifiers", ()) or ())
        return self.positive_default != shift

    def _on_press(self, layer, event):
        """Remember the polarity of the point a click in add mode is about to create."""
        self._pending_polarity = self._polarity_of(event)
        layer.feature_defaults = {"positive": self._pending_polarity, "plane": self.plane}

    def _on_shape_press(self, layer, event):
        """A scribble drawn with Shift held (or with N on) is negative."""
        layer.feature_defaults = {"positive": self._polarity_of(event), "plane": self.plane}

    def _target_of_point(self, i: int) -> tuple[str, int]:
        plane = str(self.points.features["plane"].iloc[i]) if self.ndim == 3 else "axial"
        if self.ndim != 3:
            return "axial", 0
        return plane, int(round(float(self.points.data[i][plane_axis(plane)])))

    def _target_of_shape(self, i: int) -> tuple[str, int]:
        if self.ndim != 3:
            return "axial", 0
        plane = str(self.shapes.features["plane"].iloc[i])
        return plane, _shape_slice(self.shapes.data[i], plane_axis(plane))

    def _refuse_added(self, layer, idx) -> None:
        self._muted = True
        try:
            layer.selected_data = {int(i) % max(len(layer.data), 1) for i in idx}
            layer.remove_selected()
        finally:
            self._muted = False
        self.refused.emit(
            "Prompts are made on a 2D slice, not in the 3D view: switch to 2D (the square/cube "
            "button at the bottom left, or Ctrl+Y) and click on an axial, coronal or sagittal slice."
        )

    def _on_points_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):  # "adding", "removing", "changing": wait for the result
            return
        idx = list(getattr(event, "data_indices", ()) or ())
        if action.endswith("added"):
            if self.view_3d and idx:
                self._refuse_added(self.points, idx)
                return
            polarity = self.positive_default if self._pending_polarity is None else self._pending_polarity
            feats = self.points.features
            for i in idx:
                i = int(i) % max(len(feats), 1)
                feats.loc[feats.index[i], "positive"] = polarity
                feats.loc[feats.index[i], "plane"] = self.plane
                self.last_target = self._target_of_point(i)
            self._pending_polarity = None
        elif len(self.points.data) and idx:
            self.last_target = self._target_of_point(int(idx[-1]) % len(self.points.data))
        self._emit()  # the prediction starts first; recolouring the points overlaps it
        self._recolor()

    def _on_shapes_data(self, event) -> None:
        action = str(getattr(event, "action", "changed"))
        if action.endswith("ing"):
            return
        idx = list(getattr(event, "data_indices", ()) or ())
        if action.endswith("added") and self.view_3d and idx:
            self._refuse_added(self.shapes, idx)
            return
        if len(self.shapes.data) and action.endswith(("added", "changed")):
            i = int(idx[-1]) if idx else len(self.shapes.data) - 1
            self.last_target = self._target_of_shape(i % len(self.shapes.data))
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
    def _coords(self, plane: str, index, rc) -> list[float]:
        """Layer data coordinates of ``(row, col)`` on slice ``index`` of ``plane``."""
        row, col = float(rc[0]), float(rc[1])
        if self.ndim == 2:
            return [row, col]
        rest = [row, col]
        rest.insert(plane_axis(plane), float(index))
        return rest

    def add_point(self, z: int | None, row: float, col: float, positive: bool | None = None,
                  plane: str | None = None) -> None:
        """Add a point as a click would (``positive=None`` follows the current default polarity);
        ``(row, col)`` on slice ``z`` of ``plane`` (the current plane when None)."""
        if plane is not None:
            self.set_plane(plane)
        self._pending_polarity = self.positive_default if positive is None else bool(positive)
        self.points.feature_defaults = {"positive": self._pending_polarity, "plane": self.plane}
        self.points.add(np.asarray([self._coords(self.plane, z, (row, col))], dtype=float))

    def _add_shape(self, plane, z, vertices, shape_type: str, positive: bool | None = None) -> None:
        if plane is not None:
            self.set_plane(plane)
        pos = self.positive_default if positive is None else bool(positive)
        self.shapes.feature_defaults = {"positive": pos, "plane": self.plane}
        data = np.asarray([self._coords(self.plane, z, v) for v in vertices], dtype=float)
        self.shapes.add(data, shape_type=shape_type)

    def add_box(self, z: int | None, r0: float, c0: float, r1: float, c1: float, plane: str | None = None) -> None:
        """Add a box prompt on slice ``z`` (of ``plane``) as drawing a rectangle would."""
        self._add_shape(plane, z, [[r0, c0], [r0, c1], [r1, c1], [r1, c0]], "rectangle")

    def add_scribble(self, z: int | None, path, positive: bool | None = None, plane: str | None = None) -> None:
        """Add a scribble ((M, 2) row, col) on slice ``z`` as drawing a path would."""
        self._add_shape(plane, z, np.asarray(path, dtype=float), "path", positive)

    def add_lasso(self, z: int | None, polygon, plane: str | None = None) -> None:
        """Add a lasso ((M, 2) row, col) on slice ``z`` as the polygon lasso tool would."""
        self._add_shape(plane, z, np.asarray(polygon, dtype=float), "polygon")

    def toggle_polarity(self) -> bool:
        self.positive_default = not self.positive_default
        self.points.feature_defaults = {"positive": self.positive_default, "plane": self.plane}
        self.shapes.feature_defaults = {"positive": self.positive_default, "plane": self.plane}
        self.points.current_face_color = POSITIVE_COLOR if self.positive_default else NEGATIVE_COLOR
        return self.positive_default

    def clear(self, z=None) -> None:
        """Remove the prompts on a slice without emitting ``changed``: ``z`` an axial slice index or
        a ``(plane, index)`` target; all prompts when None."""
        self._muted = True
        try:
            if z is None or self.ndim == 2:
                self.points.data = np.zeros((0, self.ndim))
                self.shapes.data = []
                return
            target = ("axial", int(z)) if not isinstance(z, tuple) else (z[0], int(z[1]))
            idx = [i for i in range(len(self.points.data)) if self._target_of_point(i) == target]
            if idx:
                self.points.selected_data = set(idx)
                self.points.remove_selected()
            idx = [i for i in range(len(self.shapes.data)) if self._target_of_shape(i) == target]
            if idx:
                self.shapes.selected_data = set(idx)
                self.shapes.remove_selected()
        finally:
            self._muted = False

    def targets_with_prompts(self) -> list[tuple[str, int]]:
        """``(plane, slice)`` of every slice holding a prompt."""
        ts = {self._target_of_point(i) for i in range(len(self.points.data))}
        ts |= {self._target_of_shape(i) for i in range(len(self.shapes.data))}
        return sorted(ts)

    def slices_with_prompts(self) -> list[int]:
        """Axial slices holding a prompt (slice 0 for a 2D image)."""
        return sorted({z for plane, z in self.targets_with_prompts() if plane == "axial"})

    def prompt_on(self, z: int, plane: str = "axial") -> Prompt:
        """The prompts on slice ``z`` of ``plane`` (``z`` and ``plane`` are ignored for a 2D image),
        in that plane's ``(row, col)``: points (scribbles add theirs), the newest box, the newest
        lasso as a mask (its box when no rectangle was drawn). Raises ``PromptError`` for a scribble
        or lasso that cannot be used."""
        target = ("axial", 0) if self.ndim == 2 else (plane, int(z))
        shape = self.shape if self.ndim == 2 else plane_shape(self.shape, plane)
        keep = [i for i in range(len(self.points.data)) if self._target_of_point(i) == target]
        pts = np.asarray(self.points.data, dtype=float).reshape(-1, self.ndim)[keep]
        pos = self.points.features["positive"].to_numpy(dtype=bool)[keep] if keep else np.zeros(0, bool)
        if self.ndim == 3:
            pts = np.delete(pts, plane_axis(plane), axis=1)
        labels = pos.astype(int)
        box = mask = None
        types = list(self.shapes.shape_type)
        for i in reversed(range(len(self.shapes.data))):
            if self._target_of_shape(i) != target:
                continue
            rc = np.asarray(self.shapes.data[i], dtype=float)
            if self.ndim == 3:
                rc = np.delete(rc, plane_axis(plane), axis=1)
            kind = types[i]
            if kind == "rectangle" and box is None:
                (r0, c0), (r1, c1) = rc.min(axis=0), rc.max(axis=0)
                box = (float(r0), float(c0), float(r1), float(c1))
            elif kind in LASSO_TYPES and mask is None:
                mask = ellipse_mask(rc, shape) if kind == "ellipse" else lasso_mask(rc, shape)
            elif kind in SCRIBBLE_TYPES:
                positive = bool(self.shapes.features["positive"].iloc[i])
                p, lab = scribble_points(rc, shape, positive)
                pts, labels = np.concatenate([pts, p]), np.concatenate([labels, lab])
        if mask is not None and box is None:
            r0, c0, r1, c1 = mask_box(mask)
            if r1 - r0 >= 1 and c1 - c0 >= 1:
                box = (r0, c0, r1, c1)
        return Prompt(points=pts, labels=labels, box=box, mask=mask)

    def drop_invalid(self, z: int, plane: str = "axial") -> int:
        """Remove the prompts on slice ``z`` of ``plane`` that no backend can use (points outside the
        slice, boxes of zero size or outside it, one-pixel scribbles, crossing or empty lassos),
        without emitting ``changed``; returns how many were removed."""
        from napari_medprompt.segment.validate import _check_box

        target = ("axial", 0) if self.ndim == 2 else (plane, int(z))
        shape = self.shape if self.ndim == 2 else plane_shape(self.shape, plane)
        h, w = shape
        bad_pts = []
        for i in range(len(self.points.data)):
            if self._target_of_point(i) != target:
                continue
            rc = np.asarray(self.points.data[i], dtype=float)
            r, c = (np.delete(rc, plane_axis(plane)) if self.ndim == 3 else rc)
            if not (-0.5 <= r < h - 0.5 and -0.5 <= c < w - 0.5):
                bad_pts.append(i)
        bad_shapes = []
        types = list(self.shapes.shape_type)
        for i in range(len(self.shapes.data)):
            if self._target_of_shape(i) != target:
                continue
            rc = np.asarray(self.shapes.data[i], dtype=float)
            if self.ndim == 3:
                rc = np.delete(rc, plane_axis(plane), axis=1)
            try:
                if types[i] == "rectangle":
                    (r0, c0), (r1, c1) = rc.min(axis=0), rc.max(axis=0)
                    _check_box((r0, c0, r1, c1), shape)
                elif types[i] in LASSO_TYPES:
                    (ellipse_mask if types[i] == "ellipse" else lasso_mask)(rc, shape)
                elif types[i] in SCRIBBLE_TYPES:
                    scribble_points(rc, shape)
            except PromptError:
                bad_shapes.append(i)
        self._muted = True
        try:
            for layer, bad in ((self.points, bad_pts), (self.shapes, bad_shapes)):
                if bad:
                    layer.selected_data = set(bad)
                    layer.remove_selected()
        finally:
            self._muted = False
        return len(bad_pts) + len(bad_shapes)

    def as_record(self, z: int, plane: str = "axial") -> dict:
        """The prompts on slice ``z`` in the session's record format."""
        try:
            p = self.prompt_on(z, plane)
        except PromptError:
            return {"points": [], "labels": [], "box": None}
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


def _shape_slice(data, axis: int = 0) -> int:
    arr = np.asarray(data)
    return int(round(float(arr[:, axis].mean()))) if arr.shape[1] == 3 else 0


def _rgba(color: str) -> np.ndarray:
    from napari.utils.colormaps.standardize_color import transform_color

    return transform_color(color)[0]
