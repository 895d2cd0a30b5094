"""Saving and restoring an AnnotationSession (mixed into the class; see session.store for the format)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from napari_medprompt.session.objects import utc_now
from napari_medprompt.session.store import SessionError, SessionSaveError, SessionStore

if TYPE_CHECKING:
    from napari_medprompt.session.session import AnnotationSession


class SessionPersistence:
    """``set_folder``, ``state``, ``save``, ``load``, ``export_nifti`` of an AnnotationSession."""

    # ------------------------------------------------------------------------------ persistence
    def set_folder(self, folder: str | Path, save: bool = True) -> None:
        """Use ``folder`` for saving from now on (everything is written there on the next save)."""
        with self._lock:
            self.folder = Path(folder)
            self._store = SessionStore(self.folder)
            self._dirty = set(range(self.shape[0]))
            if save:
                self.save()

    def state(self) -> dict[str, Any]:
        """The JSON part of the session (everything except the label voxels)."""
        from napari_medprompt import __version__

        image: dict[str, Any] = {"key": self.image_key, "name": self.image_name,
                                 "shape": list(self.shape), "spacing": list(self.spacing)}
        if self.image_class is not None:
            image["class"] = self.image_class
        affine = getattr(self.reference, "affine", None)
        if affine is not None:
            image["affine"] = np.asarray(affine, dtype=float).tolist()
        return {
            "software": f"napari-medprompt {__version__}",
            "session_id": self.uid,
            "created": self.created,
            "saved": utc_now(),
            "image": image,
            "objects": [o.to_dict(deep=False) for _, o in sorted(self.objects.items())],
        }

    def save(self) -> None:
        """Write the changed slices and the session file atomically to :attr:`folder`.

        Raises :class:`SessionSaveError` (folder named, in-memory work intact) on failure.
        """
        event = self.save_unnotified()
        self._emit(event)
        if event.kind == "save_failed":
            raise self.last_save_error

    def save_unnotified(self):
        """:meth:`save` for a background thread: a failed write does not raise, nobody is notified; returns the
        "saved" / "save_failed" event for the caller to pass to :meth:`notify` on its own thread
        (``last_save_error`` holds the failure). Holds the session lock while writing."""
        with self._lock:
            if self.folder is None or self._store is None:
                raise SessionError("this session has no folder to save to; call set_folder(folder) first")
            dirty = set(self._dirty)
            t0 = time.perf_counter()
            try:
                self._store.write(self.state(), self.labels, dirty)
            except SessionSaveError as err:
                self.last_save_error = err
                return self._event("save_failed", None, frozenset(dirty))
            self._dirty -= dirty
            self.last_save_error = None
            self.last_save_seconds = time.perf_counter() - t0
        return self._event("saved", None, frozenset(dirty))

    def notify(self, event) -> None:
        """Pass ``event`` (e.g. from :meth:`save_unnotified`) to the ``on_change`` callbacks."""
        self._emit(event)

    @property
    def unsaved_slices(self) -> set[int]:
        return set(self._dirty)

    @classmethod
    def load(cls, folder: str | Path, *, image_key: str | None = None, shape=None,
             reference: Any = None, autosave: bool = True, partial: bool = False) -> AnnotationSession:
        """Restore a session; ``partial`` restores what verifies and reports the rest in
        ``restore_report`` (see :mod:`napari_medprompt.session.restore`)."""
        from napari_medprompt.session.restore import load_session

        return load_session(cls, folder, image_key=image_key, shape=shape, reference=reference,
                            autosave=autosave, partial=partial)

    def export_nifti(self, path: str | Path, reference: Any = None) -> Path:
        """Save the label map as NIfTI with its JSON sidecar (names, colours) via io.labels_io."""
        from napari_medprompt.session.restore import export_nifti

        return export_nifti(self, path, reference)
