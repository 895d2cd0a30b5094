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
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor, QIcon, QImage, QPixmap
from qtpy.QtWidgets import QFileDialog, QInputDialog, QWidget

from napari_medprompt._qt.controller import controller_for, real_viewer
from napari_medprompt._qt.learn import ui as learn_ui
from napari_medprompt._qt.learn.jobs import PROGRESS_INTERVAL_MS, PredictionJob, TrainingJob
from napari_medprompt._qt.learn.ui import build_learn_ui, item

log = logging.getLogger(__name__)

HEATMAP_LAYER = "heat map"
RANDOM_HTML = "<b style='color:#e34a33'>RANDOM weights: not meaningful</b>"
DEFAULT_BACKBONE = "ViT-B-16"
DEFAULT_METHOD = "linear-probe"


class _Relay(QObject):
    """Carries example-set / session callbacks to the GUI thread."""

    changed = Signal()


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


def _fmt_s(s: float | None) -> str:
    if s is None or not np.isfinite(s):
        return "?"
    s = float(s)
    if s < 1:
        return "< 1 s"
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


class LearnWidget(QWidget):
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
        self.slice_plot.clicked.connect(lambda x: self._jump(int(round(x))))
        self.object_table.itemClicked.connect(self._on_object_clicked)

    def _fill_choices(self) -> None:
        from napari_medprompt.learn import backbone_choices

        self.backbone.blockSignals(True)
        for name, desc in backbone_choices():
            self.backbone.addItem(name, name)
            self.backbone.setItemData(self.backbone.count() - 1, desc, Qt.ItemDataRole.ToolTipRole)
        self.backbone.setCurrentIndex(max(self.backbone.findData(DEFAULT_BACKBONE), 0))
        self.backbone.blockSignals(False)
        self._fill_methods(select=DEFAULT_METHOD)
        self._on_backbone_changed()
        self._show_device()

    def _show_device(self) -> None:
        from napari_medprompt.learn import pick_device

        try:
            dev = pick_device()
        except Exception as err:  # pragma: no cover - torch missing
            self.device.setText(f"Device: unknown ({err})")
            return
        self.device_choice = dev
        text = f"Device: <b>{dev.label}</b> (picked automatically: CUDA, then Apple MPS, then CPU)."
        if dev.is_cpu:
            text += (" On a CPU the methods marked ⚡ are fast: they encode each image once and train only a "
                     "small head on the cached features; the others run the encoder at every step.")
        self.device.setText(text)

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

    def _follow_active_backbone(self) -> None:
        """Show the active version's backbone in the chooser (predictions run on it)."""
        row = getattr(self, "_version_rows", {}).get(self.active_version() or "")
        if row is not None:
            i = self.backbone.findData(row["backbone"])
            if i >= 0 and i != self.backbone.currentIndex():
                self.backbone.setCurrentIndex(i)

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

    # ------------------------------------------------------------------------- image access
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

    # ----------------------------------------------------------------------------- examples
    def _schedule_refresh(self) -> None:
        if not self._refresh_timer.isActive():
            self._refresh_timer.start()

    def _examples(self):
        return None if self.workspace is None else self.workspace.examples

    def _class_name(self) -> str | None:
        name = self.class_box.currentText().strip()
        if not name:
            self._message("warning", "Type or choose a class first (e.g. 'benign').")
            return None
        return name

    def add_current_slice(self) -> None:
        from napari_medprompt.learn import LearnError

        img, ex = self._need_image(), self._examples()
        name = self._class_name() if img is not None and ex is not None else None
        if name is None:
            return
        layer, data, session, modality, spacing = img
        try:
            if data.ndim == 2 or getattr(layer, "rgb", False):
                e = ex.add(data, name, source=session.image_name, source_key=session.image_key, origin="image",
                           spacing=spacing[1:], modality=modality)
                kept = ""
                if session.image_class is None:
                    session.set_image_class(name)
                elif session.image_class != name:  # set by the clinician elsewhere: never overwritten here
                    kept = (f" The image's own class stays '{session.image_class}' (change it in the Segment "
                            "or Review panel if it is wrong).")
                self._message("info", f"Added the whole image as '{name}' ({len(ex)} examples).{kept}")
            else:
                z = self.current_slice()
                e = ex.add_slice(data, z, name, source=session.image_name, source_key=session.image_key,
                                 spacing=spacing, modality=modality)
                self._message("info", f"Added slice {e.slice_index} of {session.image_name} as '{name}' "
                                      f"({len(ex)} examples).")
        except LearnError as err:
            self._message("warning", str(err))

    def add_accepted_objects(self) -> list:
        from napari_medprompt.learn import LearnError

        img, ex = self._need_image(), self._examples()
        if img is None or ex is None:
            return []
        layer, data, session, modality, _spacing = img
        try:
            added = ex.add_session(session, data, source=session.image_name, source_key=session.image_key,
                                   modality=modality)
        except LearnError as err:
            self._message("warning", str(err))
            return []
        objs = len({e.object_id for e in added if e.object_id is not None})
        dropped = ex.last_dropped
        gone = (f" Dropped {dropped} example(s) of this image whose slices are no longer accepted."
                if dropped else "")
        self._message("info", f"Added {len(added)} example(s) from {objs} object(s) of {session.image_name} "
                              f"({len(ex)} examples in the set).{gone}")
        return added

    def import_examples(self, path: str | None = None, kind: str = "folder") -> list:
        from napari_medprompt.learn import LearnError

        ex = self._examples()
        if ex is None:
            self._message("warning", "No learn folder yet: open an image first.")
            return []
        if path is None:
            if kind == "folder":
                path = QFileDialog.getExistingDirectory(self, "Folder with one sub-folder per class")
            else:
                path, _ = QFileDialog.getOpenFileName(self, "MedMNIST-style archive", "", "NumPy archive (*.npz)")
            if not path:
                return []
        try:
            added = ex.import_npz(path) if kind == "npz" else ex.import_folder(path)
        except LearnError as err:
            self._message("warning", str(err))
            return []
        self._message("info", f"Imported {len(added)} example(s) from {Path(path).name}.")
        return added

    def selected_examples(self) -> list[str]:
        rows = sorted({i.row() for i in self.examples.selectionModel().selectedRows()})
        return [self.examples.item(r, 1).data(Qt.ItemDataRole.UserRole) for r in rows]

    def remove_selected(self) -> int:
        ex = self._examples()
        uids = self.selected_examples()
        if ex is None or not uids:
            self._message("info", "Select the examples to remove first.")
            return 0
        n = ex.remove(uids)
        self._message("info", f"Removed {n} example(s); {len(ex)} left.")
        return n

    def _thumb(self, uid: str) -> QIcon:
        icon = self._thumbs.get(uid)
        if icon is None:
            arr = np.ascontiguousarray(self.workspace.examples.thumbnail(uid, learn_ui.THUMB))
            h, w = arr.shape[:2]
            if arr.ndim == 2:
                qimg = QImage(arr.data, w, h, w, QImage.Format.Format_Grayscale8)
            else:
                arr = np.ascontiguousarray(arr[..., :3])
                qimg = QImage(arr.data, w, h, 3 * w, QImage.Format.Format_RGB888)
            icon = QIcon(QPixmap.fromImage(qimg.copy()))
            self._thumbs[uid] = icon
        return icon

    def _seg_tab_refresh(self, objects_only: bool = True) -> None:
        """The segmentation-adapter tab follows the session only while it is shown (it scans the masks)."""
        if self.tabs.currentWidget() is self.seg_page:
            self.seg_tab.refresh_objects() if objects_only else self.seg_tab.refresh()

    def refresh_examples(self) -> None:
        self._seg_tab_refresh()
        ex = self._examples()
        rows = ex.rows() if ex is not None else []
        keep = set(self.selected_examples()) if self.examples.rowCount() else set()
        self.examples.setRowCount(len(rows))
        for r, row in enumerate(rows):
            thumb = item("")
            thumb.setIcon(self._thumb(row["uid"]))
            cells = [thumb, item(row["class"], row["uid"]), item(row["source"] or "—"),
                     item("" if row["slice"] is None else str(row["slice"]), align_right=True),
                     item("" if row["object"] is None else str(row["object"]), align_right=True),
                     item(str(row["group"])[:16])]
            cells[5].setToolTip(str(row["group"]))
            for c, it in enumerate(cells):
                self.examples.setItem(r, c, it)
            if row["uid"] in keep:
                self.examples.selectRow(r)
        if ex is None:
            self.counts.setText("")
        else:
            counts = ex.counts()
            per = " · ".join(f"<b>{c}</b>: {n}" + (" <span style='color:#e34a33'>(needs ≥ 2)</span>" if n < 2 else "")
                             for c, n in counts.items()) or "no classes yet"
            self.counts.setText(f"{per} — {len(ex)} example(s), {ex.n_with_masks} with a mask")
            current = self.class_box.currentText()
            classes = sorted(set(counts) | set(self._session_classes()))
            if [self.class_box.itemText(i) for i in range(self.class_box.count())] != classes:
                self.class_box.blockSignals(True)
                self.class_box.clear()
                self.class_box.addItems(classes)
                self.class_box.setCurrentText(current)
                self.class_box.blockSignals(False)
        self._fill_methods()
        self._update_eta()
        self._update_buttons()

    def _session_classes(self) -> list[str]:
        s = self.ctrl.session
        if s is None:
            return []
        out = set(s.object_classes().values())
        if s.image_class:
            out.add(s.image_class)
        return sorted(out)

    # ------------------------------------------------------------------------- method/backbone
    def _fill_methods(self, select: str | None = None) -> None:
        from napari_medprompt.learn import method_choices

        keep = select or self.method.currentData()
        choices = method_choices(self._examples(), self.backbone.currentData() or DEFAULT_BACKBONE)
        self._choices = {c.name: c for c in choices}
        self.method.blockSignals(True)
        self.method.clear()
        model = self.method.model()
        for c in choices:
            label = c.name + (" ⚡" if c.fast_on_cpu else "") + ("" if c.enabled else " (unavailable)")
            self.method.addItem(label, c.name)
            i = self.method.count() - 1
            tip = c.description + ("" if c.enabled else f"\nUnavailable: {c.reason}")
            self.method.setItemData(i, tip, Qt.ItemDataRole.ToolTipRole)
            if not c.enabled:
                it = model.item(i)
                if it is not None:
                    it.setEnabled(False)
        idx = self.method.findData(keep)
        if idx < 0 or not self._choices.get(keep, None) or not self._choices[keep].enabled:
            idx = next((i for i in range(self.method.count()) if self._choices[self.method.itemData(i)].enabled), 0)
        self.method.setCurrentIndex(idx)
        self.method.blockSignals(False)
        if self.method.currentData() != getattr(self.options.info, "name", None):
            self._on_method_changed()
        else:
            self._describe_method()

    def _choice(self):
        return self._choices.get(self.method.currentData())

    def _describe_method(self) -> None:
        c = self._choice()
        if c is None:
            self.method_desc.setText("")
            return
        bits = [c.description]
        if c.fast_on_cpu:
            bits.append("⚡ trains on cached features (fast on a CPU).")
        if c.uses_masks:
            bits.append("Uses the object masks.")
        if c.training_free:
            bits.append("Training-free: nothing is optimised.")
        text = " ".join(bits)
        if not c.enabled:
            text += f"<br><b style='color:#e34a33'>Unavailable:</b> {c.reason}"
        self.method_desc.setText(text)

    def _on_method_changed(self, *_a) -> None:
        from napari_medprompt.classify.base import method_info

        name = self.method.currentData()
        if not name:
            return
        info = method_info(name)
        self.options.set_method(info)
        self._reset_schedule(info)
        self._describe_method()
        self._update_eta()
        self._update_buttons()

    def _reset_schedule(self, info) -> None:
        self.epochs.setValue(int(info.defaults.epochs))
        self.lr.setValue(float(info.defaults.lr))
        self.epochs.setEnabled(int(info.defaults.epochs) > 0)
        self.lr.setEnabled(int(info.defaults.epochs) > 0)

    def _reset_options(self) -> None:
        self.options.reset()
        if self.options.info is not None:
            self._reset_schedule(self.options.info)

    def _on_backbone_changed(self, *_a) -> None:
        i = self.backbone.currentIndex()
        desc = self.backbone.itemData(i, Qt.ItemDataRole.ToolTipRole) or ""
        self.backbone_desc.setText(desc + " — no pretrained weights here: random init (results not meaningful)"
                                   if not self._weights_available(self.backbone.currentData()) else desc)
        self._fill_methods()

    @staticmethod
    def _weights_available(name: str | None) -> bool:
        from napari_medprompt.classify.backbones.registry import available_backbones

        info = available_backbones().get(name or "")
        if info is None or info.default_pretrained is None and not str(name).startswith("hf-hub:"):
            return False  # the test configs are random init by design
        try:
            from napari_medprompt.models.cache import cache_dir

            return any(cache_dir().rglob(f"*{str(name).replace('/', '_')}*"))
        except Exception:
            return False

    def _update_eta(self) -> None:
        """A rough ETA: from the last run of this method and backbone here (seconds per example and
        epoch), else from timing the encoder on this machine (in a worker, once, while the Train tab is
        shown): one encoder pass per example for cached-feature methods, three per epoch otherwise."""
        c, ex = self._choice(), self._examples()
        if c is None or ex is None:
            self.eta.setText("")
            return
        n = len(ex)
        backbone = self.backbone.currentData()
        rate, where = self._measured_rate(c.name, backbone), "from the last run of this method and backbone here"
        passes = epochs = max(self.epochs.value(), 1)
        if rate is None:
            rate, where = self._estimates.get((c.name, backbone)), "from a timing of the encoder on this machine"
            passes = 1 if c.fast_on_cpu else epochs
        hint = "fast: cached features" if c.fast_on_cpu else "the encoder runs at every step"
        if rate is None:
            self.eta.setText(f"ETA: being estimated ({n} examples; {hint})…" if n else "")
            if n and self.tabs.currentIndex() == 1:
                self._estimate_later(c.name, backbone)
            return
        total = rate * n * passes
        self.eta.setText(f"ETA: about {_fmt_s(total)} for {epochs} epoch(s) on {n} examples ({hint}; {where}).")

    def _estimate_later(self, method: str, backbone: str) -> None:
        """Time the encoder in a worker (once per method and backbone), then show the ETA."""
        key = (method, backbone)
        if key in self._estimating or key in self._estimates:
            return
        self._estimating.add(key)
        from napari_medprompt._qt.workers import start_worker
        from napari_medprompt.learn import estimate_epoch_seconds

        prepare_torch()

        def done(seconds, key=key):
            self._estimating.discard(key)
            self._estimates[key] = float(seconds)
            if not self._closing:
                self._update_eta()

        start_worker(estimate_epoch_seconds, method, backbone, 1, on_result=done,
                     on_error=lambda err, key=key: self._estimating.discard(key), background=True)

    def _measured_rate(self, method: str, backbone: str):
        """Seconds per example per epoch of the newest version of ``method`` on ``backbone`` (or None)."""
        ws = self.workspace
        if ws is None:
            return None
        try:
            for s in reversed(ws.store.list()):
                if s.get("method") != method or s.get("backbone") != backbone:
                    continue
                rec = ws.store.get(s["id"])
                learn = rec.get("learn") or {}
                m = rec.get("metrics") or {}
                done = max(int(m.get("epochs_completed") or 0), 1)
                if learn.get("seconds") and learn.get("n_examples"):
                    return float(learn["seconds"]) / (done * float(learn["n_examples"]))
        except Exception:
            return None
        return None

    # ----------------------------------------------------------------------------- training
    def start_training(self):
        """Train a new version on the example set in a worker; returns the job (None when refused)."""
        from napari_medprompt.learn import LearnError, LearnRun

        if self.job is not None and self.job.running:
            self._message("warning", "A model is already training: wait for it or press Cancel.")
            return None
        ws = self.workspace
        if ws is None:
            self._message("warning", "No learn folder yet: open an image and choose it in the Segment panel.")
            return None
        name = self.method.currentData()
        try:
            options = self.options.values()
        except ValueError as err:
            self._message("warning", f"Option problem: {err}")
            return None
        schedule = {}
        info = self.options.info
        if info is not None and int(info.defaults.epochs) > 0:
            if self.epochs.value() != int(info.defaults.epochs):
                schedule["epochs"] = self.epochs.value()
            if abs(self.lr.value() - float(info.defaults.lr)) > 1e-12:
                schedule["lr"] = self.lr.value()
        prepare_torch()
        choice = self._choice()
        problems = ws.examples.problems(uses_masks=bool(choice and choice.uses_masks))
        if problems:
            self._message("warning", " ".join(problems))
            return None
        if choice is not None and not choice.enabled:
            self._message("warning", f"{name} cannot train now: {choice.reason}")
            return None
        backbone = self.backbone.currentData()
        examples = ws.examples.snapshot()  # the run's data, taken here: adding/removing during training is safe

        def make_run():
            return LearnRun(examples, ws.store, method=name, backbone=backbone, options=options, **schedule)

        self.curves.clear()
        self.curves.add_series("training loss (per step)", "#56b4e9")
        self.curves.add_series("training loss (epoch)", "#0072b2", markers=True)
        self.curves.add_series("validation", "#e69f00", axis="right", markers=True)
        self.curves.y2lim = (0.0, 1.0)
        self.curves.title = f"Training {name} on {backbone}"
        self.curves.y2label = "validation balanced accuracy"
        self.run_status.setText("Starting (building the backbone)…")
        desc = f"Training {name} on {backbone}"
        self.job = TrainingJob(make_run, on_event=self._on_train_event, on_done=self._on_train_done,
                               on_error=self._on_train_error, description=desc)
        self._ui_timer.start()
        self._task_id = self._register_task(desc)
        self._update_buttons()
        return self.job

    def _register_task(self, description: str):
        """Tell napari a task runs: closing the window asks first, then cancels it through
        :meth:`_cancel_for_close` (which waits for the run to keep its best epoch)."""
        try:
            from napari.utils.task_status import Status

            return self.viewer.window._register_task_status("napari-medprompt", Status.BUSY, description,
                                                            cancel_callback=self._cancel_for_close)
        except Exception:  # another napari: closing still cancels through closeEvent/shutdown
            return None

    def _end_task(self, cancelled: bool) -> None:
        tid, self._task_id = getattr(self, "_task_id", None), None
        if tid is None:
            return
        try:
            from napari.utils.task_status import Status

            self.viewer.window._update_task_status(tid, Status.CANCELLED if cancelled else Status.COMPLETED, "")
        except Exception:
            pass

    def _cancel_for_close(self) -> bool:
        """napari is closing during training: stop the run and wait until its best completed epoch is
        saved as a version (nothing is lost), at most a minute."""
        job = self.job
        self._closing = True
        if job is None or not job.running:
            return True
        job.cancel()
        log.warning("napari is closing: training stopped; keeping the best completed epoch")
        return job.wait(60000)

    def _on_train_event(self, ev) -> None:
        """One event of the run (main thread): store numbers; the plot repaints on its own schedule."""
        job = self.job
        if ev.kind == "start":
            self.curves.title += " — RANDOM weights" if ev.random_weights else ""
            md = ev.metrics or {}
            self.run_status.setText(f"{ev.message or 'training'} — {md.get('n_train', '?')} training, "
                                    f"{md.get('n_val', 0)} validation examples on {md.get('device', '?')}.")
            if ev.random_weights:
                self._message("warning", f"{job.run.backbone_name}: {ev.message.split(';')[0]}")
        elif ev.kind == "step" and ev.loss is not None and ev.steps:
            spe = max(ev.steps / max(ev.epochs, 1), 1)
            self.curves.append("training loss (per step)", ev.step / spe, ev.loss)
        elif ev.kind == "epoch" and ev.epoch:
            if ev.loss is not None:
                self.curves.append("training loss (epoch)", ev.epoch, ev.loss)
            if ev.val_metric is not None:
                self.curves.append("validation", ev.epoch, ev.val_metric)
            if ev.message:
                self.run_status.setText(f"epoch {ev.epoch}/{ev.epochs}: {ev.message}")
        elif ev.kind in ("stopped", "version", "done"):
            self.run_status.setText(ev.message)

    def _tick(self) -> None:
        job, pj = self.job, self.prediction_job
        if job is not None and job.running:
            job.drain()
            job.bar.flush()
            self.progress.setValue(int(job.progress * 1000))
            last = job.events[-1] if job.events else None
            eta = f", about {_fmt_s(last.eta_s)} left" if last is not None and last.eta_s is not None else ""
            what = "stopping…" if job.cancelling else f"training {int(job.progress * 100)}%{eta}"
            self.progress.setFormat(what)
        elif pj is not None and not pj.finished:
            pj.bar.flush()
            self.progress.setValue(int(1000 * pj.done / max(pj.total, 1)))
            self.progress.setFormat(f"predicting {pj.done}/{pj.total or '?'} slices")
        else:
            self._ui_timer.stop()

    def _on_train_error(self, err: BaseException) -> None:
        from napari_medprompt.learn import LearnError

        msg = str(err) if isinstance(err, LearnError) else f"Training failed: {type(err).__name__}: {err}"
        self._message("error", msg + " (the examples and earlier versions are unchanged)")

    def _on_train_done(self, job: TrainingJob) -> None:
        res = job.result
        self._end_task(bool(res is not None and res.cancelled))
        if self._closing:
            return
        self.progress.setValue(1000 if res is not None else 0)
        if res is not None:
            self.progress.setFormat("cancelled" if res.cancelled else "done")
            level = "warning" if res.random_weights or res.version is None else "info"
            self._message(level, res.message)
            if res.version is not None:
                self._predictors.clear()
                self.refresh_versions()
                self.versions_changed.emit()
                self._model_changed()
        else:
            self.progress.setFormat("failed")
        self._update_eta()
        self._update_buttons()
        self.trained.emit(job)

    def cancel_jobs(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self._message("info", "Stopping the training after the current step; the best completed epoch "
                                  "is kept as a version.")
        if self.prediction_job is not None and not self.prediction_job.finished:
            self.prediction_job.cancel()
        self._update_buttons()

    # ----------------------------------------------------------------------------- versions
    def _store(self):
        return None if self.workspace is None else self.workspace.store

    def refresh_versions(self) -> None:
        from napari_medprompt.learn import LearnError, version_rows

        store = self._store()
        try:
            rows = version_rows(store) if store is not None else []
        except LearnError as err:
            self._message("error", str(err))
            rows = []
        keep = set(self.selected_versions())
        self.versions.setRowCount(len(rows))
        self._version_rows = {r["id"]: r for r in rows}
        for r, row in enumerate(rows):
            metrics = row["metrics"] + (" — RANDOM weights" if row["random_weights"] else "")
            date = str(row["date"] or "").replace("T", " ").replace("+00:00", "")
            cells = [item("✔" if row["active"] else ""), item(row["id"], row["id"]),
                     item(f"{row['method']} on {row['backbone']}"), item(metrics), item(date[5:16])]
            tip = (f"{row['id']}: {row['method']} on {row['backbone']}, trained {date} UTC, status {row['status']}\n"
                   f"data: {row['data']}\n{metrics}" + (f"\nmodality {row['modality']}" if row.get("modality") else ""))
            for it in cells:
                it.setToolTip(tip)
            if row["random_weights"]:
                cells[3].setForeground(QBrush(QColor("#e34a33")))
                cells[3].setToolTip(tip + "\nThe backbone ran on random weights (no pretrained weights were "
                                    "available): this model's predictions are not meaningful")
            if row["active"]:
                for it in cells:
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
            for c, it in enumerate(cells):
                self.versions.setItem(r, c, it)
            if row["id"] in keep:
                self.versions.selectRow(r)
        self._update_model_label()
        self._update_buttons()

    def active_version(self) -> str | None:
        store = self._store()
        try:
            return None if store is None else store.active
        except Exception:
            return None

    def selected_versions(self) -> list[str]:
        if self.versions.selectionModel() is None:
            return []
        rows = sorted({i.row() for i in self.versions.selectionModel().selectedRows()})
        return [self.versions.item(r, 1).data(Qt.ItemDataRole.UserRole) for r in rows if self.versions.item(r, 1)]

    def select_versions(self, ids) -> None:
        self.versions.clearSelection()
        from qtpy.QtCore import QItemSelectionModel

        for r in range(self.versions.rowCount()):
            if self.versions.item(r, 1).data(Qt.ItemDataRole.UserRole) in set(ids):
                self.versions.selectionModel().select(
                    self.versions.model().index(r, 0),
                    QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)

    def activate_version(self, ids) -> None:
        from napari_medprompt.learn import LearnError, activate

        if not ids:
            self._message("info", "Select the version to activate.")
            return
        try:
            activate(self._store(), ids[0])
        except LearnError as err:
            self._message("warning", str(err))
            return
        self._message("info", f"Version {ids[0]} is the active model.")
        self._after_activation()

    def roll_back(self) -> None:
        from napari_medprompt.learn import LearnError, rollback

        try:
            vid = rollback(self._store())
        except LearnError as err:
            self._message("warning", str(err))
            return
        self._message("info", f"Rolled back: version {vid} is the active model again.")
        self._after_activation()

    def _after_activation(self) -> None:
        self.refresh_versions()
        self._follow_active_backbone()
        self.versions_changed.emit()
        self._model_changed()

    def compare_selected(self) -> list:
        from napari_medprompt.learn import LearnError, compare

        ids = self.selected_versions()
        if len(ids) != 2:
            self._message("info", "Select exactly two versions to compare.")
            return []
        try:
            rows = compare(self._store(), ids[0], ids[1])
        except LearnError as err:
            self._message("warning", str(err))
            return []

        def cell(v):
            return f"{v:.3f}" if isinstance(v, float) else ("—" if v is None else str(v))

        html = [f"<table cellspacing=4><tr><th></th><th>{ids[0]}</th><th>{ids[1]}</th></tr>"]
        for k, a, b in rows:
            style = " style='color:#e69f00'" if a != b else ""
            html.append(f"<tr><td><b>{k}</b></td><td{style}>{cell(a)}</td><td{style}>{cell(b)}</td></tr>")
        html.append("</table>")
        self.comparison.setHtml("".join(html))
        return rows

    def delete_selected(self, new_active: str | None = None) -> bool:
        """Delete the selected version; the active one needs a replacement (asked for, or ``new_active``)."""
        from napari_medprompt.learn import NO_ACTIVE, LearnError, delete_version

        ids = self.selected_versions()
        if len(ids) != 1:
            self._message("info", "Select one version to delete.")
            return False
        vid, store = ids[0], self._store()
        if self.job is not None and self.job.running:
            self._message("warning", "A model is training: delete versions when it has finished.")
            return False
        if vid == self.active_version() and new_active is None:
            others = [v for v in self._version_rows if v != vid]
            choices = others + ["(no active model)"]
            new_active = self.ask_replacement(vid, choices)
            if new_active is None:
                self._message("info", f"Version {vid} kept (deleting the active model needs a replacement).")
                return False
            if new_active == "(no active model)":
                new_active = NO_ACTIVE
        try:
            active = delete_version(store, vid, new_active=new_active)
        except LearnError as err:
            self._message("warning", str(err))
            return False
        self._message("info", f"Deleted version {vid}." + (f" Version {active} is the active model." if active
                                                           else " No model is active now."))
        self._predictors.pop(vid, None)
        self.refresh_versions()
        self.versions_changed.emit()
        self._model_changed()
        return True

    def ask_replacement(self, vid: str, choices: list[str]) -> str | None:
        """Which version to activate instead of the active ``vid`` being deleted (None: cancel)."""
        choice, ok = QInputDialog.getItem(self, "Delete the active model",
                                          f"Version {vid} is the active model. Activate instead:", choices, 0, False)
        return choice if ok else None

    # ---------------------------------------------------------------------------- prediction
    def _update_model_label(self) -> None:
        vid = self.active_version()
        row = getattr(self, "_version_rows", {}).get(vid or "")
        if row is None:
            self.model_label.setText("No active model: train one (Train tab) or activate a version (Models tab).")
            return
        text = f"Active model: <b>{vid}</b> — {row['method']} on {row['backbone']}, {row['metrics']}"
        if row["random_weights"]:
            text += f"<br>{RANDOM_HTML}: the backbone has random weights"
        self.model_label.setText(text)

    def _predictor(self, vid: str, modality):
        from napari_medprompt.learn import Predictor

        key = (vid, modality)
        p = self._predictors.get(key)
        if p is None:
            p = Predictor.load(self._store(), vid, backbone=self.backbone.currentData(), modality=modality)
            self._predictors[key] = p
        return p

    def run_prediction(self, mode: str | None = None, slices=None, heatmap: bool = True):
        """Predict with the active model on ``mode`` (one of the Predict box's choices; default: the box's)
        in a worker; the probabilities, the per-slice plot and the heat-map layer follow."""
        from napari_medprompt.learn import LearnError, check_compatible

        if self.prediction_job is not None and not self.prediction_job.finished:
            self._message("info", "A prediction is running: wait for it or press Cancel.")
            return None
        img = self._need_image()
        if img is None:
            return None
        layer, data, session, modality, spacing = img
        vid = self.active_version()
        if vid is None:
            self._message("warning", "No model to predict with: train one (Train tab) or activate a version.")
            return None
        try:
            check_compatible(self._store().get(vid), backbone=self.backbone.currentData(), modality=modality)
        except LearnError as err:
            self._message("warning", str(err))
            return None
        except Exception as err:
            self._message("error", f"The model store cannot be read: {err}")
            return None
        prepare_torch()
        mode = mode or self.predict_mode.currentText()
        volume = data.ndim == 3 and not getattr(layer, "rgb", False)
        n = data.shape[0] if volume else 1
        if slices is None:
            if mode == "Current slice" or not volume:
                slices = [self.current_slice()] if volume else None
            elif mode == "Slice range":
                lo, hi = sorted((self.range_from.value(), self.range_to.value()))
                slices = list(range(lo, hi + 1))
            elif mode == "Whole volume":
                slices = list(range(n))
        # a copy taken here: the worker never reads labels the main thread may be editing
        labels = np.array(session.labels, copy=True) if session is not None else None
        object_ids = sorted(session.objects) if session is not None else []
        current = int(self.ctrl.current_object or 0)
        sp = spacing[1:]

        def job(progress, cancel):
            pred = self._predictor(vid, modality)
            if mode == "Every object":
                objs = pred.predict_objects(session, data if volume else data[None], spacing=sp, labels=labels,
                                            object_ids=object_ids)
                return {"mode": mode, "objects": objs, "version": vid, "random_weights": pred.random_weights}
            masks = oid = None
            if pred.uses_masks:  # the current object's own voxels, as each example's mask in training
                if not current or current not in object_ids:
                    raise LearnError(f"method {pred.method!r} classifies an object: choose one (Segment panel) "
                                     "or predict on every object")
                masks, oid = labels, current
            vol = data if volume else data[None]
            if heatmap:
                heat = pred.heatmap_volume(vol, slices, masks=masks, spacing=sp, progress=progress, cancel=cancel,
                                           object_id=oid)
                return {"mode": mode, "heat": heat, "version": vid, "random_weights": pred.random_weights}
            probs = pred.predict_volume(vol, slices, masks=masks, spacing=sp, progress=progress, cancel=cancel,
                                        object_id=oid)
            return {"mode": mode, "probs": probs, "version": vid, "random_weights": pred.random_weights}

        self._predict_request = (mode, slices, heatmap)
        self.prediction_job = PredictionJob(job, on_result=self._show_prediction, on_error=self._on_predict_error,
                                            on_finish=self._on_predict_finished,
                                            description=f"Predicting with {vid}")
        self._ui_timer.start()
        self._update_buttons()
        return self.prediction_job

    def _on_predict_error(self, err: BaseException) -> None:
        from napari_medprompt.learn import LearnError

        msg = str(err) if isinstance(err, LearnError) else f"Prediction failed: {type(err).__name__}: {err}"
        self._message("warning" if isinstance(err, LearnError) else "error", msg)

    def _on_predict_finished(self, job) -> None:
        if self._closing:
            return
        self.progress.setValue(1000)
        self.progress.setFormat("cancelled" if job.cancel_event.is_set() else "prediction done")
        self._update_buttons()

    def _show_prediction(self, result: dict) -> None:
        if self._closing:
            return
        img = self._image()
        if img is None:
            self._message("warning", "The image was closed before the prediction finished; nothing is shown.")
            return
        layer = img[0]
        self.prediction = result
        rw = " — RANDOM weights: not meaningful" if result.get("random_weights") else ""
        self.object_table.setVisible(result["mode"] == "Every object")
        self.slice_plot.setVisible(result["mode"] != "Every object")
        if result["mode"] == "Every object":
            self._show_objects(result["objects"], result["version"], rw)
        else:
            heat = result.get("heat")
            if heat is not None:
                self._show_heatmap(heat, layer)
                slices, probs, classes = heat.done, heat.probabilities, heat.classes
                if heat.cancelled:
                    self._message("info", f"Prediction cancelled: {len(heat.done)} slice(s) computed and shown.")
            else:
                p = result["probs"]
                slices, probs, classes = p.slices or [0], p.probabilities, p.classes
            self.prediction.update(slices=list(slices), probabilities=np.asarray(probs), classes=list(classes))
            self.slice_plot.clear()
            self.slice_plot.title = f"Probability per slice ({result['version']}){rw}"
            if len(slices) > 1:
                for c, name in enumerate(classes):
                    self.slice_plot.set_series(name, slices, probs[:, c], markers=len(slices) < 40)
            self._show_slice_probs()
        self.predicted.emit(result)

    def _show_heatmap(self, heat, layer) -> None:
        data = heat.data
        twod = layer.ndim == 2 or (getattr(layer, "rgb", False) and layer.ndim == 3)
        kw_common = dict(scale=tuple(layer.scale), translate=tuple(layer.translate),
                         affine=np.asarray(layer.affine.affine_matrix))
        name = f"{HEATMAP_LAYER} ({heat.version})" + (" — RANDOM weights" if heat.random_weights else "")
        if twod:
            from napari_medprompt.train.explain import heatmap_layer_data

            if getattr(layer, "rgb", False):
                kw_common["scale"], kw_common["translate"] = kw_common["scale"][:2], kw_common["translate"][:2]
                kw_common["affine"] = kw_common["affine"][[0, 1, -1]][:, [0, 1, -1]]
            arr, kwargs, _ = heatmap_layer_data(data[0], data[0].shape, name=name, **kw_common)
            kwargs["metadata"]["medprompt_explanation"].update({"version": heat.version,
                                                               "random_weights": heat.random_weights})
        else:
            arr, kwargs, _ = heat.layer_data(tuple(layer.data.shape), name=name, **kw_common)
        kwargs["opacity"] = self.opacity.value() / 100.0
        old = self.heat_layer
        if old is not None and old in self.viewer.layers and tuple(old.data.shape) == tuple(arr.shape):
            old.data = arr
            for k in ("scale", "translate", "affine", "metadata", "contrast_limits"):
                setattr(old, k, kwargs[k])
            old.name = name
            old.opacity = kwargs["opacity"]
            old.visible = True
            self.heat_layer = old
        else:
            if old is not None and old in self.viewer.layers:
                self.viewer.layers.remove(old)
            self.heat_layer = self.viewer.add_image(arr, **kwargs)
        # keep the segmentation layer above the heat map, the prompt layers where they are
        try:
            i = self.viewer.layers.index(self.heat_layer)
            j = self.viewer.layers.index(layer)
            if i != j + 1:
                self.viewer.layers.move(i, j + 1 if i > j else j)
        except (ValueError, AttributeError):
            pass

    def _show_objects(self, objs: dict, vid: str, rw: str) -> None:
        s = self.ctrl.session
        self.object_table.setRowCount(len(objs))
        for r, (oid, pred) in enumerate(sorted(objs.items())):
            obj = s.objects.get(oid) if s is not None else None
            m = pred.mean
            k = int(np.argmax(m))
            cells = [item(obj.display_name if obj is not None else str(oid), oid),
                     item(getattr(obj, "class_name", None) or "—"), item(pred.classes[k] + (" ⚠" if rw else "")),
                     item(f"{m[k]:.2f}", align_right=True), item(str(len(pred.slices or [])), align_right=True)]
            given = getattr(obj, "class_name", None)
            if given is not None and given != pred.classes[k]:
                cells[2].setForeground(QBrush(QColor("#e69f00")))
            for c, it in enumerate(cells):
                it.setToolTip(pred.label)
                self.object_table.setItem(r, c, it)
        self.prediction_label.setText(f"{len(objs)} object(s) predicted with {vid}"
                                      + (f" — {RANDOM_HTML}" if rw else ""))
        self.probs.setRowCount(0)

    def _on_object_clicked(self, it) -> None:
        oid = self.object_table.item(it.row(), 0).data(Qt.ItemDataRole.UserRole)
        pred = (self.prediction or {}).get("objects", {}).get(oid)
        if pred is not None and pred.slices:
            self._jump(pred.slices[len(pred.slices) // 2])

    def _show_slice_probs(self) -> None:
        """The probabilities of the slice the viewer shows (when it was predicted)."""
        pr = self.prediction
        if not pr or "slices" not in pr:
            return
        z = self.current_slice()
        slices = pr["slices"]
        self.slice_plot.set_marker(z if len(slices) > 1 else None)
        rw = f" — {RANDOM_HTML}" if pr.get("random_weights") else ""
        if z in slices:
            p = pr["probabilities"][slices.index(z)]
            row, where = p, f"slice {z}"
        elif len(slices) == 1:
            row, where = pr["probabilities"][0], f"slice {slices[0]} (not the one shown)"
        else:
            row = pr["probabilities"].mean(0)
            where = f"mean of slices {slices[0]}–{slices[-1]} (slice {z} not predicted)"
        k = int(np.argmax(row))
        self.prediction_label.setText(f"<b>{pr['classes'][k]}</b> {row[k]:.2f} on {where}, model {pr['version']}{rw}")
        self.probs.setRowCount(len(row))
        for c, (name, v) in enumerate(zip(pr["classes"], row)):
            bar = "█" * int(round(v * 20))
            cells = [item(name), item(f"{v:.3f} {bar}")]
            if c == k:
                for it in cells:
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
            for j, it in enumerate(cells):
                self.probs.setItem(c, j, it)

    def _on_slice_changed(self, _event=None) -> None:
        try:
            self._show_slice_probs()
        except RuntimeError:  # the panel was closed while the viewer lives on
            pass

    def _model_changed(self) -> None:
        """The active model changed: recompute the prediction shown (its slices), else clear it."""
        self._update_model_label()
        if self.prediction is None or self._predict_request is None:
            return
        if self.active_version() is None:
            self._clear_prediction()
            return
        if self.prediction.get("version") == self.active_version():
            return
        mode, slices, heatmap = self._predict_request
        self.run_prediction(mode, slices, heatmap)

    def _clear_prediction(self) -> None:
        self.prediction = None
        self._predict_request = None
        self.probs.setRowCount(0)
        self.slice_plot.clear()
        self.object_table.setRowCount(0)
        self.prediction_label.setText("")
        if self.heat_layer is not None and self.heat_layer in self.viewer.layers:
            self.viewer.layers.remove(self.heat_layer)
        self.heat_layer = None

    def _set_opacity(self, v: int) -> None:
        if self.heat_layer is not None and self.heat_layer in self.viewer.layers:
            self.heat_layer.opacity = v / 100.0

    def _on_layer_removed(self, event) -> None:
        if event.value is self.heat_layer:
            self.heat_layer = None
        elif event.value is self.ctrl.image_layer or self.ctrl.image_layer is None:
            if self.prediction_job is not None and not self.prediction_job.finished:
                self.prediction_job.cancel()
            if self.heat_layer is not None and self.heat_layer in self.viewer.layers:
                self.viewer.layers.remove(self.heat_layer)
            self.heat_layer = None
            self.prediction = None
        self._update_buttons()

    # ----------------------------------------------------------------------------- general
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
