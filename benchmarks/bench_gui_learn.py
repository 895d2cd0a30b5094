"""GUI responsiveness of the Learn dock: the longest event-loop stall while a classifier trains.

``gui.event_loop_stall_training`` (ms, target <= 100): the sample abdominal CT phantom with its organs
as accepted, classed objects (liver, spleen, kidneys) in the Learn dock's example set; a model trains
in the dock's worker (feature extraction, steps, epochs, the version written at the end) while the
main thread's 5 ms QTimer measures the longest gap (:class:`benchmarks.bench_gui.StallMonitor`):
once with the viewer idle (target 100 ms), once while, as a user would, the viewer moves to another
slice every 200 ms (the canvas redraws each time; baseline: the same scrolling without training). Runs
with the tiny test ViT (``--quick``) and with CLIP ViT-B/16 on random weights (the same compute as
the published weights; nothing is downloaded).

Part of the ``gui`` group (needs a display): ``xvfb-run -a .venv/bin/python -m benchmarks gui``.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.bench_gui import StallMonitor, run_loop_until
from benchmarks.runner import Record, device_name


def _setup(viewer, folder: Path):
    from napari_medprompt._qt.learn.widget import prepare_torch
    from napari_medprompt._qt.segment.widget import SegmentWidget
    from napari_medprompt._sample_data import make_sample_ct

    prepare_torch()  # torch is imported once, when the dock first trains; not part of the figure
    SegmentWidget.ask_restore = staticmethod(lambda f: False)
    (img, img_kw, _), (lab, lab_kw, _) = make_sample_ct()
    image = viewer.add_image(img, **img_kw)
    _d, seg = viewer.window.add_plugin_dock_widget("napari-medprompt", "Segment")
    seg.bind_image(image)
    seg.ctrl.session.set_folder(folder / "phantom.medprompt", save=False)
    _d, learn = viewer.window.add_plugin_dock_widget("napari-medprompt", "Learn")
    learn._bind(seg.ctrl.session)
    session = seg.ctrl.session
    names = lab_kw["metadata"]["label_names"]
    lab = np.asarray(lab)
    for lid, name in sorted(names.items()):
        cls = "kidney" if "kidney" in name else name
        if cls not in ("liver", "spleen", "kidney"):
            continue
        zs = [z for z in range(lab.shape[0]) if (lab[z] == lid).any()][::3]  # every third slice
        obj = session.new_object(name=name)
        session.commit_slices(obj.id, {z: lab[z] == lid for z in zs}, "accepted")
        session.set_object_class(obj.id, cls)
    learn.add_accepted_objects()
    return seg, learn, image


def _scroll(seg, n: int, until, limit_s: float) -> None:
    """Move the viewer to another slice every 200 ms (as a user scrolling) until ``until()``."""
    t0, z = time.perf_counter(), 0
    while not until() and time.perf_counter() - t0 < limit_s:
        z = (z + 7) % n
        seg.ctrl.jump_to_slice(z)
        run_loop_until(until, 0.2)


def _stall_scrolling_only(seg, image, seconds: float) -> float:
    """Baseline: the longest stall while only scrolling (no training), for ``seconds``."""
    t0 = time.perf_counter()
    with StallMonitor() as mon:
        _scroll(seg, image.data.shape[0], lambda: time.perf_counter() - t0 > seconds, seconds + 1)
    return mon.longest_stall_ms


def _stall_while_training(viewer, seg, learn, image, backbone: str, method: str, epochs: int,
                          scroll: bool = True) -> tuple[float, str, float]:
    learn.backbone.setCurrentIndex(learn.backbone.findData(backbone))
    learn.method.setCurrentIndex(learn.method.findData(method))
    learn.epochs.setValue(epochs)
    n = image.data.shape[0]
    run_loop_until(lambda: False, 0.5)
    with StallMonitor() as mon:
        t0 = time.perf_counter()
        job = learn.start_training()
        if job is None:
            raise RuntimeError(learn.messages[-1][1])
        if scroll:
            _scroll(seg, n, lambda: not job.running, 1800)  # the user scrolls while the model trains
        else:
            run_loop_until(lambda: not job.running, 1800)
        run_loop_until(lambda: False, 0.5)  # the end of the run: version table, notifications
        took = time.perf_counter() - t0
    res = job.run.result
    if res is None:
        raise RuntimeError(f"training failed: {job.error}")
    steps = sum(e.kind == "step" for e in job.events)
    note = (f"{method} on {backbone}{' (random weights)' if res.random_weights else ''}, {len(learn.workspace.examples)} "
            f"examples, {res.metrics.get('epochs_completed')} epochs / {steps} steps in {took:.1f} s, version "
            f"{res.version}; " + ("slice changed every 200 ms; " if scroll else "viewer idle; ") +
            "baseline = 100 ms target")
    return mon.longest_stall_ms, note, took


def run(args) -> list[Record]:
    if not os.environ.get("DISPLAY"):
        raise RuntimeError("the gui benchmarks need a display: xvfb-run -a .venv/bin/python -m benchmarks gui")
    import napari

    quick = bool(getattr(args, "quick", False))
    viewer = napari.Viewer(show=True)
    records: list[Record] = []
    learn = seg = None
    try:
        seg, learn, image = _setup(viewer, Path(tempfile.mkdtemp(prefix="medprompt-bench-learn-")))
        configs = [("test-vit-tiny", "linear-probe", 30)]
        if not quick:
            configs += [("test-vit-tiny", "clip-adapter", 30), ("ViT-B-16", "linear-probe", 10)]
        for backbone, method, epochs in configs:
            stall, note, _took = _stall_while_training(viewer, seg, learn, image, backbone, method, epochs,
                                                       scroll=False)
            records.append(Record("gui.event_loop_stall_training", f"{method} {backbone}, viewer idle", stall, "ms",
                                  100.0, device=device_name(), notes=note + f" (load average "
                                  f"{os.getloadavg()[0]:.1f})"))
            stall, note, took = _stall_while_training(viewer, seg, learn, image, backbone, method, epochs)
            base = _stall_scrolling_only(seg, image, min(max(took, 5.0), 30.0))
            records.append(Record("gui.event_loop_stall_training", f"{method} {backbone}, scrolling", stall, "ms", base,
                                  device=device_name(), notes=note.replace(
                                      "baseline = 100 ms target", f"baseline = the same scrolling without training "
                                      f"({base:.0f} ms, load average {os.getloadavg()[0]:.1f}); target <= 100 ms")))
    finally:
        for w in (learn, seg):
            if w is not None:
                try:
                    w.shutdown()
                except Exception:
                    pass
        viewer.close()
    return records
