"""Object management of the Segment widget: create, select, rename, lock, delete, import a layer.

A mixin of :class:`~napari_medprompt._qt.segment.widget.SegmentWidget` (it uses the widget's
``ctrl``, ``objects`` panel, ``prompts`` and notification helpers); kept apart to keep modules small.
"""

from __future__ import annotations

import numpy as np

from napari_medprompt._qt.session_binding import labels_colormap, sync_label_metadata
from napari_medprompt.session import SessionError, SessionSaveError


def unique_name(name: str, taken) -> str:
    """``name``, or ``name 2``, ``name 3`` ... when an object already has it ("" stays "")."""
    taken = {t.strip().lower() for t in taken}
    if not name or name.lower() not in taken:
        return name
    n = 2
    while f"{name} {n}".lower() in taken:
        n += 1
    return f"{name} {n}"


class ObjectsMixin:
    def _import_labels_layer(self) -> None:
        """Copy a user's Labels layer into the session (their layer is only read)."""
        src = self.ui.labels_source.currentData()
        if src is None or not self._ready(need_segmenter=False):
            return
        session, image = self.ctrl.session, self.ctrl.image_layer
        data = np.asarray(src.data)
        expected = tuple(image.data.shape[: image.ndim])
        self.ui.labels_source.setCurrentIndex(0)
        if data.shape != expected or data.dtype.kind not in "iub":
            self._error(f"The labels layer '{src.name}' has shape {data.shape} ({data.dtype}) but the "
                        f"image '{image.name}' is {expected}: choose a label layer made for this image. "
                        "Nothing was changed.")
            return
        vol = data if data.ndim == 3 else data[None]
        try:
            for oid in np.unique(vol[vol > 0]).tolist():
                if oid not in session.objects:
                    session.new_object(name=f"{src.name} {oid}", object_id=int(oid))
            zs = np.flatnonzero((vol != session.labels).any(axis=(1, 2))).tolist()
            session.apply_edit(None, {z: session.labels[z].copy() for z in zs}, {z: vol[z] for z in zs})
        except SessionSaveError:
            pass  # reported through the session's save_failed event
        except (SessionError, ValueError) as err:
            self._error(f"Could not import '{src.name}': {err}")


    # ------------------------------------------------------------------------------- objects
    def _sync_objects(self) -> None:
        session = self.ctrl.session
        if session is None:
            return
        if self.ctrl.current_object not in session.objects:
            self.ctrl.current_object = 0
        self.objects.set_objects(session.objects, self.ctrl.current_object)
        if self.ctrl.labels_layer is not None:
            sync_label_metadata(self.ctrl.labels_layer, session)
            self.ctrl.labels_layer.colormap = labels_colormap(session)
            if self.ctrl.current_object:
                self.ctrl.labels_layer.selected_label = self.ctrl.current_object
        if self.preview_layer is not None:
            self.preview_layer.colormap = labels_colormap(session)
        self._update_buttons()

    def new_object(self, name: str = "", keep_prompts: bool = False) -> int:
        """Start a new object (the next label id); ``keep_prompts`` keeps the points just placed."""
        if not self._ready(need_segmenter=False):
            return 0
        name = unique_name(name or self.objects.name.currentText().strip(),
                           [o.name for o in self.ctrl.session.objects.values()])
        try:
            obj = self.ctrl.session.new_object(name=name)
        except SessionSaveError:
            obj = max(self.ctrl.session.objects.values(), key=lambda o: o.id)
        self.select_object(obj.id, keep_prompts=keep_prompts)
        return obj.id

    def select_object(self, object_id: int, keep_prompts: bool = False) -> None:
        """Make ``object_id`` the object being prompted (its previews and prompts start empty)."""
        if object_id == self.ctrl.current_object:
            return
        self._clear_preview()
        if self.prompts is not None and not keep_prompts:
            self.prompts.clear()
        self.ctrl.current_object = int(object_id)
        self._sync_objects()

    def _step_object(self, delta: int) -> None:
        ids = sorted(self.ctrl.session.objects) if self.ctrl.session else []
        if ids:
            cur = self.ctrl.current_object
            i = ids.index(cur) + delta if cur in ids else 0
            self.select_object(ids[i % len(ids)])

    def _rename(self, oid: int, name: str) -> None:
        self._session_call("rename", oid, name)

    def delete_object(self, oid: int) -> None:
        if self._session_call("delete_object", oid):
            self._object_plane.pop(oid, None)  # a later object with this id starts afresh
            if oid == self.ctrl.current_object:
                self.select_object(0)

    def _session_call(self, method: str, *args) -> bool:
        if self.ctrl.session is None:
            return False
        try:
            getattr(self.ctrl.session, method)(*args)
            return True
        except SessionSaveError:
            return True  # applied in memory; the save failure was reported
        except (SessionError, ValueError, KeyError) as err:
            self._warn(str(err).strip("'\""))
            self._sync_objects()
            return False

    def _on_session_change(self, event) -> None:
        if event.kind == "save_failed":  # told once until a save succeeds again
            if not self._save_failed_shown:
                self._save_failed_shown = True
                self._error(f"Autosave failed: {self.ctrl.session.last_save_error}")
            return
        if event.kind == "saved":
            self._save_failed_shown = False
            return
        if event.kind == "prompts":  # no voxel changed
            return
        if event.slices and self.ctrl.labels_layer is not None:
            self.ctrl.refresh_labels(event.slices)
        if event.kind in ("objects", "undo", "redo", "edit") or (
            event.object_id is not None and event.object_id not in self._known_ids()
        ):
            self._sync_objects()
        if self.run is not None and self._autosave_during_run and event.kind in ("edit", "status", "objects"):
            self._saver.request(self.ctrl.session)  # autosave is paused during a run: save the user's edit now
        self._update_buttons()

    def _known_ids(self) -> set[int]:
        return {int(self.objects.objects.itemData(i)) for i in range(self.objects.objects.count())}
