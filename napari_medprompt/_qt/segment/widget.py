"""The "Segment" dock widget: click or box a structure, preview, accept, correct, propagate, save.

A thin view: the annotation state lives in the Qt-free :class:`AnnotationSession` (shared with the
Review widget through :func:`controller_for`), models behind the ``Segmenter`` protocol, and every
call that can take long runs in a ``thread_worker`` (see :mod:`._qt.jobs` / :mod:`._qt.workers`).

Mouse: click = positive point, Shift+click = negative point (in the "prompts (points)" layer, which
is put in add mode); in the "prompts (box)" layer rectangles = box prompts, paths = scribbles (points
along them), polygons / lassos = mask prompts (see :mod:`._qt.segment.prompt_layers`). Keys: see
:func:`napari_medprompt._qt.shortcuts.keyboard_shortcuts`.

Planes: prompts are made in the plane the viewer shows (axial, coronal or sagittal: napari's rolled
dims), the segmenter is bound to that plane's view of the volume
(:func:`napari_medprompt.segment.planes.plane_view`) and "Propagate" runs along the axis of the
plane the object was last prompted in. The session stores axial slices: an accepted coronal or
sagittal mask is written into the axial slices it crosses and recorded as a decision of that plane
(:mod:`napari_medprompt.session.plane_decisions`: the plane slice is "prompted", the axial slices
the user decided are left as they are, the other changed ones become "needs review"; see
:mod:`._qt.segment.commits`); later propagations never change its voxels. In the 3D view prompts
are refused with a message.

Model input: the "Modality" chooser sets the image's modality (presets, model window and the
classic backend's rules follow it); "Model window" chooses what the model sees: the checkpoint's own
convention when it declares one, else the display preset (default), always the display preset, a
fixed preset, or a named convention (:mod:`._qt.segment.model_input`). Both are recorded in the
provenance of every commit.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtCore import QTimer, Signal
from qtpy.QtWidgets import QFileDialog, QMessageBox, QVBoxLayout, QWidget

from napari_medprompt._qt.segment import ui as segment_ui
from napari_medprompt._qt.segment.backend_panel import BackendPanel
from napari_medprompt._qt.controller import controller_for, real_viewer
from napari_medprompt._qt.jobs import BackgroundSaver, Prefetcher, PropagationRun
from napari_medprompt._qt.segment.commits import CommitsMixin
from napari_medprompt._qt.segment.model_input import ModelInputMixin
from napari_medprompt._qt.segment.objects_panel import ObjectsPanel
from napari_medprompt._qt.segment.objects import ObjectsMixin
from napari_medprompt._qt.segment.propagation import PropagationMixin
from napari_medprompt._qt.segment.prompt_layers import PromptLayers
from napari_medprompt._qt.segment.text_prompt import TextPanel, TextPromptMixin
from napari_medprompt._qt.session_binding import (
    EditRecorder,
    layer_volume,
    make_labels_layer,
    make_preview_layer,
    open_session,
)
from napari_medprompt._qt.shortcuts import bind_shortcuts, shortcut_for
from napari_medprompt._qt.workers import LatestOnlyRunner, start_worker
from napari_medprompt.imaging.window import default_preset, preset_names
from napari_medprompt.segment.base import PromptError
from napari_medprompt.segment.planes import (
    VIEW_3D,
    plane_axis,
    plane_shape,
    plane_spacing,
    plane_view,
)
from napari_medprompt.segment.prompts import check_label_volume, label_object_mask, mask_prompt
from napari_medprompt.segment.validate import check_prompt
from napari_medprompt.session import SessionError


def _ask_restore_dialog(folder: Path) -> bool:
    answer = QMessageBox.question(
        None,
        "Restore annotation session?",
        f"A saved annotation session exists for this image:\n{folder}\n\nRestore it? "
        "(No keeps it and starts a new session; it is offered again next time.)",
    )
    return answer == QMessageBox.Yes


def _choose_session_dialog(candidates) -> object | None:
    """Pick one of several saved sessions of the image (None: start a new session)."""
    from qtpy.QtWidgets import QInputDialog

    new = "Start a new session (the saved ones are kept)"
    items = [c.describe() for c in candidates] + [new]
    item, ok = QInputDialog.getItem(None, "Restore annotation session?",
                                    "Several saved annotation sessions exist for this image:", items, 0, False)
    if not ok or item == new:
        return None
    return candidates[items.index(item)]


def disk_cache_on(seg) -> bool:
    """Whether ``seg`` keeps embeddings in a disk folder (the medprompt-embed cache exists)."""
    return getattr(getattr(seg, "cache", None), "disk_dir", None) is not None


#: When the last prediction took less than this, the next runs on the main thread (``_predicts_fast``).
INLINE_PREDICT_S = 0.025


class SegmentWidget(CommitsMixin, ModelInputMixin, TextPromptMixin, ObjectsMixin, PropagationMixin, QWidget):
    """Dock widget over one viewer; see the module docstring."""

    preview_updated = Signal(int)  # slice index of a preview shown
    propagation_finished = Signal(object)  # the PropagationRun
    #: Called with the session folder when a saved session exists; True restores it. Tests replace it.
    ask_restore = staticmethod(_ask_restore_dialog)
    #: Called with the saved sessions when there are several; returns one or None (new). Tests replace it.
    choose_session = staticmethod(_choose_session_dialog)

    def __init__(self, napari_viewer) -> None:
        super().__init__()
        self.viewer = real_viewer(napari_viewer)  # napari's per-widget proxy unwrapped: one set of layers
        self.ctrl = controller_for(napari_viewer)
        self.messages: list[tuple[str, str]] = []  # (level, text) of every notification shown
        self.prompts: PromptLayers | None = None
        self.preview_layer = None
        self.volume = None
        self.edits: EditRecorder | None = None
        self.run: PropagationRun | None = None
        self.prefetcher = Prefetcher()
        self._pending: dict[int, np.ndarray] = {}  # previews of the current object not yet accepted
        self._seg_ready = False
        self._binding = False
        self._save_failed_shown = False
        self._unsubscribe = None
        self.last_latency: dict[str, float] = {}
        self._runner = LatestOnlyRunner(self._show_preview, self._predict_failed)
        self._step_timer = QTimer(self)
        self._step_timer.setSingleShot(True)
        self._step_timer.setInterval(150)
        self._step_timer.timeout.connect(self._follow_slice)
        # after a preview, prefetching resumes only once the user pauses: an embedding started
        # between two quick clicks would compete with the next click's prediction for the CPU
        self._resume_timer = QTimer(self)
        self._resume_timer.setSingleShot(True)
        self._resume_timer.setInterval(1000)
        self._resume_timer.timeout.connect(self._follow_slice)
        self._redraw_timer = QTimer(self)
        self._redraw_timer.setSingleShot(True)
        self._redraw_timer.setInterval(100)
        self._redraw_timer.timeout.connect(self._redraw_preview)
        self._embedded_timer = QTimer(self)  # the "embedded: n / N slices" label, at most 4 times a second
        self._embedded_timer.setSingleShot(True)
        self._embedded_timer.setInterval(250)
        self._embedded_timer.timeout.connect(self.update_embedded)
        self.prefetcher.on_change = self._embedded_timer.start
        self._preview_dirty: set[int] = set()  # preview slices changed since the last redraw
        self._uncommitted: dict[int, np.ndarray] = {}  # propagated slices not yet in the session
        self._uncommitted_since: float | None = None
        self._autosave_during_run = True  # the session's autosave setting, paused while propagating
        self._saver = BackgroundSaver()
        self._last_engine_s: float | None = None  # seconds of the segmenter's last predict()
        self._bind_gen = 0  # generation of the latest segmenter bind (older binds are skipped)
        self._bind_lock = threading.Lock()
        self._bound_plane = "axial"  # the plane view the segmenter is bound to
        self._pending_plane = "axial"  # the plane the pending previews (``_pending``) are slices of
        self._object_plane: dict[int, str] = {}  # object -> plane it was last prompted in
        self._model_window_choice = segment_ui.AUTO_LABEL
        self._pending_extra: dict = {}  # provenance of a text preview (``_pending``), else empty

        self.backend = BackendPanel()
        self.objects = ObjectsPanel()
        self.text_panel = TextPanel()
        self.ui = segment_ui.build(self, self.backend, self.objects, self.text_panel)
        self._init_text()
        lay = QVBoxLayout(self)
        lay.addWidget(self.ui.root)
        segment_ui.compact_combos(self)

        self.backend.loaded.connect(self._on_segmenter_loaded)
        self.backend.failed.connect(self._error)
        self.objects.selected.connect(self.select_object)
        self.objects.new_requested.connect(self.new_object)
        self.objects.renamed.connect(self._rename)
        self.objects.recolored.connect(lambda oid, rgb: self._session_call("set_color", oid, rgb))
        self.objects.lock_toggled.connect(lambda oid, on: self._session_call("set_locked", oid, on))
        self.objects.delete_requested.connect(self.delete_object)
        self.ui.image.activated.connect(lambda _i: self.bind_image(self.ui.image.currentData()))
        self.ui.labels_source.activated.connect(lambda _i: self._import_labels_layer())
        self.ui.window.activated.connect(lambda _i: self.set_window(self.ui.window.currentText()))
        self.ui.modality.activated.connect(lambda _i: self.set_modality(self.ui.modality.currentText()))
        self.ui.model_window.activated.connect(lambda _i: self.set_model_window(self.ui.model_window.currentText()))
        self.ui.init_from_label.clicked.connect(lambda: self.prompt_from_label(self.ui.init_source.currentData()))
        self.ui.accept.clicked.connect(self.accept)
        self.ui.clear.clicked.connect(self.clear_prompts)
        self.ui.propagate.clicked.connect(self.propagate)
        self.ui.cancel.clicked.connect(self.cancel)
        self.ui.undo.clicked.connect(self.undo)
        self.ui.redo.clicked.connect(self.redo)
        self.ui.save.clicked.connect(lambda: self.save_segmentation())
        napari_viewer.layers.events.inserted.connect(self._refresh_layer_choices)
        napari_viewer.layers.events.removed.connect(self._on_layer_removed)
        napari_viewer.dims.events.current_step.connect(lambda _e: self._step_timer.start())
        napari_viewer.dims.events.order.connect(self._on_view_changed)
        napari_viewer.dims.events.ndisplay.connect(self._on_view_changed)
        bind_shortcuts([napari_viewer], self._actions())
        from qtpy.QtWidgets import QApplication

        QApplication.instance().aboutToQuit.connect(self.shutdown)
        self._refresh_layer_choices()
        self._update_buttons()

    # ---------------------------------------------------------------------------- notifications
    def _notify(self, level: str, msg: str) -> None:
        self.messages.append((level, msg))
        self.ui.status.setText(msg)
        {"error": show_error, "warning": show_warning}.get(level, show_info)(msg)

    def _error(self, msg: str) -> None:
        self._notify("error", str(msg))

    def _warn(self, msg: str) -> None:
        self._notify("warning", str(msg))

    def _ready(self, need_segmenter: bool = True) -> bool:
        if self.ctrl.session is None or self.ctrl.image_layer is None:
            self._error(
                "No image: open a CT, MR or X-ray image (File > Open) or the sample (File > Open "
                "Sample > MedPrompt), then choose it under 'Image' in the Segment panel."
            )
            return False
        if need_segmenter and (self.ctrl.segmenter is None or not self._seg_ready):
            self._error("No backend loaded: choose a backend and press 'Load backend' first.")
            return False
        return True

    # ------------------------------------------------------------------------------- layers
    def _refresh_layer_choices(self, *_):
        from napari.layers import Image, Labels

        images = [ly for ly in self.viewer.layers if isinstance(ly, Image)]
        own = {self.ctrl.labels_layer, self.preview_layer}
        labels = [ly for ly in self.viewer.layers if isinstance(ly, Labels) and ly not in own]
        segment_ui.fill_combo(self.ui.image, images, self.ctrl.image_layer, placeholder="(no image layer)")
        segment_ui.fill_combo(self.ui.labels_source, labels, None, placeholder="(new segmentation)")
        segment_ui.fill_combo(self.ui.init_source, labels, self.ui.init_source.currentData(),
                              placeholder="(choose a label layer)")
        if self.ctrl.image_layer is None and len(images) == 1 and not self._binding:
            self.bind_image(images[0])

    def _on_layer_removed(self, event) -> None:
        if event.value is self.ctrl.image_layer:
            self._cancel_all()
            self.ctrl.image_layer = None
            self._seg_ready = False
            self.ui.status.setText("The image layer was removed: choose another image to keep segmenting.")
        self._refresh_layer_choices()

    def bind_image(self, layer) -> None:
        """Start (or restore) the session of ``layer`` and create the prompt/preview/labels layers."""
        if layer is None or layer is self.ctrl.image_layer or self._binding:
            return
        self._binding = True
        try:
            self._bind_image(layer)
        finally:
            self._binding = False
        self._refresh_layer_choices()

    def _bind_image(self, layer) -> None:
        if getattr(layer, "rgb", False) or layer.ndim not in (2, 3):
            self._error(f"'{layer.name}' has {layer.ndim} dimensions (rgb={layer.rgb}); segmentation "
                        "needs a grey 2D image or a (z, y, x) volume.")
            return
        self._cancel_all()
        self.cancel_text()  # a text run of the previous image is discarded when it ends
        try:
            vol = layer_volume(layer)
            session, note, level = open_session(vol, self.ask_restore, self.choose_session)
        except (SessionError, ValueError, OSError) as err:
            self._error(f"Could not start a session for '{layer.name}': {err}")
            return
        self._teardown_layers()
        self.volume = vol
        labels_layer = make_labels_layer(self.viewer, session, layer)
        self.preview_layer = make_preview_layer(self.viewer, layer)
        self.prompts = PromptLayers(self.viewer, layer)
        self.prompts.changed.connect(self._on_prompts_changed)
        self.prompts.refused.connect(self._error)
        self._bound_plane = self._pending_plane = "axial"
        self._object_plane.clear()
        if self._unsubscribe:
            self._unsubscribe()
        self._unsubscribe = session.on_change(self._on_session_change)
        self.ctrl.bind_session(session, layer, labels_layer, vol)
        self.edits = EditRecorder(self.ctrl, self._warn)
        bind_shortcuts([self.prompts.points, self.prompts.shapes, labels_layer], self._actions())
        segment_ui.fill_windows(self.ui.window, preset_names(vol.modality),
                                layer.metadata.get("medprompt", {}).get("window_preset") or default_preset(vol.modality))
        segment_ui.fill_modality(self.ui.modality, vol.modality)
        segment_ui.fill_model_windows(self.ui.model_window, vol.modality, self._model_window_choice)
        segment_ui.set_range(self.ui, layer.data.shape[0] if layer.ndim == 3 else 1)
        self._on_view_changed()
        self._sync_objects()
        if session.objects:  # a restored session: go on with its last object (no duplicate on click)
            self.select_object(max(session.objects))
        self.viewer.layers.selection.active = self.prompts.points
        self.prompts.points.mode = "add"
        if note:
            self._notify(level, note)
        if self.ctrl.segmenter is not None:
            self._bind_segmenter(self.ctrl.segmenter)
        self.refresh_seg_models()
        self._update_buttons()

    def _teardown_layers(self) -> None:
        if self.edits is not None:
            self.edits.disconnect()
        if self.prompts is not None:
            self.prompts.remove()
        for ly in (self.preview_layer, self.ctrl.labels_layer):
            if ly is not None and ly in self.viewer.layers:
                self.viewer.layers.remove(ly)
        self.prompts = self.preview_layer = self.edits = None
        self._pending.clear()

    # ------------------------------------------------------------------------------- backend
    def _on_segmenter_loaded(self, seg) -> None:
        self.ctrl.set_segmenter(seg)
        if getattr(seg, "random_weights", False):
            self._warn(f"{getattr(seg, 'name', 'model')} runs with RANDOM weights: its masks are "
                       "meaningless (tests and timing only). Choose a checkpoint for real work.")
        if self.ctrl.image_layer is not None:
            self._bind_segmenter(seg)
        self.refresh_seg_models()

    def _bind_segmenter(self, seg) -> None:
        self._seg_ready = False
        self._last_engine_s = None
        self.prefetcher.stop()
        layer, vol, session = self.ctrl.image_layer, self.volume, self.ctrl.session
        image = np.asarray(layer.data)
        preset = self.ui.window.currentText() or None  # the model window follows the display's preset

        self._bind_gen += 1
        gen = self._bind_gen

        def bind_job():
            # one bind at a time, newest wins: an older image's bind finishing last would otherwise
            # leave the segmenter bound to the image no longer shown
            with self._bind_lock:
                if gen != self._bind_gen:
                    return False
                seg.bind(image, modality=vol.modality, spacing=vol.spacing, key=session.image_key,
                         display_preset=preset)
                self._bound_plane = "axial"
                return True

        def bound(done=True):
            if done and gen == self._bind_gen and seg is self.ctrl.segmenter and layer is self.ctrl.image_layer:
                self._seg_ready = True
                self._apply_model_window(quiet=True)
                self.prefetcher.set_segmenter(seg, image.shape[0] if image.ndim == 3 else 1)
                self.prefetcher.whole_volume = disk_cache_on(seg) and image.ndim == 3
                self.update_embedded()
                self._follow_slice()
                self._update_buttons()
                self._on_prompts_changed()

        start_worker(bind_job, on_result=bound,
                     on_error=lambda e: self._error(f"Could not prepare the image: {e}"))

    def update_embedded(self) -> None:
        """Show how many slices of the image have their embedding computed (SAM2 backends)."""
        seg, label = self.ctrl.segmenter, self.backend.embedded
        cache, n = getattr(seg, "cache", None), self.prefetcher.n_slices
        if not self._seg_ready or cache is None or not hasattr(cache, "contains") or n < 1:
            label.setVisible(False)
            return
        done = sum(1 for z in range(n) if cache.contains(z))
        where = "disk cache" if disk_cache_on(seg) else "memory only"
        busy = " (embedding in the background…)" if self.prefetcher.running else ""
        label.setText(f"embedded: {done} / {n} slices ({where}){busy}")
        label.setVisible(True)

    def _follow_slice(self) -> None:
        if self._seg_ready and self.run is None and self._bound_plane == "axial":
            self.prefetcher.follow(self.ctrl.current_slice())

    # -------------------------------------------------------------------------------- planes
    def view_plane(self) -> str:
        """The plane the viewer shows of the image: "axial", "coronal", "sagittal", or "3d"."""
        return self.ctrl.view_plane()

    def view_index(self, plane: str) -> int:
        """Index of the slice of ``plane`` the viewer is on (0 for a 2D image)."""
        return self.ctrl.view_index(plane)

    def _on_view_changed(self, *_):
        """The view changed (rolled dims, 2D/3D): new prompts go to the plane now shown."""
        if self.prompts is None or self.ctrl.image_layer is None or self.ctrl.image_layer.ndim != 3:
            return
        plane = self.view_plane()
        self.prompts.set_plane(plane if plane != VIEW_3D else self.prompts.plane, view_3d=plane == VIEW_3D)
        if plane == VIEW_3D:
            self.ui.plane.setText("3D view: prompts are made on a 2D slice (switch to 2D to click).")
            return
        self.ui.plane.setText(f"Prompting in the <b>{plane}</b> plane (prompts and propagation follow "
                              "the plane shown; roll the dims to change it).")
        if self.run is None:
            segment_ui.set_range(self.ui, self.ctrl.image_layer.data.shape[plane_axis(plane)])

    def _ensure_plane(self, seg, plane: str) -> None:
        """Bind ``seg`` to ``plane``'s view of the image if it is bound to another (call under the
        bind lock, in a worker: a SAM2 bind hashes the volume)."""
        if plane == self._bound_plane or self.volume is None or self.ctrl.session is None:
            return
        image = np.asarray(self.ctrl.image_layer.data)
        key = self.ctrl.session.image_key
        if plane == "axial":
            seg.bind(image, modality=self.volume.modality, spacing=self.volume.spacing, key=key,
                     display_preset=self.ui.window.currentText() or None)
        else:
            seg.bind(plane_view(image, plane), modality=self.volume.modality,
                     spacing=plane_spacing(self.volume.spacing, plane), key=f"{key}:{plane}",
                     display_preset=self.ui.window.currentText() or None)
        self._bound_plane = plane

    # ------------------------------------------------------------------------------- prompts
    def toggle_polarity(self) -> None:
        if self.prompts is not None:
            pos = self.prompts.toggle_polarity()
            self.ui.polarity.setText(segment_ui.polarity_text(pos))

    def clear_prompts(self) -> None:
        if self.prompts is not None:
            self.prompts.clear()
        self._clear_preview()

    def _prompt_target(self) -> tuple[str, int]:
        """``(plane, slice)`` of the newest prompt edit, else of the slice on screen."""
        if self.prompts is not None and self.prompts.last_target is not None:
            return self.prompts.last_target
        plane = self.view_plane()
        plane = "axial" if plane == VIEW_3D else plane
        return plane, (self.ctrl.current_slice() if plane == "axial" else self.view_index(plane))

    def _slice_shape(self, plane: str) -> tuple[int, int]:
        image = self.ctrl.image_layer
        return tuple(image.data.shape[-2:]) if image.ndim == 2 else plane_shape(image.data.shape, plane)

    def _on_prompts_changed(self) -> None:
        if self.prompts is None or self.ctrl.session is None or not self._seg_ready:
            return
        plane, z = self._prompt_target()
        try:
            prompt = self.prompts.prompt_on(z, plane)
            if not prompt.is_empty:
                check_prompt(prompt, self._slice_shape(plane))
        except PromptError as err:
            removed = self.prompts.drop_invalid(z, plane)
            what = " It was removed from the prompt layer;" if removed else ""
            self._warn(f"{err}.{what} Nothing was changed in the segmentation.")
            return
        self.predict_prompt(plane, z, prompt)

    def predict_prompt(self, plane: str, z: int, prompt) -> None:
        """Preview the current object's mask on slice ``z`` of ``plane`` from ``prompt`` (a bad prompt
        is reported and changes nothing)."""
        if plane != self._pending_plane and self._pending:
            self._notify("info", f"Previews in the {self._pending_plane} plane were dropped (not accepted) "
                                 f"for a prompt in the {plane} plane.")
            self._clear_preview()
        if prompt.is_empty:
            if plane == self._pending_plane:
                self._pending.pop(z, None)
                self._runner.cancel()
                self._show_mask(z, None, plane)
            return
        try:
            prompt = check_prompt(prompt, self._slice_shape(plane))
        except PromptError as err:
            self._warn(f"{err}. Nothing was changed in the segmentation.")
            return
        if not self.ctrl.current_object and not self.new_object(keep_prompts=True):
            return
        oid = self.ctrl.current_object
        seg, t0 = self.ctrl.segmenter, time.perf_counter()
        self.prefetcher.stop()  # the click comes first; prefetch resumes after the preview
        self._resume_timer.stop()
        self._step_timer.stop()

        def job():
            with self._bind_lock:
                self._ensure_plane(seg, plane)
            t1 = time.perf_counter()
            result = seg.predict(z, prompt, oid)
            return z, oid, result, t0, time.perf_counter() - t1, plane

        if plane == self._bound_plane and self._predicts_fast(seg, z):
            # a worker round trip would cost more than the prediction: the result waits for the
            # canvas repaint of the new point before it can be shown, one repaint later
            self._runner.cancel()  # drop any older prediction still running
            try:
                payload = job()
            except Exception as err:  # shown like a worker's failure; the viewer goes on
                self._predict_failed(err)
                return
            self._show_preview(payload, inline=True)
            return
        self._runner.submit(job)

    def _predicts_fast(self, seg, z: int) -> bool:
        """Whether to predict on the main thread: the engine's last prediction took under
        ``INLINE_PREDICT_S`` and it needs no embedding computed for ``z`` first."""
        if self._last_engine_s is None or self._last_engine_s >= INLINE_PREDICT_S or self._runner.computing:
            return False
        contains = getattr(getattr(seg, "cache", None), "contains", None)
        try:
            return contains is None or bool(contains(z))
        except Exception:
            return False

    def _show_preview(self, payload, inline: bool = False) -> None:
        z, oid, result, t0, engine_s, plane = payload
        self._last_engine_s = engine_s
        if oid != self.ctrl.current_object:
            return
        mask = np.asarray(result.mask, dtype=bool)
        if plane != self._pending_plane or self._pending_extra:  # a text preview is replaced
            self._clear_preview()
            self._pending_plane = plane
        self._pending[z] = mask
        self._show_mask(z, mask, plane)
        self.last_latency = {"click_to_preview_s": time.perf_counter() - t0, "engine_s": engine_s,
                             "inline": inline}
        where = f"slice {z}" if plane == "axial" else f"{plane} slice {z}"
        self.ui.status.setText(f"Preview on {where}: {int(mask.sum())} px, score {result.score:.2f}. "
                               f"{shortcut_for('accept')} = accept")
        self.preview_updated.emit(z)
        self._resume_timer.start()  # resume prefetching around the viewed slice

    def _predict_failed(self, err: BaseException) -> None:
        self._warn(f"Prediction failed: {err}")

    def _show_mask(self, z: int, mask, plane: str = "axial") -> None:
        layer = self.preview_layer
        if layer is None:
            return
        view = plane_view(layer.data, plane)[z] if layer.ndim == 3 else layer.data
        view[...] = 0
        if mask is not None:
            view[mask] = self.ctrl.current_object
        layer.refresh()

    def _clear_preview(self) -> None:
        self._runner.cancel()
        self._pending.clear()
        self._pending_extra = {}
        self._pending_plane = "axial"
        self._preview_dirty.clear()
        if self.preview_layer is not None and self.preview_layer.data.any():
            self.preview_layer.data[...] = 0
            self.preview_layer.refresh()

    # ---------------------------------------------------------------------- label as a prompt
    def prompt_from_label(self, label_layer) -> None:
        """Use an object of ``label_layer`` on the slice shown (its selected label when present there,
        else the largest) as a mask prompt of the current object: preview, then accept / propagate."""
        if label_layer is None:
            self._warn("Choose a label layer to initialise from.")
            return
        if not self._ready():
            return
        plane = self.view_plane()
        if plane == VIEW_3D:
            self._error("Initialising from a label works on a 2D slice: switch to the 2D view first.")
            return
        image = self.ctrl.image_layer
        try:
            check_label_volume(np.shape(label_layer.data), image.data.shape, label_layer.name)
            z = self.view_index(plane) if image.ndim == 3 else 0
            data = np.asarray(label_layer.data)
            slc = plane_view(data, plane)[z] if image.ndim == 3 else data
            _oid, mask = label_object_mask(slc, getattr(label_layer, "selected_label", None), label_layer.name)
            prompt = mask_prompt(mask)
        except PromptError as err:
            self._error(f"{err}. Nothing was changed in the segmentation.")
            return
        self.predict_prompt(plane if image.ndim == 3 else "axial", z, prompt)

    def undo(self) -> None:
        if self.run is None and self.ctrl.session is not None and not self._session_call("undo"):
            pass

    def redo(self) -> None:
        if self.run is None and self.ctrl.session is not None:
            self._session_call("redo")

    # ------------------------------------------------------------------------------- display
    def save_segmentation(self, path: str | Path | None = None):
        """Write the label map as NIfTI + JSON sidecar (in a worker); returns the worker."""
        if not self._ready(need_segmenter=False):
            return None
        if path is None:
            path, _ = QFileDialog.getSaveFileName(self, "Save segmentation", "segmentation.nii.gz",
                                                  "NIfTI (*.nii.gz *.nii)")
            if not path:
                return None
        from napari_medprompt.io.labels_io import save_label_map

        session, vol = self.ctrl.session, self.volume
        labels = session.labels.copy() if vol.is_3d else session.labels[0].copy()
        info = session.label_info()
        return start_worker(
            save_label_map, Path(path), labels, vol, info,
            on_result=lambda p: self._notify("info", f"Saved the segmentation to {p}"),
            on_error=lambda e: self._error(f"Could not save the segmentation to {path}: {e}"),
        )

    # ------------------------------------------------------------------------------ plumbing
    def _actions(self) -> dict:
        return {
            "accept": self.accept,
            "propagate": self.propagate,
            "toggle_polarity": self.toggle_polarity,
            "next_object": lambda: self._step_object(+1),
            "previous_object": lambda: self._step_object(-1),
            "undo": self.undo,
            "redo": self.redo,
            "cancel": self.cancel,
        }

    def _update_buttons(self) -> None:
        segment_ui.update_buttons(self.ui, self.ctrl.session, self.run is not None, self._seg_ready)

    def shutdown(self, wait_ms: int = 60000) -> None:
        """Stop every job and wait (up to ``wait_ms``) for the worker threads to end."""
        from napari_medprompt._qt.workers import wait_for_workers

        self._step_timer.stop()
        self._resume_timer.stop()
        self._embedded_timer.stop()
        self.prefetcher.on_change = None
        self.cancel_text()
        self._cancel_all()
        wait_for_workers(wait_ms)

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        self.shutdown()
        if self._unsubscribe:
            self._unsubscribe()
        super().closeEvent(event)
