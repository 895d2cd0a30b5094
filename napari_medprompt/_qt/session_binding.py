"""Binding an image layer to an annotation session: the session itself, its layers, hand edits.

- :func:`open_session` finds the image's session folders (by content) and restores the one the user
  picks (everything that verifies; damage named in a warning), else starts a new session in a
  folder of its own (earlier sessions stay and are offered again).
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
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from napari_medprompt.io.layers import volume_from_layer
from napari_medprompt.io.volume import Volume
from napari_medprompt.segment.embedding_cache import image_digest
from napari_medprompt.session import (  # noqa: F401 - find_session/session_folder_for: test hooks
    AnnotationSession,
    SessionCandidate,
    SessionError,
    content_key,
    find_session,
    find_sessions,
    image_key,
    new_session_folder,
    session_folder_for,
)
from napari_medprompt.session.store import SLICE_DIR

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


def open_session(
    volume: Volume,
    ask_restore: Callable[[Path], bool],
    choose: Callable[[list[SessionCandidate]], SessionCandidate | None] | None = None,
) -> tuple[AnnotationSession, str, str]:
    """The session for ``volume``, a message for the user ("" when nothing noteworthy) and its
    level ("info" or "warning").

    Every session folder written for this image (keyed by content, so a moved case folder keeps its
    session; old path-keyed sessions too) is offered: ``ask_restore(folder)`` when there is one,
    ``choose(candidates)`` (None = start a new session) when there are several. A restore brings back
    everything that verifies (:class:`RestoreReport`); a damaged, foreign or unreadable folder is
    named in a warning and left as it is. A new session gets a folder of its own, so no earlier
    session is hidden; a restored session whose folder is read-only moves to a writable one.
    """
    shape, spacing = session_geometry(volume)
    key = content_key(image_digest(np.asarray(volume.data)), shape, spacing)
    legacy = image_key(volume.source, shape, spacing)
    matching, others = find_sessions(volume.source, [key, legacy])
    notes: list[str] = []
    level = "info"
    for other in others:
        level = "warning"
        what = (f"a session that cannot be read ({other.problem})" if other.problem
                else f"the session of another image ('{other.name}', saved {other.saved})")
        notes.append(f"{other.folder} holds {what}; it was left unchanged and not restored.")
    chosen = None
    if len(matching) == 1:
        chosen = matching[0] if ask_restore(matching[0].folder) else None
    elif matching:
        chosen = choose(matching) if choose is not None else matching[0]
    if chosen is not None:
        try:
            session = AnnotationSession.load(chosen.folder, image_key=[key, legacy], shape=shape,
                                             reference=volume, partial=True)
        except SessionError as err:
            level = "warning"
            notes.append(f"The session in {chosen.folder} could not be restored ({err}); it was kept "
                         "unchanged and a new session was started.")
        else:
            if session.image_key != key:  # an old path-keyed session is keyed by content from now on
                session.image_key = key
                try:
                    session.save_unnotified()
                except SessionError:
                    pass
            report = session.restore_report
            if report is not None and not report.complete:
                level = "warning"
            notes.insert(0, report.message() if report is not None else f"Restored the session from {chosen.folder}")
            if not _writable(chosen.folder):
                folder = new_session_folder(volume.source, key, volume.name)
                try:
                    session.set_folder(folder, save=True)
                    notes.append(f"{chosen.folder} is read-only: the session is saved to {folder} from now "
                                 "on (offered when the image is reopened).")
                except SessionError as err:
                    level = "warning"
                    notes.append(str(err))
            return session, " ".join(notes), level
    folder = new_session_folder(volume.source, key, volume.name)
    session = AnnotationSession(
        shape, spacing, image_key=key, image_name=volume.name, folder=folder, reference=volume
    )
    if matching:
        notes.append(f"A new session was started in {folder}; the earlier session(s) are kept and "
                     "offered again when the image is reopened.")
    return session, " ".join(notes), level


def _writable(folder: Path) -> bool:
    labels = folder / SLICE_DIR
    return os.access(folder, os.W_OK) and (not labels.exists() or os.access(labels, os.W_OK))


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
        affine=image_layer.affine.affine_matrix,  # the image's display flip (radiological view)
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
        affine=image_layer.affine.affine_matrix,  # the image's display flip (radiological view)
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
