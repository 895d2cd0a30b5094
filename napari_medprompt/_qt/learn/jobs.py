"""Background work of the Learn dock: a training run and predictions, each in a napari ``thread_worker``.

:class:`TrainingJob` runs :meth:`napari_medprompt.learn.LearnRun.events` in a worker of the
background pool (lowered priority, so the viewer's main thread wins the CPU), keeps every event it
received, and shows the run's progress in napari's activity dock. napari's progress bar repaints the
whole window on every value change, so the bar is pushed at most every ``PROGRESS_INTERVAL_MS``
(the dock's own bar too): the event handler only stores numbers and a timer draws them.

:class:`PredictionJob` loads a model version and computes probabilities (and heat maps) of slices in a
worker; its progress callback only writes two integers that the dock's timer reads.

:func:`prepare_torch` imports torch on the main thread before the first job needs it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from napari_medprompt._qt.workers import lower_priority, start_worker

PROGRESS_INTERVAL_MS = 250  # the dock's own bar, plot and ETA
ACTIVITY_INTERVAL_S = 1.0  # napari's activity-dock bar (each push repaints the window)
ACTIVITY_STEP = 0.02  # ... and only when the run advanced by 2 % or more
BAR_TOTAL = 1000


def prepare_torch() -> None:
    """Import torch, torchvision and open_clip on the main thread before the first worker uses them
    (first imports of these native libraries from a worker thread are avoided, and triton is kept
    out of a process rendering with Mesa's LLVM: see the Segment panel's backend loading), and leave
    one CPU core to the viewer."""
    from napari_medprompt._qt.segment.backend_panel import avoid_llvm_clash, leave_a_core_for_the_viewer

    avoid_llvm_clash()
    import torch
    import torchvision  # noqa: F401

    try:
        import open_clip  # noqa: F401
    except ImportError:
        pass
    leave_a_core_for_the_viewer(torch)


class ActivityBar:
    """A napari ``progress`` bar (activity dock) driven by a fraction 0..1, pushed by :meth:`flush`."""

    def __init__(self, description: str) -> None:
        try:
            from napari.utils import progress

            self.bar = progress(total=BAR_TOTAL, desc=description)
        except Exception:  # pragma: no cover - no activity dock in this napari
            self.bar = None
        self.fraction = 0.0
        self._pushed = 0.0

    def flush(self, force: bool = False) -> None:
        if self.bar is None:
            return
        now = time.perf_counter()
        n = int(round(min(max(self.fraction, 0.0), 1.0) * BAR_TOTAL))
        if not force and (now - self._pushed < ACTIVITY_INTERVAL_S or n - self.bar.n < ACTIVITY_STEP * BAR_TOTAL):
            return
        if n > self.bar.n:
            self._pushed = now
            self.bar.update(n - self.bar.n)

    def set_description(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _train_job(job, make_run):
    """Worker: build the run (checks, example copies: off the main thread) and iterate it to its end.

    Events go into ``job.queue`` (a deque: thread-safe appends) that the main thread drains on its own
    timer: no signal per training step, and closing the viewer cannot leave the run suspended
    half-way (the worker never waits for the main thread)."""
    lower_priority()
    job.run = make_run()
    if job.cancel_requested:
        job.run.cancel()
    for ev in job.run.events():
        job.queue.append(ev)
    return job.run.result


class TrainingJob:
    """One :class:`~napari_medprompt.learn.LearnRun`, built by ``make_run()`` and run in a worker (see
    the module docstring); ``run`` is None until the worker has built it. :meth:`drain` (main thread)
    hands the events received so far to ``on_event``."""

    def __init__(self, make_run: Callable, *, on_event: Callable, on_done: Callable, on_error: Callable,
                 description: str) -> None:
        self.run = None
        self.cancel_requested = False
        self.queue: deque = deque()
        self.events: list = []
        self.error: BaseException | None = None
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self.bar = ActivityBar(description)
        self._on_event, self._on_done, self._on_error = on_event, on_done, on_error
        self.worker = start_worker(_train_job, self, make_run, on_error=self._errored, on_finish=self._finished,
                                   background=True)

    @property
    def running(self) -> bool:
        return self.t_end is None

    @property
    def progress(self) -> float:
        return self.events[-1].progress if self.events else 0.0

    @property
    def result(self):
        return None if self.run is None else self.run.result

    @property
    def cancelling(self) -> bool:
        return self.cancel_requested

    def cancel(self) -> None:
        """Stop before the next training step; the best completed epoch is kept (see LearnRun)."""
        self.cancel_requested = True
        run = self.run
        if run is not None:
            run.cancel()

    def drain(self) -> int:
        """Hand the queued events to ``on_event`` (main thread); returns how many."""
        n = 0
        while self.queue:
            event = self.queue.popleft()
            self.events.append(event)
            self.bar.fraction = event.progress
            n += 1
            try:
                self._on_event(event)
            except RuntimeError:  # the panel is gone (viewer closing): keep the events only
                pass
        return n

    def _errored(self, err: BaseException) -> None:
        self.error = err
        try:
            self._on_error(err)
        except RuntimeError:
            pass

    def _finished(self) -> None:
        self.drain()
        self.t_end = time.perf_counter()
        self.bar.close()
        try:
            self._on_done(self)
        except RuntimeError:
            pass

    def wait(self, msecs: int) -> bool:
        """Block (main thread) until the worker's thread ended, at most ``msecs``; True when it did."""
        from qtpy.QtWidgets import QApplication

        t0 = time.perf_counter()
        while self.t_end is None and (time.perf_counter() - t0) * 1000 < msecs:
            QApplication.processEvents()
            time.sleep(0.01)
        if self.t_end is None and not self.worker_alive():
            self._finished()  # the finished signal could not be delivered (window going away)
        return self.t_end is not None

    def worker_alive(self) -> bool:
        return self.run is None or self.run.result is None and self.error is None


class PredictionJob:
    """``func(progress, cancel)`` in a worker; ``done``/``total`` follow its progress callback."""

    def __init__(self, func: Callable, *, on_result: Callable, on_error: Callable, on_finish: Callable,
                 description: str) -> None:
        self.cancel_event = threading.Event()
        self.done = 0
        self.total = 0
        self.result = None
        self.bar = ActivityBar(description)
        self._on_result, self._on_finish = on_result, on_finish

        def job():
            lower_priority()
            return func(self._progress, self.cancel_event)

        self.worker = start_worker(job, on_result=self._returned, on_error=on_error, on_finish=self._finished,
                                   background=True)
        self.finished = False

    def _progress(self, done: int, total: int) -> None:  # worker thread: plain numbers only
        self.done, self.total = int(done), int(total)
        self.bar.fraction = self.done / max(self.total, 1)

    def _returned(self, result) -> None:
        self.result = result
        self._on_result(result)

    def _finished(self) -> None:
        self.finished = True
        self.bar.close()
        self._on_finish(self)

    def cancel(self) -> None:
        self.cancel_event.set()
