"""AnnotationSession: the committed label map of one image and everything about how it was made.

Qt-free; the dock widgets are views over it. Every change (commit, hand edit, review, undo, object
edit) is one undo step built from per-slice diffs, notifies the ``on_change`` callbacks and, with
``autosave``, is written to the session folder before the call returns (only the changed slices;
see :mod:`napari_medprompt.session.store`). Locked objects are never overwritten, and a commit never
writes over another object unless ``overwrite=True``.

The user's decisions are never overwritten by a model: a propagation commit skips axial slices the
user prompted, edited, accepted or rejected, and keeps, voxel by voxel, the rows / columns of the
coronal and sagittal slices the user decided (:mod:`napari_medprompt.session.plane_decisions`).
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from napari_medprompt.session.history import History, Step, apply_step, diff_slices
from napari_medprompt.session.objects import (
    PROPAGATED_STATUSES,
    SLICE_STATUSES,
    SegObject,
    check_class,
    check_plane,
    check_prompt_record,
    check_status,
    default_color,
    merge_provenance,
    new_provenance,
    utc_now,
)
from napari_medprompt.session.persist import SessionPersistence
from napari_medprompt.session.plane_decisions import PlaneDecisions
from napari_medprompt.session.store import SessionSaveError, SessionStore
from napari_medprompt.session.stats import SliceCounts

log = logging.getLogger(__name__)

MAX_LABEL = np.iinfo(np.uint16).max
#: Key of the whole image's record in an undo step's object snapshots (image-level class).
IMAGE_RECORD = "image"


class ObjectLockedError(ValueError):
    """The object is locked (finished); unlock it before changing it."""


class SessionEvent(NamedTuple):
    """What changed: ``kind`` is one of "objects", "labels", "edit", "status", "prompts", "undo",
    "redo", "saved", "save_failed"; ``object_id`` may be None; ``slices`` the slices touched."""

    kind: str
    object_id: int | None
    slices: frozenset[int]


class AnnotationSession(PlaneDecisions, SessionPersistence):
    """Objects, prompts, per-slice review status and provenance over one uint16 label map (z, y, x)."""

    def __init__(
        self,
        shape: tuple[int, int, int],
        spacing: tuple[float, float, float],
        *,
        image_key: str,
        image_name: str = "image",
        folder: str | Path | None = None,
        autosave: bool = True,
        reference: Any = None,
        labels: np.ndarray | None = None,
    ) -> None:
        shape = tuple(int(s) for s in shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"an annotation session needs a 3D image shape (z, y, x), got {shape}")
        spacing = tuple(float(s) for s in spacing)
        if len(spacing) != 3 or min(spacing) <= 0:
            raise ValueError(f"spacing must be three positive millimetre values, got {spacing}")
        self.shape = shape
        self.spacing = spacing
        self.image_key = str(image_key)
        self.image_name = image_name
        self.reference = reference
        self.autosave = autosave
        if labels is None:
            self.labels = np.zeros(shape, dtype=np.uint16)
        else:
            if tuple(labels.shape) != shape:
                raise ValueError(f"label map shape {labels.shape} does not match the image {shape}")
            self.labels = np.ascontiguousarray(labels, dtype=np.uint16)
        self.objects: dict[int, SegObject] = {}
        self.image_class: str | None = None  # class of the whole image (image-level labels)
        self.history = History()
        self.created = utc_now()
        self.uid = uuid.uuid4().hex  # tells this session's folder from another session's
        self.last_save_error: SessionSaveError | None = None
        self.last_save_seconds: float | None = None
        self.last_commit_info: dict[str, Any] = {}
        self.restore_report = None  # a RestoreReport when this session was restored from a folder
        self._counts = SliceCounts(self.labels)
        self._callbacks: list[Callable[[SessionEvent], None]] = []
        self._lock = threading.RLock()
        self._dirty: set[int] = set(range(shape[0]))  # slices not yet on disk
        self._group_touched: set[int] | None = None  # slices the user changed while a group is open
        self._store: SessionStore | None = None
        self.folder: Path | None = None
        if folder is not None:
            self.set_folder(folder, save=False)

    # ---------------------------------------------------------------------------------- objects
    def _get(self, object_id: int) -> SegObject:
        try:
            return self.objects[int(object_id)]
        except KeyError:
            raise KeyError(f"no object with label id {object_id} in this session") from None

    def _unlocked(self, object_id: int, action: str) -> SegObject:
        obj = self._get(object_id)
        if obj.locked:
            raise ObjectLockedError(f"'{obj.display_name}' (label {obj.id}) is locked; unlock it to {action}")
        return obj

    def new_object(self, name: str = "", color=None, object_id: int | None = None) -> SegObject:
        with self._lock:
            oid = int(object_id) if object_id is not None else max(self.objects, default=0) + 1
            if not 1 <= oid <= MAX_LABEL:
                raise ValueError(f"label id {oid} outside 1..{MAX_LABEL}")
            if oid in self.objects:
                raise ValueError(f"label id {oid} is already used by '{self.objects[oid].display_name}'")
            before = {oid: None}
            obj = SegObject(oid, name, tuple(color) if color is not None else default_color(oid))
            obj.provenance = new_provenance()
            self.objects[oid] = obj
            self._finish("new object", {}, before, SessionEvent("objects", oid, frozenset()))
            return obj

    def rename(self, object_id: int, name: str) -> None:
        self._edit_meta(object_id, "rename", lambda o: setattr(o, "name", str(name)))

    def set_color(self, object_id: int, color) -> None:
        self._edit_meta(object_id, "colour", lambda o: setattr(o, "color", tuple(float(c) for c in color)[:3]))

    def set_locked(self, object_id: int, locked: bool) -> None:
        self._edit_meta(object_id, "lock" if locked else "unlock", lambda o: setattr(o, "locked", bool(locked)))

    def set_object_class(self, object_id: int, class_name: str | None) -> None:
        """Give the object a class (e.g. "malignant"); None removes it. One undo step, saved."""
        name = check_class(class_name)
        self._edit_meta(object_id, "class", lambda o: setattr(o, "class_name", name))

    def set_image_class(self, class_name: str | None) -> None:
        """Give the whole image a class (image-level label); None removes it. One undo step, saved;
        the event is ``SessionEvent("objects", None, frozenset())``."""
        name = check_class(class_name)
        with self._lock:
            before = {IMAGE_RECORD: {"class": self.image_class}}
            self.image_class = name
            self._finish("image class", {}, before, SessionEvent("objects", None, frozenset()))

    def object_classes(self) -> dict[int, str]:
        """``{object id: class}`` of the objects that have a class."""
        return {oid: o.class_name for oid, o in sorted(self.objects.items()) if o.class_name is not None}

    def _edit_meta(self, object_id: int, label: str, change: Callable[[SegObject], None]) -> None:
        with self._lock:
            obj = self._get(object_id)
            before = {obj.id: obj.to_dict()}
            change(obj)
            self._finish(label, {}, before, SessionEvent("objects", obj.id, frozenset()))

    def delete_object(self, object_id: int) -> None:
        """Remove the object and clear its voxels (one undo step; undo brings both back)."""
        with self._lock:
            obj = self._unlocked(object_id, "delete it")
            slices = self._counts.slices_of(obj.id)
            planes = {z: self.labels[z].copy() for z in slices}
            for z in slices:
                self.labels[z][self.labels[z] == obj.id] = 0
            before = {obj.id: obj.to_dict()}
            del self.objects[obj.id]
            self._finish("delete object", planes, before, SessionEvent("objects", obj.id, frozenset(slices)))

    def record_prompt(self, object_id: int, slice_index: int, points=(), labels=(), box=None,
                      plane: str = "axial") -> None:
        """Keep the prompts used on a slice (saved with the session; not an undo step). ``plane``:
        "axial" (``slice_index`` an axial slice, kept in ``prompts``) or "coronal" / "sagittal"
        (a slice of that plane, points in its ``(row, col)``, kept in ``plane_prompts``)."""
        with self._lock:
            obj = self._get(object_id)
            index, rec = self._prompt_entry(plane, slice_index, {"points": list(points), "labels": list(labels),
                                                                 "box": box})
            self._put_prompt(obj, plane, index, rec)
            slices = frozenset({index}) if plane == "axial" else frozenset()
            self._notify_and_save(SessionEvent("prompts", obj.id, slices))

    def _prompt_entry(self, plane: str, slice_index, record) -> tuple[int, dict]:
        """(checked slice index, checked prompt record) of a prompt on ``plane``; ValueError if bad."""
        if plane == "axial":
            index = self._check_slice(slice_index)
        else:
            check_plane(plane)
            index = self._check_plane_slice(plane, slice_index)
        return index, check_prompt_record(dict(record))

    @staticmethod
    def _put_prompt(obj: SegObject, plane: str, index: int, rec: dict) -> None:
        store = obj.prompts if plane == "axial" else obj.plane_prompts.setdefault(plane, {})
        if not rec["points"] and rec["box"] is None:
            store.pop(index, None)
        else:
            store[index] = rec
        if plane != "axial" and not store:
            obj.plane_prompts.pop(plane, None)

    # ---------------------------------------------------------------------------------- commits
    def commit_slices(
        self,
        object_id: int,
        masks: Mapping[int, np.ndarray],
        status: str,
        provenance: dict | None = None,
        overwrite: bool = False,
        prompts: Mapping[int, dict] | None = None,
    ) -> set[int]:
        """Replace the object's voxels on each given slice by the mask; returns the slices changed.

        ``prompts``: ``{slice: {"points", "labels", "box"}}``, the prompts that made the masks, kept
        (as :meth:`record_prompt` keeps them) for the slices written, in the same undo step.

        Voxels of locked objects are never written; voxels of other objects only with
        ``overwrite=True``. A propagation commit (status "propagated" or "needs review") writes
        only slices where this object has no status or a propagated one: slices the user prompted,
        edited (an erased slice too), accepted or rejected are skipped (with ``overwrite=True`` too),
        and so is, while an undo group is open, every slice the user changed since it opened.
        Every commit (a propagation's and an accepted axial preview's) also keeps, voxel by voxel,
        what lies on the coronal rows and sagittal columns of plane slices the user decided for this
        object (``plane_status``; see :meth:`commit_plane`): those voxels keep their current value
        (absent on a rejected plane slice); a propagated slice left holding only such voxels is
        "needs review". A hand edit (:meth:`apply_edit`) is the way to change them.
        ``last_commit_info`` says how many voxels were kept for other objects (``blocked_voxels``)
        and for plane decisions (``plane_kept_voxels``) and which slices were skipped. One undo step
        (merged into the open undo group for a propagation commit); autosaved (a
        :class:`SessionSaveError` is raised *after* the change is applied in memory).
        """
        check_status(status)
        if status == "rejected":
            raise ValueError("use set_status(..., 'rejected') to reject slices")
        propagated = status in PROPAGATED_STATUSES
        with self._lock:
            obj = self._unlocked(object_id, "change its mask")
            recs = dict(self._prompt_entry("axial", z, r) for z, r in (prompts or {}).items())
            oid = obj.id
            locked = np.array([i for i, o in self.objects.items() if o.locked], dtype=np.uint16)
            before_obj = {oid: obj.to_dict()}
            planes: dict[int, np.ndarray] = {}
            blocked = plane_kept = 0
            skipped: list[int] = []
            guard = self._plane_guard(obj)
            for key, mask in masks.items():
                z = self._check_slice(key)
                m = np.asarray(mask, dtype=bool)
                if m.shape != self.shape[1:]:
                    raise ValueError(f"mask for slice {z} has shape {m.shape}, the image slices are {self.shape[1:]}")
                if propagated and (obj.slice_status.get(z, "propagated") not in PROPAGATED_STATUSES
                                   or z in (self._group_touched or ())):
                    skipped.append(z)
                    continue
                plane = self.labels[z]
                planes[z] = plane.copy()
                own = plane == oid
                free = ~np.isin(plane, locked) if overwrite else (plane == 0) | own
                plane[own] = 0
                plane[m & free] = oid
                if guard is None:
                    blocked += int(np.count_nonzero(m & ~free))
                else:  # the user's coronal / sagittal decisions keep their voxels
                    blocked += int(np.count_nonzero(m & ~free & ~guard))
                    plane_kept += int(np.count_nonzero((plane != planes[z]) & guard))
                    plane[guard] = planes[z][guard]
                present = plane == oid
                if present.any() or status == "needs review":  # "vanished here?" is a question too
                    only_user = propagated and guard is not None and not (present & ~guard).any()
                    obj.slice_status[z] = "needs review" if only_user and present.any() else status
                else:
                    obj.slice_status.pop(z, None)
            merge_provenance(obj, status, sorted(planes), provenance)
            for z, rec in recs.items():
                if z in planes:
                    self._put_prompt(obj, "axial", z, rec)
            was = {z: before_obj[oid]["slice_status"].get(str(z)) for z in skipped}
            self.last_commit_info = {"blocked_voxels": blocked, "plane_kept_voxels": plane_kept,
                                     "skipped": sorted(skipped),
                                     "skipped_accepted": sorted(z for z in skipped if was[z] == "accepted")}
            changed = self._finish(f"{status} {obj.display_name}", planes, before_obj,
                                   SessionEvent("labels", oid, frozenset(planes)), grouped=propagated)
            return changed

    def retract_propagated(self, object_id: int, slices: Iterable[int]) -> set[int]:
        """Clear the object on those of ``slices`` that still hold only a propagation's result
        (status "propagated" / "needs review", untouched by the user; voxels on plane slices the
        user decided stay, see :meth:`commit_slices`); returns the slices cleared.
        A new propagation run uses this to replace what the previous run left beyond its own end
        (merged into the run's undo group)."""
        with self._lock:
            obj = self._unlocked(object_id, "change its mask")
            zs = [int(z) for z in slices if obj.slice_status.get(int(z)) in PROPAGATED_STATUSES]
            if not zs:
                return set()
            empty = np.zeros(self.shape[1:], dtype=bool)
            return self.commit_slices(obj.id, {z: empty for z in zs}, "propagated")

    def apply_edit(
        self,
        object_id: int | None,
        slices_before: Mapping[int, np.ndarray],
        labels_after: np.ndarray | Mapping[int, np.ndarray] | None = None,
    ) -> set[int]:
        """Record a hand edit (napari paint/erase) of the given slices as one undo step.

        ``slices_before`` holds each touched slice as it was before the edit. The edited planes come
        from ``labels_after`` (a full volume or ``{slice: plane}``), or, when None, are already in
        ``self.labels`` (the Labels layer shares the array). Changes to voxels of locked objects
        are reverted (``last_commit_info["protected_voxels"]``). Objects whose voxels changed get
        "edited" on those slices, and on the coronal / sagittal slices the user had decided for them
        (``plane_status``) that the changed voxels lie on: a hand edit is the user's newest decision
        there. A painted label id with no object becomes a new object.
        """
        with self._lock:
            locked = np.array([i for i, o in self.objects.items() if o.locked], dtype=np.uint16)
            planes: dict[int, np.ndarray] = {}
            protected = 0
            touched: dict[int, set[int]] = {}
            lines: dict[int, list[tuple[np.ndarray, np.ndarray]]] = {}  # rows, columns changed per object
            for key, before in slices_before.items():
                z = self._check_slice(key)
                before = np.asarray(before, dtype=np.uint16)
                if before.shape != self.shape[1:]:
                    raise ValueError(f"slice {z} before the edit has shape {before.shape}, expected {self.shape[1:]}")
                plane = self.labels[z]
                if labels_after is not None:
                    plane[...] = labels_after[z]
                planes[z] = before.copy()
                changed = before != plane
                if locked.size:
                    revert = changed & (np.isin(before, locked) | np.isin(plane, locked))
                    protected += int(np.count_nonzero(revert))
                    plane[revert] = before[revert]
                    changed &= ~revert
                for oid in np.union1d(before[changed], plane[changed]):
                    if oid:
                        touched.setdefault(int(oid), set()).add(z)
                        if int(oid) in self.objects and self.objects[int(oid)].plane_status:
                            mine = changed & ((before == oid) | (plane == oid))
                            lines.setdefault(int(oid), []).append((mine.any(axis=1), mine.any(axis=0)))
            before_obj = {oid: (self.objects[oid].to_dict() if oid in self.objects else None) for oid in touched}
            for oid, zs in touched.items():
                obj = self.objects.get(oid)
                if obj is None:
                    obj = self.objects[oid] = SegObject(oid, "", default_color(oid), provenance=new_provenance())
                for z in zs:
                    obj.slice_status[z] = "edited"
                for rows, cols in lines.get(oid, ()):  # decided plane slices the edit crossed
                    for plane_name, hit in (("coronal", rows), ("sagittal", cols)):
                        per = obj.plane_status.get(plane_name, {})
                        for i in [i for i in per if i < hit.size and hit[i]]:
                            per[i] = "edited"
                merge_provenance(obj, "edited", sorted(zs), {"backend": "manual"} if not obj.provenance.get("backend") else None)
            self.last_commit_info = {"protected_voxels": protected}
            oid_evt = int(object_id) if object_id is not None else None
            return self._finish("hand edit", planes, before_obj, SessionEvent("edit", oid_evt, frozenset(planes)))

    def set_status(self, object_id: int, slices: Iterable[int], status: str) -> set[int]:
        """Accept or reject slices of one object (one undo step). Rejecting clears that object's
        voxels on those slices and nothing else. Only slices where the object has voxels or a
        status are marked; returns them."""
        check_status(status, ("accepted", "rejected"))
        with self._lock:
            obj = self._unlocked(object_id, "reject slices") if status == "rejected" else self._get(object_id)
            present = set(self._counts.slices_of(obj.id)) | set(obj.slice_status)
            targets = sorted({int(z) for z in slices if 0 <= int(z) < self.shape[0]} & present)
            before_obj = {obj.id: obj.to_dict()}
            planes: dict[int, np.ndarray] = {}
            for z in targets:
                obj.slice_status[z] = status
                if status == "rejected":
                    plane = self.labels[z]
                    planes[z] = plane.copy()
                    plane[plane == obj.id] = 0
            merge_provenance(obj, status, targets, None)
            self._finish(f"{status} {obj.display_name}", planes, before_obj,
                         SessionEvent("status", obj.id, frozenset(targets)))
            return set(targets)

    def status_of(self, object_id: int, slice_index: int) -> str | None:
        return self._get(object_id).slice_status.get(int(slice_index))

    # ------------------------------------------------------------------------------- undo/redo
    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def begin_undo_group(self, label: str) -> None:
        """Make the propagation commits from now until :meth:`end_undo_group` one undo step (a
        propagation committed and autosaved in chunks as it runs); an undo or redo ends the group.
        Anything else the user does meanwhile is an undo step of its own, and the slices it changes
        are never written by the group's later propagation commits."""
        with self._lock:
            self.history.begin_group(label)
            self._group_touched = set()

    def end_undo_group(self) -> None:
        with self._lock:
            self.history.end_group()
            self._group_touched = None

    def undo(self) -> bool:
        return self._step(self.history.pop_undo(), forward=False)

    def redo(self) -> bool:
        return self._step(self.history.pop_redo(), forward=True)

    def _step(self, step: Step | None, forward: bool) -> bool:
        if step is None:
            return False
        with self._lock:
            slices = apply_step(self.labels, step, forward)
            snapshot = step.objects_after if forward else step.objects_before
            for oid, data in (snapshot or {}).items():
                if oid == IMAGE_RECORD:
                    self.image_class = (data or {}).get("class")
                elif data is None:
                    self.objects.pop(oid, None)
                else:
                    self.objects[oid] = SegObject.from_dict(data)
            self._touch(slices)
            ids = [k for k in (snapshot or {}) if k != IMAGE_RECORD]
            event = SessionEvent("redo" if forward else "undo", ids[0] if len(ids) == 1 else None, frozenset(slices))
            self._notify_and_save(event)
        return True

    # ------------------------------------------------------------------------------------ stats
    def object_stats(self, object_id: int) -> dict[str, Any]:
        """``slices_covered`` (count), ``slice_range`` (first, last) or None, ``n_voxels``,
        ``volume_ml`` (from the spacing)."""
        self._get(object_id)
        with self._lock:
            per_slice = self._counts.per_slice(int(object_id))
        n = int(sum(per_slice.values()))
        zs = sorted(per_slice)
        return {
            "slices_covered": len(zs),
            "slice_range": (zs[0], zs[-1]) if zs else None,
            "n_voxels": n,
            "volume_ml": n * float(np.prod(self.spacing)) / 1000.0,
        }

    def slice_voxels(self, object_id: int) -> dict[int, int]:
        """``{slice: voxel count}`` of the object on the slices where it has voxels."""
        self._get(object_id)
        with self._lock:
            return self._counts.per_slice(int(object_id))

    def label_info(self) -> dict[int, dict[str, Any]]:
        return {o.id: {"name": o.display_name, "color": list(o.color)} for o in self.objects.values()}

    # ---------------------------------------------------------------------------------- events
    def on_change(self, callback: Callable[[SessionEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes."""
        self._callbacks.append(callback)

        def unsubscribe() -> None:
            if callback in self._callbacks:
                self._callbacks.remove(callback)

        return unsubscribe

    def _emit(self, event: SessionEvent) -> None:
        for cb in list(self._callbacks):
            try:
                cb(event)
            except Exception:  # a broken view must not break the session
                log.exception("session change callback %r failed", cb)

    @staticmethod
    def _event(kind: str, object_id: int | None, slices) -> SessionEvent:
        return SessionEvent(kind, object_id, frozenset(slices))

    def _check_slice(self, z) -> int:
        z = int(z)
        if not 0 <= z < self.shape[0]:
            raise ValueError(f"slice {z} is outside the image (0..{self.shape[0] - 1})")
        return z

    def _touch(self, slices: Iterable[int]) -> None:
        slices = set(slices)
        self._dirty |= slices
        self._counts.invalidate(slices)

    def _finish(self, label: str, planes: dict[int, np.ndarray], objects_before: dict, event: SessionEvent,
                grouped: bool = False) -> set[int]:
        """Push the undo step for a change already applied, then notify and autosave. ``grouped``:
        a propagation commit (merged into an open undo group); anything else is the user's."""
        diffs = diff_slices(planes, self.labels, planes)
        after = {oid: ({"class": self.image_class} if oid == IMAGE_RECORD else
                       self.objects[oid].to_dict() if oid in self.objects else None) for oid in objects_before}
        if not grouped and self._group_touched is not None:
            self._group_touched |= set(planes) | set(event.slices)
        if diffs or after != objects_before:
            self.history.push(Step(label, diffs, objects_before, after), grouped=grouped)
        self._touch(diffs)
        self._notify_and_save(event)
        return set(diffs)

    def _notify_and_save(self, event: SessionEvent) -> None:
        self._emit(event)
        if self.autosave and self.folder is not None:
            self.save()


__all__ = ["AnnotationSession", "ObjectLockedError", "SessionEvent", "SLICE_STATUSES"]
