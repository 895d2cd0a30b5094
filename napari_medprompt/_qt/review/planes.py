"""The Review dock's plane mode (mixed into ReviewWidget): the *Plane* chooser lists, accepts and
rejects axial slices or whole coronal / sagittal slices (``AnnotationSession.set_plane_status``); it
follows the plane the viewer shows, choosing a plane shows it, and a row shows that slice of that
plane through the layer's data -> world transform (flipped displays land on the right slice)."""

from __future__ import annotations

import numpy as np

from napari_medprompt.segment.planes import plane_axis, sliced_data_axis
from napari_medprompt.session import ObjectLockedError, SessionError, SessionSaveError
from napari_medprompt.session.review import REVIEW_PLANES


class ReviewPlanes:
    """Plane chooser, view following and plane-slice review of the Review dock."""

    def chosen_plane(self) -> str:
        """The plane whose slices the list shows and the buttons act on: "axial", "coronal", "sagittal"."""
        return self.plane.currentData() or "axial"

    def set_plane(self, plane: str) -> None:
        """Choose ``plane`` for the slice list (as the chooser does)."""
        if plane not in REVIEW_PLANES:
            raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(REVIEW_PLANES)}")
        self.plane.setCurrentIndex(self.plane.findData(plane))

    def _plane_count(self, plane: str) -> int:
        if self.session is not None:
            return int(self.session.shape[REVIEW_PLANES[plane]])
        layer = self.ctrl.image_layer
        return int(layer.data.shape[REVIEW_PLANES[plane]]) if layer is not None and layer.ndim == 3 else 1

    def _set_range_limits(self) -> None:
        plane = self.chosen_plane()
        n = self._plane_count(plane) if self.session is not None else 1
        for sb in (self.range_from, self.range_to):
            sb.setRange(0, max(n - 1, 0))
        self.range_label.setText("Slices from" if plane == "axial" else f"{plane.capitalize()} slices from")

    def _on_plane_chosen(self, _index=None) -> None:
        """A new plane: its slices in the list, the range over its extent, and the viewer shows it."""
        self.slices.clearSelection()
        self._set_range_limits()
        if not self._syncing_plane:
            self._show_plane_in_view(self.chosen_plane())
        self._range_to_object()
        self._fill_slices()

    def view_plane(self) -> str:
        """The plane the viewer shows of the image: "axial", "coronal", "sagittal", or "3d"."""
        return self.ctrl.view_plane()

    def view_index(self, plane: str) -> int:
        """Index of the slice of ``plane`` the viewer is on (0 for a 2D image)."""
        return self.ctrl.view_index(plane)

    @staticmethod
    def _linear(layer) -> np.ndarray:
        return np.asarray(layer.affine.affine_matrix)[:-1, :-1] @ np.diag(layer.scale)

    def _follow_view(self, event=None) -> None:
        """The viewer's dims were rolled (or 2D / 3D switched): list the plane it shows now."""
        try:
            plane = self.view_plane()
            if plane in REVIEW_PLANES and plane != self.chosen_plane():
                self._syncing_plane = True
                try:
                    self.set_plane(plane)
                finally:
                    self._syncing_plane = False
        except RuntimeError:  # the panel was closed while the viewer lives on
            self._disconnect_dims()

    def _disconnect_dims(self) -> None:
        for ev, cb in ((self.viewer.dims.events.current_step, self._mark_current_slice),
                       (self.viewer.dims.events.order, self._follow_view),
                       (self.viewer.dims.events.ndisplay, self._follow_view)):
            try:
                ev.disconnect(cb)
            except Exception:  # the viewer may already be gone
                pass

    def _show_plane_in_view(self, plane: str) -> int | None:
        """Roll a 2D view of the 3D image to ``plane`` (the viewer's point is kept); returns the world
        axis the plane steps along (None when the image is not 3D)."""
        layer = self.ctrl.image_layer
        if layer is None or layer.ndim != 3:
            return None
        dims = self.viewer.dims
        offset = dims.ndim - layer.ndim
        ax = plane_axis(plane)
        linear = self._linear(layer)
        world_ax = next((w for w in range(3) if sliced_data_axis(linear, w) == ax), ax)
        if dims.ndisplay == 2 and self.view_plane() != plane:
            rest = [offset + w for w in range(3) if w != world_ax]
            dims.order = (*range(offset), offset + world_ax, *rest)
        return world_ax

    def _review_plane(self, indices, status: str) -> bool:
        """Accept or reject whole slices of the chosen coronal / sagittal plane (one undo step)."""
        oid = self.selected_object()
        if oid is None or self.session is None:
            return False
        plane = self.chosen_plane()
        indices = sorted({int(i) for i in indices})
        if not indices:
            return False
        name = self.session.objects[oid].display_name
        try:
            changed = self.session.set_plane_status(oid, plane, indices, status)
        except SessionSaveError as err:  # applied in memory; the save failure is reported
            changed = None
            self._message("error", str(err))
        except (ObjectLockedError, SessionError, KeyError, ValueError) as err:
            self._message("warning", str(err).strip("'\""))
            return False
        info = self.session.last_commit_info or {}
        done = [int(i) for i in info.get("plane_slices", indices if changed is None else [])]
        if status == "rejected":
            self.ctrl.refresh_labels(sorted(changed) if changed is not None else None)
        if done:
            lo, hi = min(done), max(done)
            span = f"{plane} slice {lo}" if lo == hi else f"{len(done)} {plane} slices between {lo} and {hi}"
            if status == "rejected":
                n = len(changed) if changed is not None else None
                axial = ("axial slices changed" if n is None else
                         f"{n} axial slice{'' if n == 1 else 's'} changed" if n else
                         "it was not there; no axial slice changed")
                extra = f" and cleared them ({axial}; other objects kept; Undo restores)"
                decided = [f"axial slice{'s' if len(info.get('edited_axial') or ()) > 1 else ''} "
                           f"{', '.join(map(str, info['edited_axial']))}"] if info.get("edited_axial") else []
                decided += [f"{p} slice{'s' if len(v) > 1 else ''} {', '.join(map(str, v))}"
                            for p, v in (info.get("edited_plane") or {}).items() if v]
                if decided:
                    extra += (f"; this also changed what you had decided on {' and '.join(decided)}, "
                              "now marked edited")
            else:
                extra = " (no voxel changed)"
            self._message("info", f"{status.capitalize()} {span} of '{name}'{extra}.")
        else:
            self._message("info", f"'{name}' has nothing on those {plane} slices; nothing changed.")
        self.refresh()
        return bool(done)
