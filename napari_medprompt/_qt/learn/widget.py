"""The "Learn" dock widget: examples, training in the background, model versions, predictions, heat maps.

A thin view over the Qt-free learn core (:mod:`napari_medprompt.learn`): a
:class:`~napari_medprompt.learn.LearnWorkspace` next to the session folders holds the example set
and the model store; a :class:`~napari_medprompt.learn.LearnRun` trains in a napari ``thread_worker``
(:mod:`napari_medprompt._qt.learn.jobs`); a :class:`~napari_medprompt.learn.Predictor` of the active
version gives probabilities and heat maps, shown as an Image layer over the image (heat colormap,
additive blending, the image layer's scale, translate and affine, so a volume shown radiologically
is overlaid voxel for voxel). The image and its annotation session come from the viewer's shared
controller (the Segment and Review docks use the same one). Every failure is a notification; the
viewer keeps running.

This module assembles the dock: :class:`LearnWidget` follows the session and its workspace, owns the
shared progress bar, Cancel button and status line, and takes each tab's behaviour from its own module:
:mod:`~napari_medprompt._qt.learn.examples_tab`, :mod:`~napari_medprompt._qt.learn.train_tab`,
:mod:`~napari_medprompt._qt.learn.models_tab`, :mod:`~napari_medprompt._qt.learn.predict_tab` (mixed
in) and :mod:`~napari_medprompt._qt.learn.seg_tab` (a widget of its own). The widgets are laid out by
:mod:`napari_medprompt._qt.learn.ui`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal
from qtpy.QtGui import QIcon
from qtpy.QtWidgets import QWidget

from napari_medprompt._qt.controller import controller_for, real_viewer
from napari_medprompt._qt.learn.examples_tab import ExamplesTabMixin
from napari_medprompt._qt.learn.jobs import PROGRESS_INTERVAL_MS, PredictionJob, TrainingJob, prepare_torch
from napari_medprompt._qt.learn.models_tab import ModelsTabMixin
from napari_medprompt._qt.learn.predict_tab import HEATMAP_LAYER, RANDOM_HTML, PredictTabMixin
from napari_medprompt._qt.learn.train_tab import DEFAULT_BACKBONE, DEFAULT_METHOD, TrainTabMixin
from napari_medprompt._qt.learn.ui import build_learn_ui

__all__ = ["DEFAULT_BACKBONE", "DEFAULT_METHOD", "HEATMAP_LAYER", "RANDOM_HTML", "LearnWidget", "prepare_torch"]

log = logging.getLogger(__name__)


class _Relay(QObject):
    """Carries example-set / session callbacks to the GUI thread."""

    changed = Signal()


class LearnWidget(ExamplesTabMixin, TrainTabMixin, ModelsTabMixin, PredictTabMixin, QWidget):
    """Train few-shot classifiers from the annotations and overlay their predictions."""

    trained = Signal(object)  # the TrainingJob that ended
    predicted = Signal(object)  # the prediction result shown
    versions_changed = Signal()

    def __init__(self, napari_viewer, parent=None) -> None:
        super().__init__(parent)
        self.viewer = real_viewer(napari_viewer)
        self.ctrl = controller_for(napari_viewer)
        self.messages: list[tuple[str, str]] = []
        self.workspace = None
        self.job: TrainingJob | None = None
        self.prediction_job: PredictionJob | None = None
        self.heat_layer = None
        self.prediction = None  # the last result shown: {"mode", "slices", "heat", "probs", "objects", ...}
        self._predict_request = None  # (mode, slices) of the shown prediction: recomputed on model change
        self._predictors: dict = {}
        self._thumbs: dict[str, QIcon] = {}
        self._estimates: dict[tuple, float] = {}  # (method, backbone) -> seconds per example per epoch
        self._estimating: set[tuple] = set()
        self._unsub_examples = None
        self._unsub_session = None
        self._epoch_x: list[float] = []
        self._closing = False
        self._relay = _Relay()
        self._relay.changed.connect(self._schedule_refresh)
        build_learn_ui(self)
        self._refresh_timer = QTimer(self)
        self._refresh_timer.setSingleShot(True)
        self._refresh_timer.setInterval(50)
        self._refresh_timer.timeout.connect(self.refresh_examples)
        self._ui_timer = QTimer(self)  # progress bars, ETA: drawn at a fixed pace, never per event
        self._ui_timer.setInterval(PROGRESS_INTERVAL_MS)
        self._ui_timer.timeout.connect(self._tick)
        self._fill_choices()
        self._connect()
        self.ctrl.session_changed.connect(self._bind)
        self.viewer.dims.events.current_step.connect(self._on_slice_changed)
        self.viewer.layers.events.removed.connect(self._on_layer_removed)
        self._bind(self.ctrl.session)

    # ------------------------------------------------------------------------------ wiring
    def _connect(self) -> None:
        self.add_slice.clicked.connect(self.add_current_slice)
        self.add_objects.clicked.connect(self.add_accepted_objects)
        self.import_folder.clicked.connect(lambda: self.import_examples(kind="folder"))
        self.import_npz.clicked.connect(lambda: self.import_examples(kind="npz"))
        self.remove.clicked.connect(self.remove_selected)
        self.method.currentIndexChanged.connect(self._on_method_changed)
        self.backbone.currentIndexChanged.connect(self._on_backbone_changed)
        self.defaults.clicked.connect(self._reset_options)
        self.epochs.valueChanged.connect(lambda _v: self._update_eta())
        self.tabs.currentChanged.connect(lambda _i: self._update_eta())
        self.tabs.currentChanged.connect(lambda _i: self._seg_tab_refresh(objects_only=False))
        self.train.clicked.connect(self.start_training)
        self.cancel.clicked.connect(self.cancel_jobs)
        self.activate.clicked.connect(lambda: self.activate_version(self.selected_versions()[:1]))
        self.compare.clicked.connect(self.compare_selected)
        self.rollback.clicked.connect(self.roll_back)
        self.delete.clicked.connect(self.delete_selected)
        self.versions.itemSelectionChanged.connect(self._update_buttons)
        self.predict.clicked.connect(self.run_prediction)
        self.predict_mode.currentIndexChanged.connect(self._update_buttons)
        self.opacity.valueChanged.connect(self._set_opacity)
        self.heat_scale.currentIndexChanged.connect(lambda _i: self._rescale_heatmap())
        self.slice_plot.clicked.connect(lambda x: self._jump(int(round(x))))
        self.object_table.itemClicked.connect(self._on_object_clicked)

    # ----------------------------------------------------------------------------- binding
    def _bind(self, session) -> None:
        """Follow the viewer's session: its learn workspace (next to the session folder)."""
        if self._unsub_session is not None:
            self._unsub_session()
            self._unsub_session = None
        if session is not None:
            self._unsub_session = session.on_change(lambda ev: self._relay.changed.emit())
        root = self._workspace_root(session)
        if root is not None and (self.workspace is None or Path(self.workspace.root) != root):
            self.open_workspace(root)
        n = int(session.shape[0]) if session is not None else 1
        for sb in (self.range_from, self.range_to):
            sb.setRange(0, max(n - 1, 0))
        self.range_to.setValue(max(n - 1, 0))
        self._clear_prediction()
        self._update_header()
        self._update_buttons()
        self.seg_tab.refresh()

    @staticmethod
    def _workspace_root(session) -> Path | None:
        from napari_medprompt.learn import learn_folder_for

        if session is None:
            return None
        if session.folder is not None:
            return learn_folder_for(session.folder)
        from platformdirs import user_data_dir

        return Path(user_data_dir("napari-medprompt")) / "medprompt-learn"

    def open_workspace(self, root) -> None:
        """Use the example set and model store in ``root`` (created when missing)."""
        from napari_medprompt.learn import LearnError, LearnWorkspace

        if self._unsub_examples is not None:
            self._unsub_examples()
            self._unsub_examples = None
        try:
            self.workspace = LearnWorkspace(root)
        except (LearnError, OSError, ValueError) as err:
            self.workspace = None
            self._message("error", f"The learn folder {root} cannot be opened: {err}")
            return
        bad = self.workspace.examples.unreadable
        if bad:
            self._message("warning", f"{len(bad)} example(s) cannot be read and are left out (kept on disk): "
                                     + "; ".join(reason for _r, reason in bad[:3]))
        self._unsub_examples = self.workspace.examples.on_change(self._relay.changed.emit)
        self._predictors.clear()
        self._thumbs.clear()
        self.refresh_examples()
        self.refresh_versions()
        self._follow_active_backbone()

    def _update_header(self) -> None:
        s = self.ctrl.session
        ws = self.workspace
        if s is None:
            self.header.setText("No image is being annotated: open an image and choose it in the Segment panel. "
                                "Examples and models are kept next to the image's session.")
            return
        where = f"examples and models in <i>{ws.root}</i>" if ws is not None else "no learn folder"
        self.header.setText(f"<b>{s.image_name}</b> — {where}")
        self.header.setToolTip(str(ws.root) if ws is not None else "")

    # ------------------------------------------------------------------------ image access
    def _image(self):
        """(layer, data (Z, Y, X) or (Y, X), session, modality, spacing) of the bound image, or None."""
        layer, session = self.ctrl.image_layer, self.ctrl.session
        if layer is None or session is None or layer not in self.viewer.layers:
            return None
        vol = self.ctrl.volume
        modality = getattr(vol, "modality", None) or (layer.metadata.get("medprompt") or {}).get("modality")
        return layer, np.asarray(layer.data), session, modality, tuple(session.spacing)

    def _need_image(self):
        img = self._image()
        if img is None:
            self._message("warning", "No image: open an image and choose it in the Segment panel first.")
        return img

    def current_slice(self) -> int:
        return self.ctrl.current_slice() if self.ctrl.image_layer is not None else 0

    def _jump(self, z: int) -> None:
        self.ctrl.jump_to_slice(z)

    # ----------------------------------------------------------------------------- general
    def _seg_tab_refresh(self, objects_only: bool = True) -> None:
        """The segmentation-adapter tab follows the session only while it is shown (it scans the masks)."""
        if self.tabs.currentWidget() is self.seg_page:
            self.seg_tab.refresh_objects() if objects_only else self.seg_tab.refresh()

    def _tick(self) -> None:
        """The dock's timer: the running job's progress on the shared bar (training first); stops when
        no job runs."""
        if not (self._tick_training() or self._tick_prediction()):
            self._ui_timer.stop()

    def cancel_jobs(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._message("info", "Stopping the training after the current step; the best completed epoch "
                                  "is kept as a version.")
        if self.prediction_job is not None and not self.prediction_job.finished:
            self.prediction_job.cancel()
        self._update_buttons()

    def _update_buttons(self) -> None:
        training = self.job is not None and self.job.running
        predicting = self.prediction_job is not None and not self.prediction_job.finished
        has_ws = self.workspace is not None
        has_img = self.ctrl.image_layer is not None and self.ctrl.session is not None
        self.train.setEnabled(has_ws and not training and self._choice() is not None and self._choice().enabled)
        self.cancel.setEnabled(training or predicting)
        for b in (self.add_slice, self.add_objects):
            b.setEnabled(has_ws and has_img)
        for b in (self.import_folder, self.import_npz):
            b.setEnabled(has_ws)
        self.remove.setEnabled(has_ws and bool(self.examples.selectionModel().selectedRows()))
        sel = self.selected_versions()
        self.activate.setEnabled(len(sel) == 1)
        self.compare.setEnabled(len(sel) == 2)
        self.delete.setEnabled(len(sel) == 1 and not training)
        self.rollback.setEnabled(has_ws and len(getattr(self, "_version_rows", {})) > 1)
        self.predict.setEnabled(has_img and not predicting)
        mode = self.predict_mode.currentText()
        self.range_from.setEnabled(mode == "Slice range")
        self.range_to.setEnabled(mode == "Slice range")

    def _message(self, level: str, text: str) -> None:
        self.messages.append((level, text))
        color = {"error": "#e34a33", "warning": "#d08c00"}.get(level)
        try:
            self.status.setText(f"<span style='color:{color}'>{text}</span>" if color else text)
        except RuntimeError:  # the panel is gone
            pass
        try:
            from napari.utils.notifications import show_error, show_info, show_warning

            {"error": show_error, "warning": show_warning}.get(level, show_info)(text)
        except Exception:  # pragma: no cover - notifications are a convenience
            log.info(text)

    def shutdown(self, wait_ms: int = 60000) -> None:
        """Stop the jobs (a training run keeps its best completed epoch) and wait for their threads."""
        self._closing = True
        self._ui_timer.stop()
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.job.wait(wait_ms)
        self.seg_tab.shutdown(wait_ms)
        if self.prediction_job is not None and not self.prediction_job.finished:
            self.prediction_job.cancel()
        from napari_medprompt._qt.workers import wait_for_workers

        wait_for_workers(wait_ms)
        for unsub in (self._unsub_examples, self._unsub_session):
            if unsub is not None:
                unsub()
        self._unsub_examples = self._unsub_session = None
        for sig, slot in ((self.viewer.dims.events.current_step, self._on_slice_changed),
                          (self.viewer.layers.events.removed, self._on_layer_removed)):
            try:
                sig.disconnect(slot)
            except Exception:
                pass
        try:
            self.ctrl.session_changed.disconnect(self._bind)
        except Exception:
            pass

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt name)
        self.shutdown()
        super().closeEvent(event)
