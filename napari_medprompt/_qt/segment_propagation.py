"""Propagation in the Segment widget: start from the object's seed slices, show, commit, cancel.

A mixin of :class:`~napari_medprompt._qt.segment_widget.SegmentWidget`. Results are drawn in the
preview layer as they arrive (a redraw at most every 100 ms, and only when a new slice is on screen)
and committed to the session in chunks of ``CHUNK_SLICES`` (or after ``CHUNK_SECONDS``), each
saved to the session folder in a background thread (:class:`BackgroundSaver`; the session's own
autosave, which fsyncs on the main thread, is paused during the run), so a crash mid-run keeps what
was propagated so far; the chunks form one undo step (a session undo group). A chunk waits while the
previous one is being saved (the save holds the session lock). The engine's stop rule ends the run where the object ends.
"""

from __future__ import annotations

import time

from napari_medprompt._qt import segment_ui
from napari_medprompt._qt.jobs import PropagationRun
from napari_medprompt.segment.base import PromptError, PropagationSettings
from napari_medprompt.segment.validate import require_volume

SEED_STATUSES = ("prompted", "edited", "accepted")
CHUNK_SLICES = 12  # propagated slices committed (and autosaved) together
CHUNK_SECONDS = 2.0  # ... or fewer, once the oldest uncommitted slice is this old
MAX_UNCOMMITTED = 64  # commit even while the previous chunk is still being saved


class PropagationMixin:
    # ---------------------------------------------------------------------------- propagation
    def propagate(self) -> None:
        """Propagate the current object from its accepted / prompted / edited slices."""
        if not self._ready() or self.run is not None:
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
        seeds = {z: session.labels[z] == oid for z, s in obj.slice_status.items() if s in SEED_STATUSES}
        seeds = {z: m for z, m in seeds.items() if m.any()}
        if not seeds:
            self._error(f"'{obj.display_name}' has no accepted, prompted or painted slice to start from: "
                        "accept a preview (A) or paint the object on a slice first.")
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
        self.run = PropagationRun(
            self.ctrl.segmenter, oid, seeds, settings,
            on_slice=lambda r: self._show_propagated(r), on_done=self._propagation_done,
            on_error=lambda e: self._error(f"Propagation failed: {e}"),
            description=f"Propagating {obj.display_name}", expected=hi - lo + 1 - len(seeds),
        )
        self.ui.status.setText(f"Propagating '{obj.display_name}' from slices {sorted(seeds)} … (Esc cancels)")
        self._update_buttons()

    def _show_propagated(self, result) -> None:
        """Draw a propagated slice in the preview layer (redraws coalesced) and commit in chunks."""
        z = int(result.slice_index)
        if self.preview_layer is not None:
            self.preview_layer.data[z][result.mask] = self.run.object_id
            self._preview_dirty.add(z)
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()
        if not self._uncommitted:
            self._uncommitted_since = time.perf_counter()
        self._uncommitted[z] = self.run.results[z]
        due = len(self._uncommitted) >= CHUNK_SLICES or time.perf_counter() - self._uncommitted_since > CHUNK_SECONDS
        if (due and not self._saver.busy) or len(self._uncommitted) >= MAX_UNCOMMITTED:
            self._commit_chunk(self.run.object_id)

    def _commit_chunk(self, oid: int) -> None:
        """Commit the uncommitted propagated slices (part of the run's undo group; autosaved)."""
        masks, self._uncommitted = self._uncommitted, {}
        session = self.ctrl.session
        if not masks or session is None or oid not in session.objects:
            return
        self._session_call("commit_slices", oid, masks, "propagated", self._provenance(action="propagate"))
        if self._autosave_during_run:
            self._saver.request(session)
        if self.preview_layer is not None:  # now shown by the segmentation layer
            for z in masks:
                self.preview_layer.data[z] = 0
            self._preview_dirty.update(masks)
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()

    def _redraw_preview(self) -> None:
        """Redraw the preview layer if a slice changed since the last redraw is on screen."""
        dirty, self._preview_dirty = self._preview_dirty, set()
        if self.preview_layer is not None and dirty and self.ctrl.shows_any(self.preview_layer, dirty):
            self.preview_layer.refresh()

    def _propagation_done(self, run: PropagationRun) -> None:
        self.run = None
        session = self.ctrl.session
        try:
            self._commit_chunk(run.object_id)
        finally:
            if session is not None:
                session.end_undo_group()
                session.autosave = self._autosave_during_run
        self._clear_preview()
        n = len(run.results)
        where = f"; the object ends at slice(s) {sorted(run.lost)}" if run.lost else ""
        state = "cancelled" if run.cancelled else ("failed" if run.error else "done")
        self.ui.status.setText(f"Propagation {state}: {n} slices in {run.t_end - run.t_start:.1f} s{where}.")
        self._update_buttons()
        self._follow_slice()
        # finished once the last chunk is on disk too (saved in the background)
        self._saver.request(session if self._autosave_during_run else None,
                            then=lambda: self.propagation_finished.emit(run))

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _cancel_all(self) -> None:
        self.cancel()
        self.prefetcher.stop()
        self._runner.cancel()
