"""Binding an image layer to an annotation session: the session itself, its layers, hand edits.

- :func:`open_session` finds the image's session folder and restores it when the user agrees (the
  old folder is kept as a backup when they do not), else starts a new session there.
- :func:`make_labels_layer` / :func:`make_preview_layer` create the segmentation and preview Labels
  layers over the image (same scale and translation, so their indices are the image's voxels); the
  segmentation layer carries the image's geometry and the label names in its metadata
  (:func:`sync_label_metadata`), so napari's File > Save writes a NIfTI aligned with the source.
- :class:`EditRecorder` turns napari paint / erase / fill strokes on the segmentation layer into
  :meth:`AnnotationSession.apply_edit` calls (one undo step per stroke, "edited" slices).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from napari_medprompt.io.layers import volume_from_layer
from napari_medprompt.io.volume import Volume
from napari_medprompt.session import (
    AnnotationSession,
    SessionError,
    find_session,
    image_key,
    session_folder_for,
)

log = logging.getLogger(__name__)

LABELS_NAME = "segmentation"
PREVIEW_NAME = "preview"


def layer_volume(layer) -> Volume:
    """The :class:`Volume` behind an image layer (its geometry from the reader's metadata)."""
    return volume_from_layer(np.asarray(layer.data), dict(layer.metadata or {}), scale=tuple(layer.scale))


def session_geometry(volume: Volume) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """Session shape/spacing: a 2D image is a one-slice volume."""
    shape = tuple(int(s) for s in volume.spatial_shape)
    spacing = tuple(float(s) for s in volume.spacing)
    if len(shape) == 2:
        return (1, *shape), (1.0, *spacing)
    return shape, spacing  # type: ignore[return-value]


def open_session(volume: Volume, ask_restore: Callable[[Path], bool]) -> tuple[AnnotationSession, str]:
    """The session for ``volume`` and a message for the user ("" when nothing noteworthy)."""
    shape, spacing = session_geometry(volume)
    key = image_key(volume.source, shape, spacing)
    existing = find_session(key)
    note = ""
    if existing is not None:
        if ask_restore(existing):
            try:
                session = AnnotationSession.load(existing, image_key=key, shape=shape, reference=volume)
                return session, f"Restored the session from {existing}"
            except SessionError as err:
                note = f"The saved session could not be restored ({err}); a new one was started. "
        backup = existing.with_name(
            existing.name + datetime.now(timezone.utc).strftime(".previous-%Y%m%dT%H%M%S")
        )
        try:
            existing.rename(backup)
            note += f"The previous session was kept in {backup}."
        except OSError as err:
            note += f"The previous session in {existing} could not be moved aside ({err})."
    folder = session_folder_for(key)
    session = AnnotationSession(
        shape, spacing, image_key=key, image_name=volume.name, folder=folder, reference=volume
    )
    return session, note


def labels_colormap(session: AnnotationSession):
    """A napari colormap giving each object its session colour (unknown ids grey, 0 clear)."""
    from napari.utils.colormaps import DirectLabelColormap

    colors = {None: np.array([0.6, 0.6, 0.6, 1.0]), 0: np.zeros(4)}
    for oid, obj in session.objects.items():
        colors[int(oid)] = np.array([*map(float, obj.color[:3]), 1.0])
    return DirectLabelColormap(color_dict=colors)


def _display_labels(session: AnnotationSession, ndim: int) -> np.ndarray:
    return session.labels.copy() if ndim == 3 else session.labels[0].copy()


def sync_label_metadata(layer, session: AnnotationSession, image_layer=None) -> None:
    """Give the segmentation layer what napari's File > Save needs to write a NIfTI that overlays
    the source image in other tools: the image's geometry (``metadata["medprompt"]``, copied from
    ``image_layer``) and the objects' names and colours (``label_names`` {id: name}, ``label_info``
    {id: {"name", "color"}}), written into the JSON sidecar."""
    md = layer.metadata
    if image_layer is not None:
        source = (image_layer.metadata or {}).get("medprompt")
        if isinstance(source, dict):
            md["medprompt"] = copy.deepcopy(source)
    md["label_names"] = {int(o.id): o.display_name for o in session.objects.values()}
    md["label_info"] = {int(o.id): {"name": o.display_name, "color": [float(c) for c in o.color[:3]]}
                        for o in session.objects.values()}


def make_labels_layer(viewer, session: AnnotationSession, image_layer):
    """The segmentation Labels layer over ``image_layer`` (a copy of the session's label map)."""
    layer = viewer.add_labels(
        _display_labels(session, image_layer.ndim),
        name=LABELS_NAME,
        scale=image_layer.scale,
        translate=image_layer.translate,
        opacity=0.55,
        colormap=labels_colormap(session),
    )
    layer.metadata["medprompt_session"] = str(session.folder) if session.folder else None
    sync_label_metadata(layer, session, image_layer)
    return layer


def make_preview_layer(viewer, image_layer):
    shape = image_layer.data.shape[: image_layer.ndim]
    layer = viewer.add_labels(
        np.zeros(shape, dtype=np.uint16),
        name=PREVIEW_NAME,
        scale=image_layer.scale,
        translate=image_layer.translate,
        opacity=0.6,
        blending="translucent",
    )
    layer.contour = 0
    layer.editable = False
    return layer


def painted_slices(item, ndim: int) -> set[int]:
    """Slices (first index) touched by one napari Labels history item (a list of atoms)."""
    if ndim == 2:
        return {0}
    zs: set[int] = set()
    for atom in item or ():
        key = getattr(atom, "slice_key", None)
        if key is not None:  # mask-based atom: a bounding box of slices
            s = key[0]
            zs.update(range(int(s.start or 0), int(s.stop)))
        else:  # (indices, old values, new values)
            zs.update(int(z) for z in np.unique(np.asarray(atom[0][0])))
    return zs


class EditRecorder:
    """Records paint/erase strokes on the segmentation layer into the session."""

    def __init__(self, controller, on_error: Callable[[str], None]) -> None:
        self.ctrl = controller
        self.on_error = on_error
        self.enabled = True
        self.n_edits = 0
        self._pending: set[int] = set()
        controller.labels_layer.events.paint.connect(self._on_paint)

    def disconnect(self) -> None:
        layer = self.ctrl.labels_layer
        if layer is not None:
            layer.events.paint.disconnect(self._on_paint)

    def _on_paint(self, event) -> None:
        """napari emits ``paint`` around the write (before it, for a single programmatic edit), so
        the slices are noted now and read once control returns to the event loop."""
        session, layer = self.ctrl.session, self.ctrl.labels_layer
        if not self.enabled or session is None or layer is None:
            return
        try:
            zs = painted_slices(event.value, layer.ndim)
        except Exception:  # an atom format we do not know: compare the whole volume later
            zs = set(range(session.shape[0]))
        if not self._pending:
            from qtpy.QtCore import QTimer

            QTimer.singleShot(0, self.flush)
        self._pending |= {z for z in zs if 0 <= z < session.shape[0]}

    def flush(self) -> None:
        """Record the noted slices that differ from the session as one hand edit."""
        session, layer = self.ctrl.session, self.ctrl.labels_layer
        zs, self._pending = self._pending, set()
        if session is None or layer is None or not zs:
            return
        data = layer.data if layer.ndim == 3 else layer.data[None]
        zs = {z for z in zs if not np.array_equal(data[z], session.labels[z])}
        if not zs:
            return
        before = {z: session.labels[z].copy() for z in zs}
        after = {z: data[z] for z in zs}
        try:
            session.apply_edit(self.ctrl.current_object or None, before, after)
            self.n_edits += 1
            protected = session.last_commit_info.get("protected_voxels", 0)
            if protected:
                self.on_error(
                    f"{protected} voxels of locked (finished) objects were left unchanged; unlock "
                    "an object to edit it"
                )
        except SessionError as err:  # saving failed: the edit is kept in memory
            self.on_error(str(err))
        except Exception as err:  # pragma: no cover - defensive: keep the viewer alive
            log.exception("recording a hand edit failed")
            self.on_error(f"Could not record the edit: {err}")
        self.ctrl.refresh_labels(sorted(zs))
