"""Propagation in the Segment widget: start from the object's seed slices, show, commit, cancel.

A mixin of :class:`~napari_medprompt._qt.segment.widget.SegmentWidget`. Results are drawn in the
preview layer as they arrive (a redraw at most every 100 ms, and only when a new slice is on screen)
and committed to the session in chunks of ``CHUNK_SLICES`` (or after ``CHUNK_SECONDS``), each
saved to the session folder in a background thread (:class:`BackgroundSaver`; the session's own
autosave, which fsyncs on the main thread, is paused during the run), so a crash mid-run keeps what
was propagated so far; the chunks form one undo step (a session undo group). A chunk waits while the
previous one is being saved (the save holds the session lock). The engine's stop rule ends the run
where the object ends. The user may paint, click and accept during a run: each of those is an undo
step of its own and the slices it touches are never overwritten by the run (the session enforces it).
A run belongs to its session: switching the image or closing the viewer first commits what the run
delivered to that session and saves it (:meth:`finish_run_now`).

An object last prompted in a coronal or sagittal plane propagates along that plane's axis: the
segmenter is bound to the plane's view of the volume, the seeds are the object's masks on the plane
slices the user decided (the session's ``plane_status``, saved with it: prompted / edited / accepted
slices seed, rejected ones are barriers), and the results are drawn as they come and committed
together at the end (one undo step) into the axial slices they cross, as "propagated" ("needs
review" where the stop rule doubted a plane slice). The session leaves the user's decisions alone:
axial slices the user prompted, edited, accepted or rejected are skipped, and voxels on coronal /
sagittal slices the user decided keep their value (in every propagation, axial too). Axial
propagation seeds are the user's axial slices only, never "needs review" ones (an axial slice
crossed by an accepted coronal slice holds only the user's line).
"""

from __future__ import annotations

import time

import numpy as np

from napari_medprompt._qt.segment import ui as segment_ui
from napari_medprompt._qt.jobs import PropagationRun
from napari_medprompt.segment.base import PromptError, PropagationSettings
from napari_medprompt.segment.planes import axial_masks, plane_axis, plane_view
from napari_medprompt.segment.propagation import plan_runs
from napari_medprompt.segment.validate import require_volume
from napari_medprompt.session import SessionError, SessionSaveError
from napari_medprompt.session.objects import PROPAGATED_STATUSES

SEED_STATUSES = ("prompted", "edited", "accepted")
#: Slices that stop a propagation where the object is empty: the user said "not here".
BARRIER_STATUSES = ("prompted", "edited", "accepted", "rejected")
CHUNK_SLICES = 12  # propagated slices committed (and autosaved) together
CHUNK_SECONDS = 2.0  # ... or fewer, once the oldest uncommitted slice is this old
MAX_UNCOMMITTED = 64  # commit even while the previous chunk is still being saved


def run_seeds(session, oid: int) -> dict:
    """Seed masks of object ``oid``: its prompted / edited / accepted slices, and, as empty masks
    (barriers the propagation stops at), its rejected slices and the ones the user erased."""
    obj = session.objects[oid]
    seeds = {}
    for z, status in obj.slice_status.items():
        if status in BARRIER_STATUSES:
            mask = session.labels[z] == oid
            if status in SEED_STATUSES or not mask.any():
                seeds[int(z)] = mask if status != "rejected" else np.zeros_like(mask)
    return seeds


def plane_seed_slices(obj, plane: str) -> dict[int, str]:
    """``{slice of plane: status}`` of the coronal / sagittal slices object ``obj`` can propagate
    from (seeds) or must stop at (rejected), from its saved ``plane_status``; an object from an older
    session file has only its provenance's ``plane_slices`` (taken as prompted)."""
    decided = {int(i): st for i, st in obj.plane_status.get(plane, {}).items() if st in BARRIER_STATUSES}
    if not decided:
        prov = obj.provenance or {}
        if prov.get("plane") == plane and prov.get("plane_slices"):
            decided = {int(i): "prompted" for i in prov["plane_slices"]}
    return decided


def plane_run_seeds(session, oid: int, plane: str) -> dict[int, np.ndarray]:
    """Seed masks of a propagation of ``oid`` along ``plane``'s axis: the object's masks on its
    decided plane slices (empty masks, barriers, where it rejected them)."""
    view = plane_view(session.labels, plane)
    seeds = {}
    for i, status in sorted(plane_seed_slices(session.objects[oid], plane).items()):
        if 0 <= i < view.shape[0]:
            seeds[i] = view[i] == oid if status in SEED_STATUSES else np.zeros(view.shape[1:], dtype=bool)
    return seeds


def run_reach(seeds: dict, lo: int, hi: int, directions) -> set[int]:
    """The slices a run from ``seeds`` is meant to cover: in each enabled direction, from every
    non-empty seed up to the next one (or the end of ``lo``..``hi``), barriers ignored. What the
    previous run left there and this run did not produce (it stopped earlier) is replaced."""
    covered: set[int] = set()
    for seed, step, end in plan_runs({z: True for z, m in seeds.items() if m.any()}, lo, hi, directions):
        covered.update(range(seed + step, end + step, step))
    return covered


class PropagationMixin:
    # ---------------------------------------------------------------------------- propagation
    def propagate(self) -> None:
        """Propagate the current object from its accepted / prompted / edited slices.

        Rejected slices and slices the user erased are barriers; slices the user prompted, edited,
        accepted or rejected (before or during the run) are never overwritten. Slices the stop rule
        doubted are committed as "needs review". The run replaces what the previous run of the
        object left in its slice range (one undo step, with the run).
        """
        if not self._ready() or self.run is not None:
            return
        if getattr(self, "_text_run", None) is not None:
            self._warn("A text segmentation is running: wait for it or cancel it before propagating.")
            return
        image = self.ctrl.image_layer
        try:
            require_volume(image.ndim)
        except PromptError as err:
            self._error(str(err))
            return
        if self._pending:
            self.accept()
        session, oid = self.ctrl.session, self.ctrl.current_object
        obj = session.objects.get(oid)
        if obj is None:
            self._error("No object selected: click on a structure and accept it before propagating.")
            return
        if obj.locked:
            self._warn(f"'{obj.display_name}' is locked (finished): unlock it to propagate it again.")
            return
        plane = self._object_plane.get(oid) or self._plane_from_provenance(oid, obj)
        if plane != "axial" and any(st in SEED_STATUSES for st in plane_seed_slices(obj, plane).values()):
            self._propagate_plane(oid, plane)
            return
        if self._bound_plane != "axial":
            with self._bind_lock:
                self._ensure_plane(self.ctrl.segmenter, "axial")
        seeds = run_seeds(session, oid)
        if not any(m.any() for m in seeds.values()):
            self._error(f"'{obj.display_name}' has no accepted, prompted or painted slice to start from: "
                        "accept a preview (K) or paint the object on a slice first.")
            return
        settings = PropagationSettings(
            slice_range=segment_ui.slice_range(self.ui), directions=segment_ui.directions(self.ui)
        )
        lo, hi = settings.slice_range or (0, image.data.shape[0] - 1)
        self._clear_preview()
        self.prefetcher.stop()
        self._uncommitted, self._uncommitted_since = {}, None
        session.begin_undo_group(f"propagated {obj.display_name}")
        self._autosave_during_run, session.autosave = session.autosave, False
        reach = run_reach(seeds, lo, hi, settings.directions)
        previous = {z for z, st in obj.slice_status.items() if st in PROPAGATED_STATUSES and z in reach}
        self.run = PropagationRun(
            self.ctrl.segmenter, oid, seeds, settings,
            on_slice=lambda r: self._show_propagated(r), on_done=self._propagation_done,
            on_error=lambda e: self._error(f"Propagation failed: {e}"),
            description=f"Propagating {obj.display_name}", expected=hi - lo + 1 - len(seeds),
            session=session,
        )
        self.run.previous = previous
        self.ui.status.setText(f"Propagating '{obj.display_name}' from slices "
                               f"{sorted(z for z, m in seeds.items() if m.any())} … (Esc cancels)")
        self._update_buttons()

    def _plane_from_provenance(self, oid: int, obj) -> str:
        """The plane a restored object was last accepted in (its provenance says so when that was a
        coronal or sagittal accept; its seeds there are in ``plane_status``); "axial" otherwise."""
        plane = (obj.provenance or {}).get("plane")
        if plane in ("coronal", "sagittal"):
            self._object_plane[oid] = plane
            return plane
        return "axial"

    def _propagate_plane(self, oid: int, plane: str) -> None:
        """Propagate object ``oid`` along the axis of ``plane`` from its prompted slices there."""
        session, image = self.ctrl.session, self.ctrl.image_layer
        obj = session.objects[oid]
        seeds = plane_run_seeds(session, oid, plane)
        if not any(m.any() for m in seeds.values()):
            self._error(f"'{obj.display_name}' has nothing on its {plane} slices {sorted(seeds)} any more: "
                        f"prompt it again in the {plane} plane and accept before propagating.")
            return
        n = image.data.shape[plane_axis(plane)]
        rng = segment_ui.slice_range(self.ui)
        if rng is not None and (rng[0] < 0 or rng[1] >= n):
            self._error(f"The slice range {rng} is outside the {plane} axis (0 to {n - 1}). Nothing was changed.")
            return
        settings = PropagationSettings(slice_range=rng, directions=segment_ui.directions(self.ui))
        lo, hi = rng or (0, n - 1)
        seg = self.ctrl.segmenter
        self._clear_preview()
        self.prefetcher.stop()
        try:
            with self._bind_lock:
                self._ensure_plane(seg, plane)
        except (PromptError, ValueError) as err:
            self._error(f"Could not prepare the {plane} view: {err}")
            return
        self._uncommitted, self._uncommitted_since = {}, None
        session.begin_undo_group(f"propagated {obj.display_name} ({plane})")
        self._autosave_during_run, session.autosave = session.autosave, False
        self.run = PropagationRun(
            seg, oid, seeds, settings,
            on_slice=lambda r: self._show_propagated(r), on_done=self._propagation_done,
            on_error=lambda e: self._error(f"Propagation failed: {e}"),
            description=f"Propagating {obj.display_name} ({plane})", expected=hi - lo + 1 - len(seeds),
            session=session,
        )
        self.run.plane = plane
        self.run.seed_slices = sorted(i for i, m in seeds.items() if m.any())
        self.ui.status.setText(f"Propagating '{obj.display_name}' along the {plane} axis from {plane} slices "
                               f"{self.run.seed_slices} … (Esc cancels)")
        self._update_buttons()

    def _commit_plane_run(self, run: PropagationRun) -> None:
        """Write a plane run's results into the axial slices they cross as "propagated" ("needs
        review" where the stop rule doubted the plane slice); the session keeps the user's axial
        slices and plane decisions (see the module docstring)."""
        session, oid, plane = run.session, run.object_id, run.plane
        if not run.results or session is None or oid not in session.objects:
            return
        changed = axial_masks(session.labels == oid, plane, run.results)
        doubted = set(axial_masks(session.labels == oid, plane,
                                  {z: run.results[z] for z in run.flags if z in run.results}))
        skipped: set[int] = set()
        for status in ("propagated", "needs review"):
            part = {z: m for z, m in changed.items() if (z in doubted) == (status == "needs review")}
            if part and self._commit_to(session, oid, part, status, plane, getattr(run, "seed_slices", None)):
                skipped.update(session.last_commit_info.get("skipped", ()))
        run.skipped_user = sorted(skipped)

    def _show_propagated(self, result) -> None:
        """Draw a propagated slice in the preview layer (redraws coalesced) and commit in chunks."""
        run = self.run
        if run is None or run.detached:
            return
        z = int(result.slice_index)
        plane = getattr(run, "plane", "axial")
        if plane != "axial":  # committed at the end (one pass over the axial slices)
            if self.preview_layer is not None:
                plane_view(self.preview_layer.data, plane)[z][result.mask] = run.object_id
                self._preview_dirty.add(-1)  # any slice on screen may cross it
                if not self._redraw_timer.isActive():
                    self._redraw_timer.start()
            return
        if self.preview_layer is not None:
            self.preview_layer.data[z][result.mask] = run.object_id
            self._preview_dirty.add(z)
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()
        if not self._uncommitted:
            self._uncommitted_since = time.perf_counter()
        self._uncommitted[z] = run.results[z]
        due = len(self._uncommitted) >= CHUNK_SLICES or time.perf_counter() - self._uncommitted_since > CHUNK_SECONDS
        if (due and not self._saver.busy) or len(self._uncommitted) >= MAX_UNCOMMITTED:
            self._commit_chunk(run)

    def _commit_chunk(self, run: PropagationRun) -> None:
        """Commit the run's uncommitted slices to the run's session (part of its undo group;
        autosaved): plain ones as "propagated", those the stop rule doubted as "needs review"."""
        masks, self._uncommitted = self._uncommitted, {}
        session, oid = run.session, run.object_id
        if not masks or session is None or oid not in session.objects:
            return
        doubted = {z: m for z, m in masks.items() if z in run.flags}
        plain = {z: m for z, m in masks.items() if z not in run.flags}
        for status, part in (("propagated", plain), ("needs review", doubted)):
            if part:
                self._commit_to(session, oid, part, status)
        if self._autosave_during_run:
            self._saver.request(session)
        if self.preview_layer is not None and session is self.ctrl.session:  # now in the segmentation layer
            for z in masks:
                self.preview_layer.data[z] = 0
            self._preview_dirty.update(masks)
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()

    def _commit_to(self, session, oid: int, masks: dict, status: str, plane: str = "axial",
                   plane_slices=None) -> bool:
        """Commit propagated masks; False (the failure told to the user) when nothing was committed."""
        prov = self._provenance(action="propagate", plane=plane, plane_slices=plane_slices)
        if session is self.ctrl.session:
            return self._session_call("commit_slices", oid, masks, status, prov)
        try:  # the run of an image no longer shown: straight into its own session
            session.commit_slices(oid, masks, status, prov)
            return True
        except Exception as err:  # noqa: BLE001 - reported, the viewer goes on
            self._warn(f"Could not commit the last propagated slices of the previous image: {err}")
            return False

    def _redraw_preview(self) -> None:
        """Redraw the preview layer if a slice changed since the last redraw is on screen."""
        dirty, self._preview_dirty = self._preview_dirty, set()
        if self.preview_layer is not None and dirty and (-1 in dirty or self.ctrl.shows_any(self.preview_layer, dirty)):
            self.preview_layer.refresh()

    def _close_run(self, run: PropagationRun) -> None:
        """Commit what the run computed, replace the previous run's leftovers (a run that ended by
        itself only), close its undo group and restore the session's autosave."""
        session = run.session
        try:
            if getattr(run, "plane", "axial") != "axial":
                self._commit_plane_run(run)
                return
            self._commit_chunk(run)
            if not run.cancelled and run.error is None and session is not None and run.object_id in session.objects:
                stale = sorted(run.previous - set(run.results))
                if stale:
                    self._retract(session, run.object_id, stale)
        finally:
            if session is not None:
                session.end_undo_group()
                session.autosave = self._autosave_during_run

    def _retract(self, session, oid: int, stale: list[int]) -> None:
        try:
            session.retract_propagated(oid, stale)
        except SessionSaveError:
            pass  # applied in memory; the save failure is reported by the session's event
        except (SessionError, ValueError, KeyError) as err:
            self._warn(str(err))

    def _propagation_done(self, run: PropagationRun) -> None:
        if run.detached:  # already closed (image switched / viewer closing)
            return
        self.run = None
        session = run.session
        self._close_run(run)
        self._clear_preview()
        n = len(run.results)
        plane = getattr(run, "plane", "axial")
        where = (f"; the object ends at {'' if plane == 'axial' else plane + ' '}slice(s) {sorted(run.lost)}"
                 if run.lost else "")
        doubted = f"; {len(run.flags)} slice(s) need review" if run.flags else ""
        kept = getattr(run, "skipped_user", None)
        if kept:
            doubted += f"; {len(kept)} axial slice(s) you decided were left as they are"
        state = "cancelled" if run.cancelled else ("failed" if run.error else "done")
        self.ui.status.setText(f"Propagation {state}: {n} slices in {run.t_end - run.t_start:.1f} s{where}{doubted}.")
        self._update_buttons()
        self._follow_slice()
        # finished once the last chunk is on disk too (saved in the background)
        self._saver.request(session if self._autosave_during_run else None,
                            then=lambda: self.propagation_finished.emit(run))

    def finish_run_now(self) -> None:
        """Stop a running propagation before the image changes or the viewer closes: cancel it,
        commit every slice it delivered to *its* session, close its undo group and save that
        session now (synchronously), so nothing lands in the next image's session."""
        run = self.run
        if run is None:
            return
        run.cancel()
        run.detached = True
        self.run = None
        self._close_run(run)
        session = run.session
        if session is not None and session.folder is not None and self._autosave_during_run:
            try:
                session.save()
            except SessionError:
                pass  # reported through the session's save_failed event
        self._clear_preview()
        self._update_buttons()

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _cancel_all(self) -> None:
        self.finish_run_now()
        self.prefetcher.stop()
        self._runner.cancel()
