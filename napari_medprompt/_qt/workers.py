"""Background jobs of the Segment widget, each a napari ``thread_worker``.

Everything that can take longer than a few tens of milliseconds (prediction, propagation, embedding
prefetch, model loading, saving) runs here; results reach the main thread through the worker's
signals, where the widget updates layers. Errors never escape as exceptions into Qt: they are handed
to an ``on_error`` callback that shows a notification.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from napari.qt.threading import create_worker
from qtpy.QtCore import QThreadPool

_POOL: QThreadPool | None = None
_BG_POOL: QThreadPool | None = None
#: Nice value of the threads that run long background jobs (propagation, embedding prefetch), so the
#: viewer's main thread wins the CPU whenever it has work (painting, a click) on a busy machine.
BACKGROUND_NICE = 5


def worker_pool() -> QThreadPool:
    """The thread pool the widget's workers run in (not Qt's global pool; see :func:`start_worker`)."""
    global _POOL
    if _POOL is None:
        _POOL = QThreadPool()
        _POOL.setMaxThreadCount(8)
    return _POOL


def background_pool() -> QThreadPool:
    """The pool of long background jobs; its threads run at a lower priority (:func:`lower_priority`).
    Separate from :func:`worker_pool` because an unprivileged thread cannot raise its priority back:
    a prediction for a click must never land on a lowered thread."""
    global _BG_POOL
    if _BG_POOL is None:
        _BG_POOL = QThreadPool()
        _BG_POOL.setMaxThreadCount(4)
    return _BG_POOL


def lower_priority() -> None:
    """Give the calling (background) thread nice value :data:`BACKGROUND_NICE` (Linux: per thread;
    elsewhere, or when not allowed, nothing happens)."""
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
    except (AttributeError, OSError):
        pass


def wait_for_workers(msecs: int) -> bool:
    """Wait (up to ``msecs`` each) for the jobs of both pools to end; True when all ended."""
    done = worker_pool().waitForDone(msecs)
    return background_pool().waitForDone(msecs) and done


def _start(worker, pool: QThreadPool | None = None) -> None:
    """Start ``worker`` in :func:`worker_pool`.

    napari/superqt start workers in ``QThreadPool.globalInstance()``, which Qt itself uses for
    parallel image conversion (e.g. the activity dock's progress animation): with the few threads
    of a small machine all busy in workers waiting for the GIL that the main thread holds while it
    waits for that conversion, the viewer deadlocks. A pool of our own keeps the global one free.
    """
    try:
        worker._worker_set.add(worker)  # what WorkerBase.start() does before pooling the runnable
        worker._finished.connect(worker._set_discard)
    except AttributeError:  # another superqt: fall back to its own start
        worker.start()
        return
    (pool or worker_pool()).start(worker)


def start_worker(
    func: Callable,
    *args,
    on_result: Callable | None = None,
    on_yield: Callable | None = None,
    on_error: Callable[[BaseException], None] | None = None,
    on_finish: Callable | None = None,
    progress: dict | bool | None = None,
    background: bool = False,
    **kwargs,
):
    """Run ``func(*args, **kwargs)`` (a function or a generator) in a thread; returns the worker.
    ``background=True`` runs it in :func:`background_pool` (long jobs that call :func:`lower_priority`)."""
    worker = create_worker(
        func, *args, _progress=progress or None, _ignore_errors=True, _start_thread=False, **kwargs
    )
    if on_result is not None:
        worker.returned.connect(on_result)
    if on_yield is not None and hasattr(worker, "yielded"):
        worker.yielded.connect(on_yield)
    if on_error is not None:
        worker.errored.connect(on_error)
    if on_finish is not None:
        worker.finished.connect(on_finish)
    _start(worker, background_pool() if background else None)
    return worker


class LatestOnlyRunner:
    """Runs one job at a time and, of the requests made meanwhile, only the newest.

    ``submit(func, *args)`` while a job runs replaces any queued request; when the running job
    ends, the queued one starts. A result is delivered only if no newer request was submitted
    after it, so the user never sees a stale preview overwrite a fresh one.
    """

    def __init__(self, on_result: Callable[[Any], None], on_error: Callable[[BaseException], None]):
        self._on_result = on_result
        self._on_error = on_error
        self._generation = 0
        self._running = None
        self._queued: tuple | None = None
        self.n_started = 0
        self.n_dropped = 0
        self._returned = False

    @property
    def busy(self) -> bool:
        return self._running is not None or self._queued is not None

    @property
    def computing(self) -> bool:
        """A job is queued, or running and has not returned yet (``busy`` lasts until its thread ends)."""
        return self._queued is not None or (self._running is not None and not self._returned)

    def submit(self, func: Callable, *args) -> None:
        self._generation += 1
        if self._queued is not None:
            self.n_dropped += 1
        self._queued = (self._generation, func, args)
        if self._running is None:
            self._start_next()

    def cancel(self) -> None:
        """Forget queued work and ignore the result of the running job."""
        self._generation += 1
        self._queued = None

    def _start_next(self) -> None:
        if self._queued is None:
            return
        gen, func, args = self._queued
        self._queued = None
        self.n_started += 1
        self._returned = False

        def done(result, gen=gen):
            self._returned = True
            if gen == self._generation:
                self._on_result(result)

        def failed(err, gen=gen):
            self._returned = True
            if gen == self._generation:
                self._on_error(err)

        self._running = start_worker(
            func, *args, on_result=done, on_error=failed, on_finish=self._finished
        )

    def _finished(self) -> None:
        self._running = None
        self._start_next()


def propagation_job(segmenter, seeds, settings) -> Iterator:
    """Generator for a worker: yields each :class:`SliceResult` of ``segmenter.propagate``."""
    lower_priority()
    for result in segmenter.propagate(seeds, settings):
        yield result
        if settings.cancel is not None and settings.cancel.is_set():
            return


def prefetch_job(segmenter, slices: Iterable[int], cancel: threading.Event) -> Iterator[int]:
    """Generator for a worker: embeds ``slices`` in order, yielding each index when it is cached."""
    lower_priority()
    for z in segmenter.prefetch(list(slices), cancel=cancel):
        yield z
        if cancel.is_set():
            return


def prefetch_order(center: int, n_slices: int, radius: int | None = None) -> list[int]:
    """Slices around ``center``, nearest first (``center``, +1, -1, +2, -2, ...)."""
    radius = n_slices if radius is None else radius
    out = [center]
    for d in range(1, radius + 1):
        for z in (center + d, center - d):
            if 0 <= z < n_slices:
                out.append(z)
    return out
