"""Decisions made in a coronal or sagittal plane (mixed into AnnotationSession).

The session stores axial slices; what the user decides in another plane is recorded as what it is
(``SegObject.plane_status`` / ``plane_prompts``) and protected voxel by voxel: a preview accepted in
one plane never overrides a decision made in another, while a hand edit or a rejection (the user's
newest decision) does and marks the decided slices it changes "edited".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from napari_medprompt.session.objects import USER_STATUSES, SegObject, check_plane, check_status, merge_provenance

#: The (z, y, x) axis each plane's slices step along (as in :mod:`napari_medprompt.segment.planes`).
PLANE_AXES = {"axial": 0, "coronal": 1, "sagittal": 2}


class PlaneDecisions:
    """``commit_plane`` and ``set_plane_status`` of an AnnotationSession, and the guard every
    commit applies to the user's plane decisions."""

    def _plane_guard(self, obj: SegObject) -> np.ndarray | None:
        """The (y, x) voxels of every axial slice that lie on a coronal row or sagittal column the
        user decided for ``obj`` (the same for each axial slice), or None when there is none."""
        rows = [i for i in obj.plane_slices("coronal", USER_STATUSES) if i < self.shape[1]]
        cols = [i for i in obj.plane_slices("sagittal", USER_STATUSES) if i < self.shape[2]]
        if not rows and not cols:
            return None
        r = np.zeros(self.shape[1], dtype=bool)
        c = np.zeros(self.shape[2], dtype=bool)
        r[rows] = True
        c[cols] = True
        return r[:, None] | c[None, :]

    def _check_plane_slice(self, plane: str, index) -> int:
        i, n = int(index), self.shape[PLANE_AXES[check_plane(plane)]]
        if not 0 <= i < n:
            raise ValueError(f"{plane} slice {i} is outside the image (0..{n - 1})")
        return i

    def commit_plane(
        self,
        object_id: int,
        plane: str,
        masks: Mapping[int, np.ndarray],
        status: str = "prompted",
        provenance: dict | None = None,
        prompts: Mapping[int, dict] | None = None,
    ) -> set[int]:
        """Replace the object's voxels on slices of a coronal or sagittal ``plane`` by the masks
        (``{index: (rows, cols) mask}`` in that plane's :func:`~napari_medprompt.segment.planes.plane_view`
        order) and record the user's ``status`` ("prompted", "edited", "accepted") for those plane
        slices in ``plane_status``, with the ``prompts`` that made them (``{index: record}`` in the
        plane's ``(row, col)``, as :meth:`record_prompt` keeps them). One undo step; returns the axial
        slices whose voxels changed.

        What the user decided elsewhere is left as it is: voxels of locked objects and of other
        objects (``blocked_voxels``), the axial slices the user prompted, edited (an erased slice
        too), accepted or rejected (``kept_axial``; the part of the plane mask lying on them is not
        written), and the rows / columns of slices of the other plane the user decided
        (``plane_kept_voxels``). The other axial slices whose voxels change (no status or a
        propagated one) become "needs review": they are decided only along the user's line (a
        slice left empty loses its status). ``last_commit_info`` also names ``plane``,
        ``plane_slices`` and ``needs_review`` (axial slices).
        """
        check_status(status, ("prompted", "edited", "accepted"))
        return self._commit_plane(object_id, plane, masks, status, provenance, keep_decided=True, prompts=prompts)

    def set_plane_status(self, object_id: int, plane: str, indices: Iterable[int], status: str) -> set[int]:
        """Accept or reject slices of a coronal or sagittal ``plane`` for one object (one undo step),
        as :meth:`set_status` does for axial slices. Accepting records the decision and changes no
        voxel; rejecting clears the object on those slices, and later propagations leave it absent
        there. Either way a slice where the object is absent and that has no plane status is not
        marked (with none left, nothing is recorded and no undo step is made). A rejection is the user's newest
        decision, as a hand edit is: it also clears the object on axial slices and on slices of the
        other plane the user had decided, which become "edited" (``last_commit_info``:
        ``edited_axial``, ``edited_plane``; rejected axial slices hold no object anyway). Returns
        the axial slices whose voxels changed."""
        check_status(status, ("accepted", "rejected"))
        check_plane(plane)
        with self._lock:
            obj = self._unlocked(object_id, "reject slices") if status == "rejected" else self._get(object_id)
            view = np.moveaxis(self.labels, PLANE_AXES[plane], 0)
            per = obj.plane_status.get(plane, {})
            idx = sorted(i for i in {self._check_plane_slice(plane, i) for i in indices}
                         if i in per or (view[i] == obj.id).any())
            if not idx:
                self.last_commit_info = {"plane": plane, "plane_slices": []}
                return set()
            if status == "rejected":
                masks = {i: np.zeros(view.shape[1:], bool) for i in idx}
                return self._commit_plane(object_id, plane, masks, status, None, keep_decided=False)
            before_obj = {obj.id: obj.to_dict()}
            for i in idx:
                obj.plane_status.setdefault(plane, {})[i] = "accepted"
            merge_provenance(obj, f"accepted ({plane})", [], {"plane": plane, "plane_slices": idx})
            self.last_commit_info = {"plane": plane, "plane_slices": idx}
            self._finish(f"accepted {obj.display_name} ({plane})", {}, before_obj,
                         self._event("status", obj.id, ()))
            return set()

    def _commit_plane(self, object_id, plane, masks, status, provenance, keep_decided: bool,
                      prompts: Mapping[int, dict] | None = None) -> set[int]:
        check_plane(plane)
        with self._lock:
            obj = self._unlocked(object_id, "change its mask")
            recs = dict(self._prompt_entry(plane, i, r) for i, r in (prompts or {}).items())
            oid = obj.id
            view = np.moveaxis(self.labels, PLANE_AXES[plane], 0)  # (plane slices, z, other), a view
            idx: list[int] = []
            stack: list[np.ndarray] = []
            for key, mask in sorted(masks.items(), key=lambda kv: int(kv[0])):
                i = self._check_plane_slice(plane, key)
                m = np.asarray(mask, dtype=bool)
                if m.shape != view.shape[1:]:
                    raise ValueError(f"a {plane} mask has shape {m.shape}; {plane} slices are {view.shape[1:]}")
                idx.append(i)
                stack.append(m)
            if not idx:
                self.last_commit_info = {"plane": plane, "plane_slices": []}
                return set()
            before_obj = {oid: obj.to_dict()}
            new = np.stack(stack)  # (k, z, other)
            region = view[idx]  # a copy
            own = region == oid
            free = (region == 0) | own
            proposed = region.copy()
            proposed[own] = 0
            proposed[new & free] = oid
            decided_z = np.zeros(self.shape[0], dtype=bool)  # axial slices the user decided
            if keep_decided:
                decided_z[[z for z, st in obj.slice_status.items() if st in USER_STATUSES]] = True
            else:  # a rejection clears the plane slice; the object is absent on rejected axial slices anyway
                decided_z[[z for z, st in obj.slice_status.items() if st == "rejected"]] = True
            other = "sagittal" if plane == "coronal" else "coronal"
            decided_o = np.zeros(view.shape[2], dtype=bool)  # rows / columns of the other plane's decisions
            if keep_decided:
                decided_o[[i for i in obj.plane_slices(other) if i < view.shape[2]]] = True
            proposed[:, decided_z] = region[:, decided_z]
            plane_kept = int(np.count_nonzero((proposed != region)[:, ~decided_z][:, :, decided_o]))
            proposed[:, :, decided_o] = region[:, :, decided_o]
            blocked = int(np.count_nonzero((new & ~free)[:, ~decided_z]))
            changed = (proposed != region).any(axis=(0, 2))
            kept = [int(z) for z in np.flatnonzero(decided_z & ((new != own).any(axis=(0, 2))))]
            planes = {int(z): self.labels[z].copy() for z in np.flatnonzero(changed)}
            view[idx] = proposed
            needs, edited_axial = [], []
            edited_plane = [int(i) for i in obj.plane_slices(other) if i < view.shape[2]
                            and (proposed[:, :, i] != region[:, :, i]).any()]  # only a rejection changes them
            for i in edited_plane:  # the rejection is the user's newest decision there, as a hand edit is
                obj.plane_status[other][i] = "edited"
            for z in (int(z) for z in np.flatnonzero(changed)):
                st = obj.slice_status.get(z)
                if st in USER_STATUSES:  # only a rejection of the plane slice gets here
                    obj.slice_status[z] = "edited"
                    edited_axial.append(z)
                    continue
                if (self.labels[z] == oid).any():
                    obj.slice_status[z] = "needs review"
                    needs.append(z)
                else:
                    obj.slice_status.pop(z, None)
            per = obj.plane_status.setdefault(plane, {})
            for i in idx:
                per[i] = status
                if i in recs:
                    self._put_prompt(obj, plane, i, recs[i])
            info = dict(provenance or {})
            info.setdefault("plane", plane)
            info.setdefault("plane_slices", idx)
            merge_provenance(obj, f"{status} ({plane})", sorted(planes), info)
            self.last_commit_info = {"blocked_voxels": blocked, "plane_kept_voxels": plane_kept, "plane": plane,
                                     "plane_slices": idx, "needs_review": needs, "kept_axial": kept,
                                     "edited_axial": edited_axial, "edited_plane": {other: edited_plane}}
            self._finish(f"{status} {obj.display_name} ({plane})", planes, before_obj,
                         self._event("labels", oid, set(planes) | set(needs)))
            return set(planes)
