"""Accepting previews in the Segment widget: axial previews with ``commit_slices``, coronal / sagittal
ones with ``commit_plane``, each with the prompts that made it in the same undo step, and what the
user is told about voxels left as they were (other objects', the user's decisions in another plane).

A mixin of :class:`~napari_medprompt._qt.segment.widget.SegmentWidget` (it uses the widget's
``ctrl``, ``prompts``, previews and notification helpers).
"""

from __future__ import annotations

from napari_medprompt._qt.segment import ui as segment_ui
from napari_medprompt._qt.shortcuts import shortcut_for


class CommitsMixin:
    def _provenance(self, **extra) -> dict:
        seg = self.ctrl.segmenter
        prov = {
            "backend": getattr(seg, "name", None),
            "model": getattr(seg, "model_name", getattr(seg, "name", None)),
            "version": getattr(seg, "version", None),
            "device": str(getattr(seg, "device", "cpu")),
            "random_weights": bool(getattr(seg, "random_weights", False)),
        }
        info = getattr(seg, "provenance_info", None)
        if callable(info):
            prov.update(info())  # checkpoint, model window
        adapter = getattr(seg, "adapter_info", None)
        if adapter is not None or hasattr(seg, "use_adapter"):  # the SAM2 adapter in use (None: base model)
            prov["adapter"] = None if adapter is None else {
                k: adapter.get(k) for k in ("method", "store_version", "sha256", "source")}
        prov["modality"] = getattr(self.volume, "modality", None)
        prov["model_window_choice"] = segment_ui.model_window_value(self._model_window_choice)
        prov["display_preset"] = self.ui.window.currentText() or None
        prov["plane"] = "axial"  # the plane prompted / propagated in (the axial slices are stored)
        prov["plane_slices"] = None  # a coronal / sagittal accept: the slices of that plane
        prov.update(extra)
        return prov

    def accept(self) -> None:
        """Commit the current object's previews into the session and the segmentation layer."""
        if not self._ready(need_segmenter=False):
            return
        if not self._pending:
            self._warn("Nothing to accept: click on the structure (or draw a box) to get a preview first.")
            return
        if self._pending_plane != "axial":
            self._accept_plane()
            return
        oid, masks = self.ctrl.current_object, dict(self._pending)
        prov = dict(self._pending_extra) if self._pending_extra else self._provenance()
        # the prompts are saved with what they produced (not on every click), in the same undo step
        if not self._session_call("commit_slices", oid, masks, "prompted", prov, False,
                                  self._prompt_records(masks, "axial")):
            return
        info = self.ctrl.session.last_commit_info
        self._object_plane[oid] = "axial"
        self._tell_kept(info)
        self._clear_preview()
        for z in masks:
            self.prompts.clear(z)

    def _prompt_records(self, slices, plane: str) -> dict[int, dict]:
        """The prompt records (points, labels, box) on ``slices`` of ``plane``, for the session."""
        out = {}
        for i in slices:
            rec = self.prompts.as_record(i, plane) if self.prompts is not None else None
            if rec and (rec["points"] or rec["box"]):
                out[int(i)] = rec
        return out

    def _tell_kept(self, info: dict) -> None:
        """Say which voxels a commit left as they were (other objects', the user's plane decisions)."""
        blocked, plane_kept = info.get("blocked_voxels", 0), info.get("plane_kept_voxels", 0)
        if blocked:
            self._notify("info", f"{blocked} voxels belonging to other objects were left to them.")
        if plane_kept:
            self._notify("info", f"{plane_kept} voxels on coronal / sagittal slices you decided were left as "
                                 "you decided them (paint or erase there to change them).")

    def _accept_plane(self) -> None:
        """Commit previews made in a coronal or sagittal plane with the session's ``commit_plane``:
        the plane slices are "prompted" (with their prompts recorded in that plane, in the same undo
        step) and are the object's seeds for a propagation along that plane's axis; the axial
        slices the user decided are left as they are, the other axial slices that change become
        "needs review"."""
        plane, oid, masks = self._pending_plane, self.ctrl.current_object, dict(self._pending)
        session = self.ctrl.session
        prov = self._provenance(plane=plane, plane_slices=sorted(int(z) for z in masks))
        if not self._session_call("commit_plane", oid, plane, masks, "prompted", prov,
                                  self._prompt_records(masks, plane)):  # in the plane's (row, col)
            return
        info = session.last_commit_info
        self._object_plane[oid] = plane
        self._tell_kept(info)
        self._clear_preview()
        for z in masks:
            self.prompts.clear((plane, z))
        self.ui.status.setText(plane_accept_text(plane, len(masks), info)
                               + f" {shortcut_for('propagate')} propagates along the {plane} axis.")


def _n(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def plane_accept_text(plane: str, n_plane: int, info: dict) -> str:
    """What an accept in a coronal / sagittal plane did, from ``commit_plane``'s ``last_commit_info``:
    e.g. "Accepted 1 coronal slice: 80 axial slices now hold part of it and need review; 2 axial
    slices you had decided were left as they are."."""
    parts = []
    needs, kept = (len(info.get(k) or ()) for k in ("needs_review", "kept_axial"))
    if needs:
        parts.append(f"{_n(needs, 'axial slice')} now hold{'s' if needs == 1 else ''} part of it and "
                     f"need{'s' if needs == 1 else ''} review")
    if kept:
        parts.append(f"{_n(kept, 'axial slice')} you had decided {'was' if kept == 1 else 'were'} left as "
                     f"{'it is' if kept == 1 else 'they are'}")
    head = f"Accepted {_n(n_plane, f'{plane} slice')}"
    return f"{head}: {'; '.join(parts)}." if parts else f"{head}."
