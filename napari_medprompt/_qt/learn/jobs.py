"""Background work of the Learn dock: a training run and predictions, each in a napari ``thread_worker``.

:class:`TrainingJob` runs :meth:`napari_medprompt.learn.LearnRun.events` in a worker of the
background pool (lowered priority, so the viewer's main thread wins the CPU), keeps every event it
received, and shows the run's progress in napari's activity dock. napari's progress bar repaints the
whole window on every value change, so the bar is pushed at most every ``PROGRESS_INTERVAL_MS``
(the dock's own bar too): the event handler only stores numbers and a timer draws them.

:class:`PredictionJob` loads a model version and computes probabilities (and heat maps) of slices in a
worker; its progress callback only writes two integers that the dock's timer reads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from napari_medprompt._qt.workers import lower_priority, start_worker

PROGRESS_INTERVAL_MS = 250
BAR_TOTAL = 1000


class ActivityBar:
    """A napari ``progress`` bar (activity dock) driven by a fraction 0..1, pushed by :meth:`flush`."""

    def __init__(self, description: str) -> None:
        try:
            from napari.utils import progress

            self.bar = progress(total=BAR_TOTAL, desc=description)
        except Exception:  # pragma: no cover - no activity dock in this napari
            self.bar = None
        self.fraction = 0.0

    def flush(self) -> None:
        if self.bar is None:
            return
        n = int(round(min(max(self.fraction, 0.0), 1.0) * BAR_TOTAL))
        if n > self.bar.n:
            self.bar.update(n - self.bar.n)

    def set_description(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _train_job(run):
    lower_priority()
    yield from run.events()


class TrainingJob:
    """One :class:`~napari_medprompt.learn.LearnRun` in a worker (see the module docstring)."""

    def __init__(self, run, *, on_event: Callable, on_done: Callable, on_error: Callable, description: str) -> None:
        self.run = run
        self.events: list = []
        self.error: BaseException | None = None
        self.t_start = time.perf_counter()
        self.t_end: float | None = None
        self.bar = ActivityBar(description)
        self._on_event, self._on_done, self._on_error = on_event, on_done, on_error
        self.worker = start_worker(_train_job, run, on_yield=self._yielded, on_error=self._errored,
                                   on_finish=self._finished, background=True)

    @property
    def running(self) -> bool:
        return self.t_end is None

    @property
    def progress(self) -> float:
        return self.events[-1].progress if self.events else 0.0

    def cancel(self) -> None:
        """Stop before the next training step; the best completed epoch is kept (see LearnRun)."""
        self.run.cancel()

    def _yielded(self, event) -> None:
        self.events.append(event)
        self.bar.fraction = event.progress
        self._on_event(event)

    def _errored(self, err: BaseException) -> None:
        self.error = err
        self._on_error(err)

    def _finished(self) -> None:
        self.t_end = time.perf_counter()
        self.bar.flush()
        self.bar.close()
        self._on_done(self)

    def wait(self, msecs: int) -> bool:
        """Block (main thread) until the worker's thread ended, at most ``msecs``; True when it did."""
        from qtpy.QtWidgets import QApplication

        t0 = time.perf_counter()
        while self.t_end is None and (time.perf_counter() - t0) * 1000 < msecs:
            QApplication.processEvents()
            time.sleep(0.01)
        return self.t_end is not None


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
        self.bar.flush()
        self.bar.close()
        self._on_finish(self)

    def cancel(self) -> None:
        self.cancel_event.set()
