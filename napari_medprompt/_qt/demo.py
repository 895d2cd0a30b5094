"""Demo: napari with the sample abdominal CT, the Segment, Review and Learn widgets.

    python -m napari_medprompt.demo                        # interactive
    python -m napari_medprompt.demo --screenshot out.png   # render the window to a PNG and exit
    python -m napari_medprompt.demo --backend sam2.1-hiera-tiny
    python -m napari_medprompt.demo --no-learn             # segmentation only

The demo clicks once in the liver of the synthetic CT phantom, accepts the preview and propagates
it through the volume with the chosen backend (default: classic, which needs no weights), then
clicks in the spleen so a live preview and its prompt point are on screen. With learning (the
default) the spleen is propagated too, both organs are accepted and given a class ("liver",
"spleen") as in the Review panel, the Learn dock collects them as examples, trains a small
classifier in the background (the tiny test CLIP on random weights: no pretrained weights are
downloaded, and the dock says so) and overlays its localization map on the CT (heat colormap). The
session and the learn folder live in a temporary folder, so the demo never touches real work.
``make demo SCREENSHOT=out.png`` runs this under Xvfb.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def _wait(cond, timeout: float = 120.0) -> bool:
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    t0 = time.perf_counter()
    while not cond():
        if time.perf_counter() - t0 > timeout:
            return False
        app.processEvents()
        time.sleep(0.01)
    return True


def _largest_slice_point(mask: np.ndarray) -> tuple[int, int, int]:
    from scipy import ndimage

    z = int(np.argmax(mask.sum(axis=(1, 2))))
    dist = ndimage.distance_transform_edt(mask[z])
    r, c = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return z, int(r), int(c)


def _dock_left(viewer, dock) -> None:
    """Move ``dock`` into a tab beside napari's layer controls (left), so the layer list stays visible."""
    from qtpy.QtCore import Qt

    try:
        qt_viewer = viewer.window._qt_viewer
        win = viewer.window._qt_window
        win.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, dock)
        win.tabifyDockWidget(qt_viewer.dockLayerControls, dock)
        dock.raise_()
    except AttributeError:  # another napari layout: leave it where napari put it
        pass


def _widen(viewer, dock, width: int) -> None:
    from qtpy.QtCore import Qt

    try:
        viewer.window._qt_window.resizeDocks([dock], [width], Qt.Orientation.Horizontal)
    except AttributeError:
        pass


def _close_notifications(viewer) -> None:
    """Close toast notifications (e.g. a warning napari shows on start) before a screenshot."""
    try:
        from napari._qt.dialogs.qt_notification import NapariQtNotification
    except ImportError:
        return
    for toast in viewer.window._qt_window.findChildren(NapariQtNotification):
        toast.close()


def build_demo(backend: str = "classic", session_dir: str | Path | None = None, show: bool = True):
    """Open the viewer and run the demo steps; returns ``(viewer, segment_widget, review_widget)``."""
    import napari

    from napari_medprompt._qt.segment.widget import SegmentWidget
    from napari_medprompt._sample_data import make_sample_ct

    SegmentWidget.ask_restore = staticmethod(lambda folder: False)
    # under PyQt5, napari's deprecation notice would otherwise cover part of the canvas
    warnings.filterwarnings("ignore", message=".*PyQt5 backend is deprecated.*")
    viewer = napari.Viewer(title="napari-medprompt demo: synthetic abdominal CT", show=show)
    (img_data, img_kw, _), (gt_data, gt_kw, _) = make_sample_ct()
    names = gt_kw.get("metadata", {}).get("label_names", {})
    image = viewer.add_image(img_data, **img_kw)
    truth = viewer.add_labels(gt_data, **{**gt_kw, "visible": False})

    # the docks are opened as Plugins > MedPrompt opens them (each widget gets napari's viewer proxy)
    seg_dock, seg = viewer.window.add_plugin_dock_widget("napari-medprompt", "Segment")
    review_dock, review = viewer.window.add_plugin_dock_widget("napari-medprompt", "Review")
    _dock_left(viewer, review_dock)
    _widen(viewer, seg_dock, 460)
    seg.bind_image(image)
    folder = Path(session_dir or tempfile.mkdtemp(prefix="medprompt-demo-")) / "demo.medprompt"
    seg.ctrl.session.set_folder(folder, save=False)
    viewer.layers.selection.active = seg.prompts.points

    seg.backend.backend.setCurrentText(backend)
    seg.backend.random.setChecked(backend != "classic")  # no weights offline: say so on screen
    seg.backend.load()
    if not _wait(lambda: seg._seg_ready or any(lv == "error" for lv, _ in seg.messages), 300):
        raise RuntimeError("the backend did not load in time")
    if not seg._seg_ready:
        raise RuntimeError(seg.messages[-1][1])

    ids = {v: int(k) for k, v in names.items()}
    liver = np.asarray(truth.data) == ids.get("liver", 1)
    z, r, c = _largest_slice_point(liver)
    seg.objects.name.setCurrentText("liver")
    seg.ctrl.jump_to_slice(z)
    seg.prompts.add_point(z, r, c)
    _wait(lambda: z in seg._pending)
    seg.accept()
    done = []
    seg.propagation_finished.connect(done.append)
    seg.propagate()
    _wait(lambda: bool(done), 600)

    if "spleen" in ids:  # a second object mid-work: its point and live preview are on screen
        spleen = np.asarray(truth.data) == ids["spleen"]
        sz, sr, sc = _largest_slice_point(spleen)
        seg.objects.name.setCurrentText("spleen")
        seg.new_object("spleen")
        seg.ctrl.jump_to_slice(sz)
        seg.prompts.add_point(sz, sr, sc)
        _wait(lambda: sz in seg._pending)
    seg.set_window("soft_tissue")
    viewer.reset_view()
    return viewer, seg, review


def build_learning(viewer, seg, review, backbone: str = "test-vit-tiny", method: str = "linear-probe",
                   epochs: int = 20):
    """Finish the spleen, accept both organs with their class, learn from them and show the heat map.
    Returns the Learn widget."""
    session = seg.ctrl.session
    if seg._pending:  # the spleen preview from build_demo: accept and propagate it
        seg.accept()
        done = []
        seg.propagation_finished.connect(done.append)
        seg.propagate()
        _wait(lambda: bool(done), 600)
    for oid, obj in sorted(session.objects.items()):
        zs = sorted(session.slice_voxels(oid))
        session.set_status(oid, zs, "accepted")  # the clinician reviewed them (Review panel)
        session.set_object_class(oid, obj.name.split()[0] or f"object {oid}")
    learn_dock, learn = viewer.window.add_plugin_dock_widget("napari-medprompt", "Learn")
    try:
        seg_dock = seg.parent()
        while seg_dock is not None and not hasattr(seg_dock, "setFloating"):
            seg_dock = seg_dock.parent()
        viewer.window._qt_window.tabifyDockWidget(seg_dock, learn_dock)
        learn_dock.raise_()
    except (AttributeError, TypeError):
        pass
    learn.add_accepted_objects()
    learn.backbone.setCurrentIndex(max(learn.backbone.findData(backbone), 0))
    learn.method.setCurrentIndex(max(learn.method.findData(method), 0))
    learn.epochs.setValue(epochs)
    job = learn.start_training()
    if job is None:
        raise RuntimeError(learn.messages[-1][1] if learn.messages else "training did not start")
    if not _wait(lambda: not job.running, 900) or job.result is None:
        raise RuntimeError(f"training did not finish: {job.error}")
    _wait(lambda: False, 0.3)
    spleen = [oid for oid, o in session.objects.items() if o.name.startswith("spleen")]
    if spleen:  # show a slice with both organs
        st = session.slice_voxels(spleen[0])
        seg.ctrl.jump_to_slice(max(st, key=st.get))
    learn.predict_mode.setCurrentText("Whole volume")
    pj = learn.run_prediction()
    if pj is None or not _wait(lambda: pj.finished, 600) or learn.heat_layer is None:
        raise RuntimeError(learn.messages[-1][1] if learn.messages else "prediction failed")
    learn.opacity.setValue(70)
    if seg.ctrl.labels_layer is not None:  # organ outlines only, so the heat map shows through
        seg.ctrl.labels_layer.contour = 2
    learn.tabs.setCurrentIndex(3)  # the Predict tab: probabilities, per-slice plot
    seg.clear_prompts()
    return learn


def save_screenshot(viewer, path: str | Path, max_kb: int = 500) -> Path:
    """Render the whole napari window to ``path`` (PNG, palette-reduced to stay under ``max_kb``)."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _close_notifications(viewer)
    _wait(lambda: False, 1.0)  # let the last layer updates draw
    arr = np.asarray(viewer.screenshot(canvas_only=False, flash=False))
    img = Image.fromarray(arr[..., :3])
    img.save(path, optimize=True)
    colors = 256
    while path.stat().st_size > max_kb * 1024 and colors >= 32:
        img.quantize(colors=colors, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
        colors //= 2
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_medprompt.demo", description=__doc__.split("\n")[0])
    p.add_argument("--screenshot", type=Path, default=None, help="write the window to this PNG and exit")
    p.add_argument("--backend", default="classic", help="segmentation backend (default: classic)")
    p.add_argument("--size", default="1800x1100", help="window size for the screenshot (WxH)")
    p.add_argument("--no-learn", action="store_true", help="segmentation only (no Learn dock, no training)")
    args = p.parse_args(argv)

    import napari

    viewer, seg, _review = build_demo(args.backend)
    learn = None if args.no_learn else build_learning(viewer, seg, _review)
    if args.screenshot is None:
        napari.run()
        return 0
    w, h = (int(v) for v in args.size.lower().split("x"))
    viewer.window._qt_window.resize(w, h)
    _wait(lambda: False, 0.5)
    for w in (_review, seg):
        dock = w.parent() if w is not None else None
        while dock is not None and not hasattr(dock, "setFloating"):  # the QDockWidget around it
            dock = dock.parent()
        if dock is not None and w is _review:
            dock.raise_()  # show the Review tab (beside napari's layer controls)
        elif dock is not None:
            _widen(viewer, dock, 520 if learn is not None else 460)
    _wait(lambda: False, 0.3)
    viewer.reset_view()
    if learn is not None:
        learn_dock = learn.parent()
        while learn_dock is not None and not hasattr(learn_dock, "setFloating"):
            learn_dock = learn_dock.parent()
        if learn_dock is not None:
            learn_dock.raise_()
        _wait(lambda: False, 0.3)
    out = save_screenshot(viewer, args.screenshot)
    if learn is not None:
        learn.shutdown()
    seg.shutdown()
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} kB)")
    viewer.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
