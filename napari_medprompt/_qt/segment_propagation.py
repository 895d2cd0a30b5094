"""Propagation in the Segment widget: start from the object's seed slices, show, commit, cancel.

A mixin of :class:`~napari_medprompt._qt.segment_widget.SegmentWidget`. Results are drawn in the
preview layer as they arrive and committed to the session in one step (one undo) when the run ends
or is cancelled; the engine's stop rule ends it where the object ends.
"""

from __future__ import annotations

from napari_medprompt._qt import segment_ui
from napari_medprompt._qt.jobs import PropagationRun
from napari_medprompt.segment.base import PromptError, PropagationSettings
from napari_medprompt.segment.validate import require_volume

SEED_STATUSES = ("prompted", "edited", "accepted")


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
        self.run = PropagationRun(
            self.ctrl.segmenter, oid, seeds, settings,
            on_slice=lambda r: self._show_propagated(r), on_done=self._propagation_done,
            on_error=lambda e: self._error(f"Propagation failed: {e}"),
            description=f"Propagating {obj.display_name}", expected=hi - lo + 1 - len(seeds),
        )
        self.ui.status.setText(f"Propagating '{obj.display_name}' from slices {sorted(seeds)} … (Esc cancels)")
        self._update_buttons()

    def _show_propagated(self, result) -> None:
        """Draw a propagated slice in the preview layer; redraws are coalesced to <= 10 per second."""
        if self.preview_layer is not None:
            z = int(result.slice_index)
            self.preview_layer.data[z][result.mask] = self.run.object_id
            if not self._redraw_timer.isActive():
                self._redraw_timer.start()

    def _propagation_done(self, run: PropagationRun) -> None:
        self.run = None
        self._clear_preview()
        n = len(run.results)
        if run.results and run.object_id in (self.ctrl.session.objects if self.ctrl.session else {}):
            self._session_call("commit_slices", run.object_id, run.results, "propagated",
                               self._provenance(action="propagate"))
        where = f"; the object ends at slice(s) {sorted(run.lost)}" if run.lost else ""
        state = "cancelled" if run.cancelled else ("failed" if run.error else "done")
        self.ui.status.setText(f"Propagation {state}: {n} slices in {run.t_end - run.t_start:.1f} s{where}.")
        self._update_buttons()
        self._follow_slice()
        self.propagation_finished.emit(run)

    def cancel(self) -> None:
        if self.run is not None:
            self.run.cancel()

    def _cancel_all(self) -> None:
        self.cancel()
        self.prefetcher.stop()
        self._runner.cancel()
