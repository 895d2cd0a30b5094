"""The annotation state one napari viewer shares between the Segment and Review dock widgets.

``controller_for(viewer)`` returns the same :class:`AnnotationController` for a viewer every time,
so both widgets see one session, one segmentation Labels layer and one segmenter. napari gives each
plugin dock widget its own proxy of the viewer (``PublicOnlyProxy``), so the lookup is keyed by the
viewer behind the proxy (:func:`real_viewer`), never by the handle a widget was given. The controller
holds the viewer weakly (closing the viewer frees it) and does no work of its own beyond moving
data between the Qt-free :class:`~napari_medprompt.session.AnnotationSession` and napari layers.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Any

import numpy as np
from psygnal import Signal

_CONTROLLERS: dict[int, AnnotationController] = {}


def real_viewer(viewer):
    """The napari viewer behind ``viewer``: napari hands plugin widgets a ``PublicOnlyProxy`` (a
    wrapt ObjectProxy, one per widget), which is unwrapped here; a plain viewer is returned as is."""
    seen = 0
    while hasattr(type(viewer), "__wrapped__") and seen < 8:  # proxy classes define __wrapped__
        inner = getattr(viewer, "__wrapped__", None)
        if inner is None or inner is viewer:
            break
        viewer, seen = inner, seen + 1
    return viewer


def controller_for(viewer) -> AnnotationController:
    """The one controller of ``viewer`` (created on first use, forgotten when the viewer goes).
    ``viewer`` may be the viewer or any proxy napari made of it."""
    viewer = real_viewer(viewer)
    key = id(viewer)
    ctrl = _CONTROLLERS.get(key)
    if ctrl is None or ctrl.viewer is not viewer:
        ctrl = AnnotationController(viewer)
        _CONTROLLERS[key] = ctrl
        weakref.finalize(viewer, _CONTROLLERS.pop, key, None)
    return ctrl


class AnnotationController:
    """Session, layers and segmenter of one viewer.

    Signals
    -------
    session_changed(session)
        A new :class:`AnnotationSession` (or None) was bound.
    current_object_changed(object_id)
        The object being prompted changed (0 = none).
    segmenter_changed(segmenter)
        A backend was loaded (or None when unloaded).
    labels_refreshed(slices)
        The segmentation layer was re-read from the session (``None`` = every slice).
    """

    session_changed = Signal(object)
    current_object_changed = Signal(int)
    segmenter_changed = Signal(object)
    labels_refreshed = Signal(object)

    def __init__(self, viewer) -> None:
        self._viewer_ref = weakref.ref(viewer)
        self.session = None  # AnnotationSession | None
        self.image_layer = None  # napari Image layer the session belongs to
        self.labels_layer = None  # napari Labels layer showing session.labels
        self.segmenter = None  # a Segmenter bound to the image, or None
        self.volume = None  # io.Volume describing the image (geometry, modality), when known
        self._current_object = 0

    # -- state -------------------------------------------------------------------------------
    @property
    def viewer(self):
        return self._viewer_ref()

    @property
    def current_object(self) -> int:
        return self._current_object

    @current_object.setter
    def current_object(self, object_id: int) -> None:
        object_id = int(object_id or 0)
        if object_id != self._current_object:
            self._current_object = object_id
            self.current_object_changed.emit(object_id)

    def bind_session(self, session, image_layer=None, labels_layer=None, volume=None) -> None:
        """Make ``session`` the viewer's session (its labels shown in ``labels_layer``)."""
        self.session = session
        if image_layer is not None:
            self.image_layer = image_layer
        if labels_layer is not None:
            self.labels_layer = labels_layer
        if volume is not None:
            self.volume = volume
        self._current_object = 0
        self.session_changed.emit(session)

    def set_segmenter(self, segmenter) -> None:
        self.segmenter = segmenter
        self.segmenter_changed.emit(segmenter)

    # -- navigation ----------------------------------------------------------------------------
    def current_slice(self) -> int:
        """Index along the image's first axis of the slice the viewer shows (0 for a 2D image)."""
        viewer, layer = self.viewer, self.image_layer
        if viewer is None or layer is None or layer.ndim < 3:
            return 0
        world = np.asarray(viewer.dims.point)[-layer.ndim :]
        z = float(layer.world_to_data(world)[0])
        n = layer.data.shape[0]
        return int(min(max(round(z), 0), n - 1))

    def view_plane(self) -> str:
        """The plane the viewer shows of the image: "axial", "coronal", "sagittal", or "3d" (a 2D
        image, or nothing bound: "axial")."""
        from napari_medprompt.segment.planes import VIEW_3D, view_plane

        viewer, layer = self.viewer, self.image_layer
        if viewer is None or layer is None or layer.ndim != 3:
            return "axial"
        dims = viewer.dims
        offset = dims.ndim - layer.ndim
        sliced = [d - offset for d in dims.not_displayed if d >= offset]
        linear = np.asarray(layer.affine.affine_matrix)[:-1, :-1] @ np.diag(layer.scale)
        try:
            return view_plane(dims.ndisplay, sliced, linear)
        except ValueError:
            return VIEW_3D

    def view_index(self, plane: str) -> int:
        """Index of the slice of ``plane`` the viewer is on (0 for a 2D image or nothing bound)."""
        from napari_medprompt.segment.planes import plane_axis

        viewer, layer = self.viewer, self.image_layer
        if viewer is None or layer is None or layer.ndim != 3:
            return 0
        world = np.asarray(viewer.dims.point)[-layer.ndim:]
        ax = plane_axis(plane)
        v = float(layer.world_to_data(world)[ax])
        return int(min(max(round(v), 0), layer.data.shape[ax] - 1))

    def jump_to_slice(self, z: int) -> None:
        """Show slice ``z`` of the image (no-op for a 2D image or when nothing is bound)."""
        viewer, layer = self.viewer, self.image_layer
        if viewer is None or layer is None or layer.ndim < 3:
            return
        z = int(min(max(int(z), 0), layer.data.shape[0] - 1))
        data_pt = np.zeros(layer.ndim)
        data_pt[0] = z
        world_z = float(np.asarray(layer.data_to_world(data_pt))[0])
        axis = viewer.dims.ndim - layer.ndim
        viewer.dims.set_point(axis, world_z)

    def shows_any(self, layer, slices: Iterable[int]) -> bool:
        """Whether a redraw of ``layer`` is needed after a change to ``slices`` (first-axis indices):
        False only when the viewer shows one 2D plane across the first axis and it is none of them."""
        viewer = self.viewer
        if viewer is None or layer is None or layer.ndim < 3:
            return True
        offset = viewer.dims.ndim - layer.ndim
        if viewer.dims.ndisplay != 2 or [d - offset for d in viewer.dims.not_displayed if d >= offset] != [0]:
            return True
        z = float(layer.world_to_data(np.asarray(viewer.dims.point)[offset:])[0])
        z = int(min(max(round(z), 0), layer.data.shape[0] - 1))
        return z in {int(s) for s in slices}

    # -- layers --------------------------------------------------------------------------------
    def refresh_labels(self, slices: Iterable[int] | None = None) -> None:
        """Copy ``session.labels`` (all slices, or only ``slices``) into the Labels layer and redraw.

        The layer holds its own copy so that napari's paint tools never change the session behind
        its back; hand edits reach the session through the Segment widget as recorded edits. The
        layer is redrawn only when a changed slice is on screen (napari re-reads the data when the
        viewer moves to another slice), so chunks committed during a propagation cost no redraw.
        """
        session, layer = self.session, self.labels_layer
        if session is None or layer is None:
            return
        src = session.labels
        dst = layer.data
        if dst.ndim == 2 and src.ndim == 3 and src.shape[0] == 1:  # a 2D image: session is (1, y, x)
            src = src[0]
            slices = None
        if tuple(dst.shape) != tuple(src.shape):
            raise ValueError(
                f"the labels layer {layer.name!r} has shape {tuple(dst.shape)} but the session's "
                f"label map is {tuple(src.shape)}; they must match the image"
            )
        if slices is None:
            np.copyto(dst, src, casting="unsafe")
            refreshed: Any = None
        else:
            refreshed = sorted({int(z) for z in slices})
            for z in refreshed:
                dst[z] = src[z]
        if refreshed is None or self.shows_any(layer, refreshed):
            layer.refresh()
        self.labels_refreshed.emit(refreshed)

    def object_color(self, object_id: int):
        """RGBA of ``object_id`` as the labels layer draws it (for swatches in the widgets)."""
        layer = self.labels_layer
        if layer is None:
            return None
        return np.asarray(layer.get_color(int(object_id)))
