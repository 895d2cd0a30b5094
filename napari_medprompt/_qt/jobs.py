"""Long-running jobs the Segment widget drives: propagation and embedding prefetch.

Both run in napari ``thread_worker`` s; this module keeps their start / cancel / bookkeeping out of
the widget. Propagation results are shown slice by slice as they arrive (``on_slice``) and handed
over together when the run ends (``on_done``), so the widget commits one undo step per run; Cancel
sets the engine's cancel event (checked between slices) and quits the worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from napari_medprompt._qt.workers import prefetch_job, prefetch_order, propagation_job, start_worker
from napari_medprompt.segment.base import PropagationSettings


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
    ) -> None:
        self.object_id = int(object_id)
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
        self.worker = start_worker(
            propagation_job,
            segmenter,
            {self.object_id: seeds},
            settings,
            on_yield=self._yielded,
            on_error=self._errored,
            on_finish=self._finished,
            progress={"total": max(int(expected), 0), "desc": description},
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
        if result.object_id != self.object_id:
            return
        if result.lost:
            self.lost.append(int(result.slice_index))
            return
        if self.cancelled:
            return
        self.results[int(result.slice_index)] = np.asarray(result.mask, dtype=bool)
        self._on_slice(result)

    def _errored(self, err: BaseException) -> None:
        self.error = err
        self._on_error(err)

    def _finished(self) -> None:
        self.t_end = time.perf_counter()
        self._on_done(self)


class Prefetcher:
    """Keeps the segmenter's embeddings of the slices around the viewed one computed in advance.

    ``follow(z)`` cancels the running prefetch and starts one around ``z`` (nearest slices first).
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

    def set_segmenter(self, segmenter, n_slices: int) -> None:
        self.stop()
        self.segmenter = segmenter
        self.n_slices = int(n_slices)
        self.done = []

    def follow(self, z: int) -> None:
        self.stop()
        seg = self.segmenter
        if seg is None or not hasattr(seg, "prefetch") or self.n_slices < 1:
            return
        self._cancel = threading.Event()
        self.started += 1
        token = self.started
        self.worker = start_worker(
            prefetch_job,
            seg,
            prefetch_order(int(z), self.n_slices, self.radius),
            self._cancel,
            on_yield=self.done.append,
            on_finish=lambda: self._finished(token),
            on_error=self._failed,  # a failed prefetch only costs speed later; predict reports
        )

    def _failed(self, err: BaseException) -> None:
        self.error = err

    def _finished(self, token: int) -> None:
        if token == self.started:
            self.worker = None

    def stop(self) -> None:
        if self._cancel is not None:
            self._cancel.set()
        if self.worker is not None:
            self.worker.quit()
        self.worker = None

    @property
    def running(self) -> bool:
        return self.worker is not None
