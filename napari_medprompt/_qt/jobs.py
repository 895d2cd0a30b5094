"""Long-running jobs the Segment widget drives: propagation and embedding prefetch.

Both run in napari ``thread_worker`` s; this module keeps their start / cancel / bookkeeping out of
the widget. Propagation results are shown slice by slice as they arrive (``on_slice``; the widget
commits them to the session in chunks, as one undo step per run) and are all in ``results`` when the
run ends (``on_done``); Cancel sets the engine's cancel event (checked between slices) and quits the
worker.

The run's progress bar in napari's activity dock is updated at most every ``PROGRESS_INTERVAL_MS``:
napari's bar calls ``QApplication.processEvents()`` on every value change, which repaints the whole
window (the GL canvas included) from inside the call, so one update per slice stalled the viewer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from napari_medprompt._qt.workers import prefetch_job, prefetch_order, propagation_job, start_worker
from napari_medprompt.segment.base import PropagationSettings

PROGRESS_INTERVAL_MS = 300


class PropagationRun:
    """One propagation of one object: progress in the activity dock, per-slice results, cancel."""

    def __init__(
        self,
        segmenter,
        object_id: int,
        seeds: dict[int, np.ndarray],
        settings: PropagationSettings,
        *,
        on_slice: Callable[[object], None],
        on_done: Callable[[PropagationRun], None],
        on_error: Callable[[BaseException], None],
        description: str = "Propagating",
        expected: int = 0,
        session=None,
    ) -> None:
        self.object_id = int(object_id)
        self.session = session  # the AnnotationSession this run commits to (never another image's)
        self.detached = False  # closed early (image switched / viewer closing): later signals are ignored
        self.previous: set[int] = set()  # the object's propagated slices before this run (replaced)
        self.flags: dict[int, str] = {}  # slices the stop rule doubted -> its reason
        self.settings = settings
        if settings.cancel is None:
            settings.cancel = threading.Event()
        self.results: dict[int, np.ndarray] = {}
        self.lost: list[int] = []  # slices where the object was judged to end
        self.cancelled = False
        self.error: BaseException | None = None
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self._on_slice = on_slice
        self._on_done = on_done
        self._on_error = on_error
        self._progress = _ThrottledProgress(max(int(expected), 0), description)
        self.worker = start_worker(
            propagation_job,
            segmenter,
            {self.object_id: seeds},
            settings,
            on_yield=self._yielded,
            on_error=self._errored,
            on_finish=self._finished,
            background=True,
        )

    @property
    def running(self) -> bool:
        return self.t_end is None

    def cancel(self) -> None:
        """Stop after the slice being computed (the engine checks the event between slices)."""
        self.cancelled = True
        self.settings.cancel.set()
        self.worker.quit()

    def _yielded(self, result) -> None:
        self._progress.step()
        if result.object_id != self.object_id:
            return
        if result.lost:
            self.lost.append(int(result.slice_index))
            return
        if self.cancelled or self.detached:
            return
        z = int(result.slice_index)
        self.results[z] = np.asarray(result.mask, dtype=bool)
        if getattr(result, "flag", ""):
            self.flags[z] = result.flag
        self._on_slice(result)

    def _errored(self, err: BaseException) -> None:
        self.error = err
        if not self.detached:
            self._on_error(err)

    def _finished(self) -> None:
        self.t_end = time.perf_counter()
        self._progress.close()
        self._on_done(self)


class _ThrottledProgress:
    """A napari ``progress`` bar (activity dock) whose value is pushed at most every
    ``PROGRESS_INTERVAL_MS`` (see the module docstring)."""

    def __init__(self, total: int, description: str) -> None:
        from napari.utils import progress
        from qtpy.QtCore import QTimer

        self.bar = progress(total=total, desc=description)
        self.pending = 0
        self.timer = QTimer()
        self.timer.setInterval(PROGRESS_INTERVAL_MS)
        self.timer.timeout.connect(self.flush)
        self.timer.start()

    def step(self) -> None:
        self.pending += 1

    def flush(self) -> None:
        if not self.pending or self.bar is None:
            return
        bar, n = self.bar, self.pending
        self.pending = 0
        if bar.total and bar.n + n > bar.total:  # more slices than expected: indeterminate
            bar.total = 0
        bar.update(n)

    def close(self) -> None:
        self.timer.stop()
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Prefetcher:
    """Keeps the segmenter's embeddings of the slices around the viewed one computed in advance.

    ``follow(z)`` cancels the running prefetch and starts one around ``z`` (nearest slices first).
    With ``whole_volume`` (set when the segmenter keeps embeddings in a disk cache), a prefetch
    around the viewed slice that ran to its end goes on with the rest of the volume, nearest first,
    in the low-priority background pool; any click or slice change stops it (it resumes from the
    next idle follow, skipping what is cached). ``on_change()`` is called after each slice and at
    the end (the widget's "embedded: n / N" label).
    """

    def __init__(self, radius: int = 8) -> None:
        self.radius = radius
        self.segmenter = None
        self.n_slices = 0
        self.worker = None
        self._cancel: threading.Event | None = None
        self.done: list[int] = []
        self.started = 0
        self.error: BaseException | None = None  # the last prefetch failure (shown nowhere; for tests)
        self.whole_volume = False
        self.on_change = None

    def set_segmenter(self, segmenter, n_slices: int) -> None:
        self.stop()
        self.started += 1  # results of earlier prefetches (another image) are dropped
        self.segmenter = segmenter
        self.n_slices = int(n_slices)
        self.done = []
        self.error = None

    def follow(self, z: int, radius: int | None | bool = True) -> None:
        """Prefetch around ``z``: ``radius`` True = ``self.radius``, None = the whole volume."""
        self.stop()
        seg = self.segmenter
        if seg is None or not hasattr(seg, "prefetch") or self.n_slices < 1:
            return
        radius = self.radius if radius is True else radius
        self._cancel = cancel = threading.Event()
        self.started += 1
        token = self.started
        self.worker = start_worker(
            prefetch_job,
            seg,
            prefetch_order(int(z), self.n_slices, radius),
            cancel,
            on_yield=lambda z, t=token: self._yielded(t, z),
            on_finish=lambda: self._finished(token, cancel, int(z), radius),
            on_error=self._failed,  # a failed prefetch only costs speed later; predict reports
            background=True,
        )

    def _yielded(self, token: int, z: int) -> None:
        """A slice embedded by prefetch ``token``; dropped when a newer prefetch (or image) started."""
        if token == self.started:
            self.done.append(z)
            self._changed()

    def _failed(self, err: BaseException) -> None:
        self.error = err

    def _finished(self, token: int, cancel: threading.Event | None = None, z: int = 0, radius=None) -> None:
        if token != self.started:
            return
        self.worker = None
        if (self.whole_volume and radius is not None and cancel is not None and not cancel.is_set()
                and self.error is None and self.segmenter is not None):
            self.follow(z, radius=None)  # idle: the rest of the volume, into the disk cache
        self._changed()

    def _changed(self) -> None:
        if self.on_change is not None:
            try:
                self.on_change()
            except RuntimeError:  # the widget is gone (its Qt side deleted): nobody to tell
                self.on_change = None

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
        self.worker = None

    @property
    def running(self) -> bool:
        return self.worker is not None


class BackgroundSaver:
    """Autosaves a session in a worker thread, one save at a time (requests made meanwhile are
    folded into one more save). The save's "saved" / "save_failed" event reaches the session's
    ``on_change`` callbacks on the main thread. Used while a propagation commits chunks, so the
    fsyncs of the session folder never block the viewer."""

    def __init__(self) -> None:
        self.worker = None
        self._again = None  # session to save once more after the running save
        self._waiters: list[Callable[[], None]] = []

    @property
    def busy(self) -> bool:
        return self.worker is not None

    def request(self, session, then: Callable[[], None] | None = None) -> None:
        """Save ``session`` soon; ``then()`` runs (main thread) once it and earlier changes are saved."""
        if then is not None:
            self._waiters.append(then)
        if session is None or session.folder is None:
            self._run_waiters()
            return
        if self.worker is not None:
            self._again = session
            return
        self.worker = start_worker(
            session.save_unnotified,
            on_result=session.notify,
            on_error=lambda err: None,  # a save that could not even start (no folder): nothing to report
            on_finish=self._finished,
        )

    def _finished(self) -> None:
        self.worker = None
        again, self._again = self._again, None
        if again is not None:
            self.request(again)
        else:
            self._run_waiters()

    def _run_waiters(self) -> None:
        waiters, self._waiters = self._waiters, []
        for fn in waiters:
            fn()
