"""GUI responsiveness of the Segment widget: event-loop stalls and click-to-preview latency.

A QTimer ticks every 5 ms on the main thread while the widget works; the longest gap between ticks
minus the interval is the longest time the Qt event loop was blocked (``gui.event_loop_stall``,
target < 100 ms), measured during an embedding prefetch and during a propagation. Click to preview
(``gui.click_to_preview``) is the time from adding a point to the Points layer (what a click does) to
the preview Labels layer holding the result, against the engine's own ``predict`` time measured in
the worker (baseline; target: within +50 ms). Backends: classic, and SAM2.1-tiny with random weights
(same compute as the published weights) when its stack loads.

Needs a display: ``xvfb-run -a .venv/bin/python -m benchmarks gui`` (``--quick`` for a smoke run).
Uses the real CT from ``../shared/data`` when present, else the synthetic sample CT.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.runner import Record, device_name, median

TICK_MS = 5
SHARED = Path(os.environ.get("MEDPROMPT_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


class StallMonitor:
    """Longest gap between ticks of a 5 ms QTimer on the main thread, minus the interval."""

    def __init__(self) -> None:
        from qtpy.QtCore import QTimer

        self.timer = QTimer()
        self.timer.setInterval(TICK_MS)
        self.timer.timeout.connect(self._tick)
        self.gaps: list[float] = []
        self._last = None

    def _tick(self) -> None:
        now = time.perf_counter()
        if self._last is not None:
            self.gaps.append((now - self._last) * 1e3)
        self._last = now

    def __enter__(self):
        self.gaps.clear()
        self._last = None
        self.timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.timer.stop()

    @property
    def longest_stall_ms(self) -> float:
        return max(0.0, max(self.gaps, default=0.0) - TICK_MS)


def run_loop_until(cond, timeout_s: float) -> bool:
    """Run the Qt event loop (no sleeps of our own) until ``cond()`` or the timeout."""
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    check = QTimer()
    check.setInterval(2)
    t0 = time.perf_counter()

    def poll():
        if cond() or time.perf_counter() - t0 > timeout_s:
            loop.quit()

    check.timeout.connect(poll)
    check.start()
    loop.exec()
    check.stop()
    return bool(cond())


def _image(viewer):
    ct = SHARED / "totalsegmentator" / "example_ct.nii.gz"
    if ct.is_file():
        from napari_medprompt.io.layers import volume_to_layer_data
        from napari_medprompt.io.read import read_image

        data, kw, _ = volume_to_layer_data(read_image(ct)[0])
        return viewer.add_image(data, **kw), "real CT 112x101x122"
    from napari_medprompt._sample_data import make_sample_ct

    (data, kw, _), _labels = make_sample_ct()
    return viewer.add_image(data, **kw), "sample CT phantom 48x192x192"


def _click_target(image) -> tuple[int, int, int]:
    """A point inside the body on the slice with the most soft tissue (HU -100..200)."""
    data = np.asarray(image.data)
    soft = (data > -100) & (data < 200)
    z = int(np.argmax(soft.sum(axis=(1, 2))))
    rows, cols = np.nonzero(soft[z])
    return z, int(np.median(rows)), int(np.median(cols))


def _bench_backend(viewer, widget, backend: str, checkpoint: str, quick: bool, what: str) -> list[Record]:
    from napari_medprompt._qt.workers import wait_for_workers

    dev = device_name()
    records: list[Record] = []
    panel = widget.backend
    panel.backend.setCurrentText(backend)
    panel.checkpoint.setText(checkpoint)
    panel.load()
    if not run_loop_until(lambda: widget._seg_ready or any(lv == "error" for lv, _ in widget.messages), 300):
        raise RuntimeError(f"{backend} did not load")
    if not widget._seg_ready:
        raise RuntimeError(widget.messages[-1][1])
    seg = widget.ctrl.segmenter
    label = f"{backend}{' (random weights)' if getattr(seg, 'random_weights', False) or checkpoint else ''}"
    image = widget.ctrl.image_layer
    z, r, c = _click_target(image)
    n = image.data.shape[0]

    # 1. embedding prefetch around the viewed slice
    widget.prefetcher.stop()
    wait_for_workers(120000)
    widget.prefetcher.radius = 2 if quick else 4
    widget.prefetcher.done = []
    z_pre = max(z - 25, widget.prefetcher.radius)  # slices the bind-time prefetch did not reach
    started = widget.prefetcher.started
    with StallMonitor() as mon:
        t0 = time.perf_counter()
        widget.ctrl.jump_to_slice(z_pre)  # the widget starts prefetching around the new slice itself
        run_loop_until(lambda: widget.prefetcher.started > started, 10)
        run_loop_until(lambda: not widget.prefetcher.running, 600)
        took = time.perf_counter() - t0
    if widget.prefetcher.error is not None:
        raise RuntimeError(f"prefetch failed: {widget.prefetcher.error}")
    widget._step_timer.stop()
    widget.prefetcher.stop()
    widget.ctrl.jump_to_slice(z)
    run_loop_until(lambda: False, 0.5)
    records.append(Record("gui.event_loop_stall", f"prefetch {backend}", mon.longest_stall_ms, "ms", 100.0,
                          device=dev, notes=f"{label}, {len(widget.prefetcher.done)} slices in {took:.1f} s, "
                          f"{what}; baseline = 100 ms target"))

    # 2. click to preview (embedding of the slice already cached, as after prefetch)
    lat, eng, inline = [], [], 0
    for i in range(3 if quick else 8):
        widget.clear_prompts()
        done = []
        widget.preview_updated.connect(done.append)
        widget.prompts.add_point(z, r + (i % 3) - 1, c + (i // 3) - 1)
        run_loop_until(lambda: bool(done), 120)
        widget.preview_updated.disconnect(done.append)
        lat.append(widget.last_latency["click_to_preview_s"] * 1e3)
        eng.append(widget.last_latency["engine_s"] * 1e3)
        inline += bool(widget.last_latency.get("inline"))
    widget.prefetcher.stop()
    wait_for_workers(120000)
    records.append(Record("gui.click_to_preview", backend, median(lat), "ms", median(eng), device=dev,
                          notes=f"{label}; baseline = engine predict in the worker; target <= baseline + 50 ms; "
                          f"overhead {median(lat) - median(eng):.1f} ms (median of {len(lat)}; {inline} predicted on "
                          "the main thread, the engine being fast)"))

    # 3. propagation
    widget.accept()
    span = 3 if quick else (6 if backend != "classic" else n)
    widget.ui.whole.setChecked(span >= n)
    widget.ui.first.setValue(max(z - span // 2, 0))
    widget.ui.last.setValue(min(z + span // 2, n - 1))
    finished = []
    widget.propagation_finished.connect(finished.append)
    with StallMonitor() as mon:
        widget.propagate()
        run_loop_until(lambda: bool(finished), 900)
    widget.propagation_finished.disconnect(finished.append)
    run = finished[0] if finished else None
    got = f"{len(run.results)} slices in {run.t_end - run.t_start:.1f} s" if run else "did not finish"
    records.append(Record("gui.event_loop_stall", f"propagation {backend}", mon.longest_stall_ms, "ms", 100.0,
                          device=dev, notes=f"{label}, {got}, {what}; baseline = 100 ms target"))
    widget.select_object(0)
    return records


def _render_only_stall(viewer, image) -> float:
    """Longest stall while napari redraws one point added to a plain Points layer (no widget)."""
    probe = viewer.add_points(np.zeros((0, image.ndim)), scale=image.scale, name="probe", size=4)
    z, r, c = _click_target(image)
    stalls = []
    for i in range(3):
        with StallMonitor() as mon:
            probe.add([[z, r + i, c]])
            run_loop_until(lambda: False, 0.5)
        stalls.append(mon.longest_stall_ms)
    viewer.layers.remove(probe)
    return median(stalls)


def run(args) -> list[Record]:
    if not os.environ.get("DISPLAY"):
        raise RuntimeError("the gui benchmarks need a display: xvfb-run -a .venv/bin/python -m benchmarks gui")
    import napari

    from napari_medprompt._qt.segment.widget import SegmentWidget
    from napari_medprompt._qt.workers import wait_for_workers

    quick = bool(getattr(args, "quick", False))
    SegmentWidget.ask_restore = staticmethod(lambda folder: False)
    viewer = napari.Viewer(show=True)
    records: list[Record] = []
    try:
        image, what = _image(viewer)
        widget = SegmentWidget(viewer)
        viewer.window.add_dock_widget(widget, name="Segment")
        widget.bind_image(image)
        widget.ctrl.session.set_folder(Path(tempfile.mkdtemp(prefix="medprompt-bench-gui-")) / "s", save=False)
        render = _render_only_stall(viewer, image)
        records.append(Record("gui.render_stall", "one point added, no widget", render, "ms", device=device_name(),
                              notes="napari/vispy redraw of one click on this machine (Mesa llvmpipe software "
                              "OpenGL under Xvfb): part of every stall and latency above"))
        records += _bench_backend(viewer, widget, "classic", "", quick, what)
        try:
            ckpt = _random_sam2_checkpoint()
        except Exception as err:  # no sam2 / torch: the classic numbers stand alone
            print(f"[gui] SAM2 skipped: {err}")
        else:
            records += _bench_backend(viewer, widget, "sam2.1-hiera-tiny", str(ckpt), quick, what)
    finally:
        try:
            widget.shutdown()
        except Exception:
            wait_for_workers(60000)
        viewer.close()
    return records


def _random_sam2_checkpoint() -> Path:
    """A SAM2.1-tiny checkpoint with random weights, written by a child process (see the tests)."""
    import subprocess
    import sys

    from napari_medprompt.models.cache import cache_dir

    path = cache_dir("bench") / "sam2.1_hiera_tiny_random.pt"
    if not path.is_file():
        code = ("import sys\nfrom napari_medprompt.models.sam2_weights import write_random_checkpoint\n"
                "write_random_checkpoint('sam2.1-hiera-tiny', sys.argv[1])\n")
        subprocess.run([sys.executable, "-c", code, str(path)], check=True, timeout=600)
    return path
