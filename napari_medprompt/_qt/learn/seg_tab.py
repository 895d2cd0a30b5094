"""The Learn dock's "Segmentation adapter" tab: train an adapter on a frozen segmentation model (SAM2
or CLIPSeg) from the objects accepted on the current image, compare it with the base model on
accepted slices it never saw, and activate it when the user chooses.

A thin view over :mod:`napari_medprompt.learn.seg_adapt`: the run is built and iterated in a worker
(:class:`~napari_medprompt._qt.learn.jobs.TrainingJob`), its events are drained on a timer. Versions
live in the learn folder's ``seg_models/`` store, which the Segment dock reads.
"""

from __future__ import annotations

import logging

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QComboBox,
    QDoubleSpinBox,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QProgressBar,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from napari_medprompt._qt.learn.jobs import PROGRESS_INTERVAL_MS, TrainingJob, prepare_torch
from napari_medprompt._qt.learn.plot import LinePlot
from napari_medprompt._qt.learn.ui import wrapped
from napari_medprompt._qt.ui_common import bold, button, item, table

log = logging.getLogger(__name__)

COMPARE_COLUMNS = ["Object", "Slices", "Base", "Adapted", "Δ Dice"]
COMPARE_TIPS = ["The accepted object", "Its held-out accepted slices (never trained on)",
                "Mean Dice of the base model on them", "Mean Dice of the adapted model on them", "Adapted minus base"]
SEG_VERSION_COLUMNS = ["✔", "Version", "Method", "Objects", "Held-out Dice"]
RANDOM_TEXT = "RANDOM weights"
FAST = "⚡"


class SegAdapterTab(QWidget):
    """The tab; ``learn`` is the Learn dock (session, workspace, messages)."""

    trained = Signal(object)  # the TrainingJob that ended
    activated = Signal(object)  # the version made active (None: back to the base model)

    def __init__(self, learn, parent=None) -> None:
        super().__init__(parent)
        self.learn = learn
        self.job: TrainingJob | None = None
        self.pretrained = "random"  # the cached published weights when there are any (see _on_method)
        self._build_ui()
        self._timer = QTimer(self)
        self._timer.setInterval(PROGRESS_INTERVAL_MS)
        self._timer.timeout.connect(self._tick)
        self._fill_methods()
        self.method.currentIndexChanged.connect(self._on_method)
        self.train.clicked.connect(self.start_training)
        self.cancel.clicked.connect(self.cancel_training)
        self.reread.clicked.connect(self.refresh_objects)
        self.activate.clicked.connect(lambda: self.activate_version(self.selected_version()))
        self.use_base.clicked.connect(self.use_base_model)
        self.versions.itemSelectionChanged.connect(self._update_buttons)
        self.objects.itemChanged.connect(lambda _it: self._update_buttons())
        self._on_method()

    # ------------------------------------------------------------------------------ layout
    def _build_ui(self) -> None:
        lay = QVBoxLayout(self)
        self.note = wrapped()
        lay.addWidget(self.note)
        form = QFormLayout()
        self.method = QComboBox()
        self.method.setToolTip(f"How the segmentation model is adapted; {FAST} = fast on a CPU (encoder outputs "
                               "cached, only a small part trains)")
        self.method.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.method.setMinimumContentsLength(16)
        form.addRow("Method", self.method)
        self.method_desc = wrapped()
        form.addRow(self.method_desc)
        self.base_label = wrapped()
        form.addRow("Base", self.base_label)
        lay.addLayout(form)
        box = QGroupBox("Learn from these accepted objects")
        bl = QVBoxLayout(box)
        self.objects = QListWidget()
        self.objects.setToolTip("Objects with accepted (or corrected) slices on this image; the count is the "
                                "number of such slices. CLIPSeg methods learn each object's name as its text prompt.")
        self.objects.setMaximumHeight(110)
        bl.addWidget(self.objects)
        self.reread = button("Refresh", "Read the objects of the current image again")
        bl.addWidget(self.reread, 0, Qt.AlignmentFlag.AlignRight)
        lay.addWidget(box)
        sched = QFormLayout()
        row = QHBoxLayout()
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 500)
        self.epochs.setValue(5)
        self.epochs.setToolTip("Passes over the training slices (fixed: the held-out slices are never used to "
                               "choose an epoch)")
        row.addWidget(self.epochs)
        self.holdout = QDoubleSpinBox()
        self.holdout.setRange(0.05, 0.8)
        self.holdout.setSingleStep(0.05)
        self.holdout.setValue(0.25)
        self.holdout.setToolTip("Share of each object's accepted slices held out for the comparison (a block at "
                                "the end of its range). No object trains on any held-out slice or the slice "
                                "next to one.")
        row.addWidget(QLabel("held out"))
        row.addWidget(self.holdout)
        sched.addRow("epochs", row)
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-7, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setToolTip("Learning rate (the method's recipe value is filled in)")
        sched.addRow("learning rate", self.lr)
        self.image_size = QSpinBox()
        self.image_size.setRange(0, 1024)
        self.image_size.setSingleStep(32)
        self.image_size.setSpecialValueText("model's own")
        self.image_size.setToolTip("Input size in px; 'model's own' = the paper resolution (SAM2 1024, "
                                   "MedSAM2 512, CLIPSeg 352). Smaller sizes are for previews and tests")
        sched.addRow("input size", self.image_size)
        lay.addLayout(sched)
        row = QHBoxLayout()
        self.train = button("Train adapter", "Train a new adapter version from the checked objects in the background")
        self.cancel = button("Cancel", "Stop after the current step (a completed epoch is kept as a version)")
        self.cancel.setEnabled(False)
        row.addWidget(self.train, 1)
        row.addWidget(self.cancel)
        lay.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1000)
        self.progress.setFormat("idle")
        self.progress.setTextVisible(True)
        lay.addWidget(self.progress)
        self.split_label = wrapped()
        lay.addWidget(self.split_label)
        self.curves = LinePlot("Training", "epoch", "loss")
        self.curves.placeholder = "the loss curve appears while an adapter trains"
        self.curves.setMinimumHeight(160)
        lay.addWidget(self.curves, 1)
        self.run_status = wrapped()
        lay.addWidget(self.run_status)
        lay.addWidget(wrapped("<b>Held-out comparison</b> (Dice per object on accepted slices not trained on)"))
        self.compare = table(COMPARE_COLUMNS, stretch=0, multi=False)
        for c, tip in enumerate(COMPARE_TIPS):
            self.compare.horizontalHeaderItem(c).setToolTip(tip)
        self.compare.setMaximumHeight(120)
        lay.addWidget(self.compare)
        lay.addWidget(wrapped("<b>Adapter versions</b> (the Segment panel uses the active one)"))
        self.versions = table(SEG_VERSION_COLUMNS, stretch=3, multi=False)
        self.versions.setMaximumHeight(140)
        lay.addWidget(self.versions)
        row = QHBoxLayout()
        self.activate = button("Activate", "Use the selected adapter version for segmentation from now on")
        self.use_base = button("Use base model", "No adapter: segment with the base model again")
        row.addWidget(self.activate)
        row.addWidget(self.use_base)
        lay.addLayout(row)

    def _fill_methods(self) -> None:
        from napari_medprompt.learn.seg_adapt import seg_method_rows

        self._rows = {r.name: r for r in seg_method_rows()}
        for r in self._rows.values():
            self.method.addItem(f"{FAST} {r.name}" if r.fast_on_cpu else r.name, r.name)
            self.method.setItemData(self.method.count() - 1, r.description, Qt.ItemDataRole.ToolTipRole)
        self.method.setCurrentIndex(max(self.method.findData("sam2-decoder"), 0))

    def _on_method(self, *_a) -> None:
        r = self._rows.get(self.method.currentData())
        if r is None:
            return
        fast = " Fast on a CPU (cached encoder outputs)." if r.fast_on_cpu else " Runs the encoder every step (slow on a CPU)."
        self.method_desc.setText(r.description + "." + fast)
        from napari_medprompt.seg_adapters.registry import seg_method_info

        self.lr.setValue(float(seg_method_info(r.name).defaults.lr))
        from napari_medprompt.learn.seg_adapt import cached_base_weights

        self.pretrained = cached_base_weights(r.name) or "random"
        weights = RANDOM_TEXT if self.pretrained in (None, "random") else f"weights {self.pretrained}"
        rand = weights == RANDOM_TEXT
        self.base_label.setText(f"{r.base} — <b style='color:#e34a33'>{weights}</b>" if rand else f"{r.base} — {weights}")
        self.note.setText(f"<b style='color:#e34a33'>{r.base} runs on {RANDOM_TEXT}</b> (its published weights "
                          "are not in the weight cache): training and Dice figures show the workflow, not a useful "
                          "model." if rand else "")
        self.note.setVisible(rand)
        self.refresh_objects()

    # ------------------------------------------------------------------------------ state
    def _store(self):
        ws = self.learn.workspace
        return None if ws is None else ws.seg_store

    def refresh(self) -> None:
        """Objects and versions again (image or workspace changed)."""
        self.refresh_objects()
        self.refresh_versions()

    def refresh_objects(self) -> None:
        from napari_medprompt.learn.seg_adapt import CLIPSEG_FAMILY, accepted_objects, family_of

        checked = set(self.checked_objects())
        had = {self.objects.item(i).data(Qt.ItemDataRole.UserRole) for i in range(self.objects.count())}
        self.objects.clear()
        session = self.learn.ctrl.session
        if session is None:
            return
        clip = family_of(self.method.currentData() or "") == CLIPSEG_FAMILY
        for o in accepted_objects(session):
            if not o.slices and o.problem == "no accepted slice":
                continue
            problem = o.problem or ("no name to use as the text prompt" if clip and not o.name else None)
            text = f"{o.label} — {o.n_slices} slice{'s' if o.n_slices != 1 else ''}"
            it = QListWidgetItem(text + (f" ({problem.split(':')[0]})" if problem else ""))
            it.setData(Qt.ItemDataRole.UserRole, o.object_id)
            if problem:
                it.setFlags(it.flags() & ~Qt.ItemFlag.ItemIsUserCheckable & ~Qt.ItemFlag.ItemIsEnabled)
                it.setToolTip(problem)
            else:
                it.setFlags(it.flags() | Qt.ItemFlag.ItemIsUserCheckable)
                on = o.object_id in checked or o.object_id not in had
                it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
                it.setToolTip(f"accepted slices {', '.join(map(str, o.slices))}")
            self.objects.addItem(it)
        self._update_buttons()

    def checked_objects(self) -> list[int]:
        out = []
        for i in range(self.objects.count()):
            it = self.objects.item(i)
            if it.flags() & Qt.ItemFlag.ItemIsUserCheckable and it.checkState() == Qt.CheckState.Checked:
                out.append(int(it.data(Qt.ItemDataRole.UserRole)))
        return out

    def set_checked(self, object_ids) -> None:
        want = {int(i) for i in object_ids}
        for i in range(self.objects.count()):
            it = self.objects.item(i)
            if it.flags() & Qt.ItemFlag.ItemIsUserCheckable:
                on = int(it.data(Qt.ItemDataRole.UserRole)) in want
                it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)

    # ------------------------------------------------------------------------------ training
    def start_training(self):
        """Build the run here (its checks, and a copy of the training and held-out slices, masks and prompts:
        edits made while it trains do not change it) and train it in a worker; returns the job (None when
        refused, with a message)."""
        from napari_medprompt.learn import LearnError
        from napari_medprompt.learn.seg_adapt import SegAdaptRun

        if self.job is not None and self.job.running:
            self.learn._message("warning", "An adapter is already training: wait for it or press Cancel.")
            return None
        img = self.learn._need_image()
        store = self._store()
        if img is None or store is None:
            return None
        layer, data, session, _modality, _spacing = img
        # the slices are seen through the display window, as the SAM2 engine sees them by default
        lo, hi = (float(v) for v in layer.contrast_limits)
        window = (lo, hi) if hi > lo else None
        ids = self.checked_objects()
        if not ids:
            self.learn._message("warning", "Check at least one accepted object to learn from (accept objects on "
                                           "two slices or more in the Segment panel first).")
            return None
        method = self.method.currentData()
        options = {"image_size": self.image_size.value()} if self.image_size.value() else {}
        kw = dict(method=method, object_ids=ids, pretrained=self.pretrained, epochs=self.epochs.value(), lr=self.lr.value(),
                  holdout=self.holdout.value(), options=options, window=window,
                  device="auto")
        prepare_torch()
        try:  # on the main thread: the checks (a clear message, nothing started) and the snapshot of the data
            run = SegAdaptRun(session, data, store, **kw)
        except LearnError as err:
            self.learn._message("warning", str(err))
            return None
        self.split_label.setText("Held out: " + run.split_note)

        def make_run():
            return run  # the very run (and split) shown above; the worker never reads the session

        self.curves.clear()
        self.curves.add_series("training loss (per step)", "#56b4e9")
        self.curves.add_series("training loss (epoch)", "#0072b2", markers=True)
        self.curves.title = f"Training {method}" + (f" — {RANDOM_TEXT}" if self.pretrained == "random" else "")
        self.compare.setRowCount(0)
        self.run_status.setText("Starting (building the base model)…")
        self.job = TrainingJob(make_run, on_event=self._on_event, on_done=self._on_done, on_error=self._on_error,
                               description=f"Training segmentation adapter {method}")
        self._timer.start()
        self._update_buttons()
        return self.job

    def cancel_training(self) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.run_status.setText("Stopping after the current step…")
        self._update_buttons()

    def _on_event(self, ev) -> None:
        if ev.kind == "start":
            md = ev.metrics or {}
            self.run_status.setText(f"{ev.message.split(';')[0]} — {md.get('n_train', '?')} training slices.")
            if ev.random_weights:
                self.learn._message("warning", f"Segmentation adapter: {ev.message.split(';')[0]}")
        elif ev.kind == "step" and ev.loss is not None and ev.steps:
            spe = max(ev.steps / max(ev.epochs, 1), 1)
            self.curves.append("training loss (per step)", ev.step / spe, ev.loss)
        elif ev.kind == "epoch" and ev.epoch and ev.loss is not None:
            self.curves.append("training loss (epoch)", ev.epoch, ev.loss)
            self.run_status.setText(f"epoch {ev.epoch}/{ev.epochs}: loss {ev.loss:.4f}")
        elif ev.kind == "compare":
            self.show_comparison((ev.metrics or {}).get("comparison") or [], ev.random_weights)
        elif ev.kind in ("version", "done"):
            self.run_status.setText(ev.message)
        self.curves.update()

    def _tick(self) -> None:
        job = self.job
        if job is None or not job.running:
            self._timer.stop()
            return
        job.drain()
        self.progress.setValue(int(job.progress * 1000))
        self.progress.setFormat("stopping…" if job.cancelling else f"training {int(job.progress * 100)}%")

    def _on_error(self, err: BaseException) -> None:
        from napari_medprompt.learn import LearnError

        msg = str(err) if isinstance(err, LearnError) else f"Training failed: {type(err).__name__}: {err}"
        self.learn._message("error", msg + " (the annotations and earlier versions are unchanged)")

    def _on_done(self, job) -> None:
        res = job.result
        self._timer.stop()
        self.progress.setValue(1000 if res is not None else 0)
        self.progress.setFormat("failed" if res is None else ("cancelled" if res.cancelled else "done"))
        if res is not None:
            self.learn._message("warning" if res.random_weights or res.version is None else "info", res.message)
            if res.comparison:
                self.show_comparison([c.__dict__ for c in res.comparison], res.random_weights)
            self.refresh_versions(select=res.version)
        self._update_buttons()
        self.trained.emit(job)

    def show_comparison(self, rows: list[dict], random_weights: bool = False) -> None:
        for c in (2, 3):  # the Dice columns say RANDOM weights in their header, not only in a tooltip
            name = COMPARE_COLUMNS[c]
            self.compare.horizontalHeaderItem(c).setText(f"{name} ({RANDOM_TEXT})" if random_weights else name)
        self.compare.setRowCount(len(rows))
        for r, c in enumerate(rows):
            base, ad = c.get("base"), c.get("adapted")
            change = "" if base is None or ad is None else f"{ad - base:+.3f}"
            cells = [item(str(c["name"])), item(str(c.get("n_heldout", "")), align_right=True),
                     item("–" if base is None else f"{base:.3f}", align_right=True),
                     item("–" if ad is None else f"{ad:.3f}", align_right=True), item(change, align_right=True)]
            for k, it in enumerate(cells):
                if random_weights:
                    it.setToolTip(f"{RANDOM_TEXT}: these Dice values show the workflow only")
                self.compare.setItem(r, k, it)

    def comparison_rows(self) -> list[list[str]]:
        return [[self.compare.item(r, c).text() for c in range(self.compare.columnCount())]
                for r in range(self.compare.rowCount())]

    # ------------------------------------------------------------------------------ versions
    def refresh_versions(self, select: str | None = None) -> None:
        from napari_medprompt.learn import LearnError
        from napari_medprompt.learn.seg_adapt import seg_versions

        store = self._store()
        try:
            rows = seg_versions(store) if store is not None else []
        except LearnError as err:
            self.learn._message("error", str(err))
            rows = []
        keep = select or self.selected_version()
        self._version_rows = {r["id"]: r for r in rows}
        self.versions.setRowCount(len(rows))
        for r, row in enumerate(rows):
            method = row["method"] + (" (RANDOM)" if row["random_weights"] else "")
            cells = [item("✔" if row["active"] else ""), item(row["id"], row["id"]), item(method),
                     item(", ".join(row["objects"])), item(row["heldout"])]
            for it in cells:
                it.setToolTip(f"{row['id']}: {row['method']} on {row['base']}"
                              + (f" ({RANDOM_TEXT})" if row["random_weights"] else "")
                              + f", {row['date']} UTC, {row['status']}\nheld-out Dice base→adapted: {row['heldout']}")
            if row["random_weights"]:
                cells[2].setForeground(QBrush(QColor("#e34a33")))
            for c, it in enumerate(cells):
                if row["active"]:
                    bold([it])
                self.versions.setItem(r, c, it)
            if row["id"] == keep:
                self.versions.selectRow(r)
        self._update_buttons()

    def selected_version(self) -> str | None:
        sm = self.versions.selectionModel()
        if sm is None:
            return None
        rows = sorted({i.row() for i in sm.selectedRows()})
        return self.versions.item(rows[0], 1).data(Qt.ItemDataRole.UserRole) if rows else None

    def activate_version(self, vid: str | None) -> None:
        from napari_medprompt.learn import LearnError
        from napari_medprompt.learn.seg_adapt import activate_seg

        if not vid:
            self.learn._message("info", "Select the adapter version to activate.")
            return
        try:
            activate_seg(self._store(), vid)
        except LearnError as err:
            self.learn._message("warning", str(err))
            return
        row = self._version_rows.get(vid, {})
        self.learn._message("warning" if row.get("random_weights") else "info",
                            f"Adapter {vid} is active: the Segment panel offers it"
                            + (f" ({RANDOM_TEXT}: its masks are not meaningful)" if row.get("random_weights") else ""))
        self.refresh_versions(select=vid)
        self.activated.emit(vid)

    def use_base_model(self) -> None:
        from napari_medprompt.learn import LearnError
        from napari_medprompt.learn.seg_adapt import deactivate_seg

        store = self._store()
        if store is None:
            return
        try:
            deactivate_seg(store)
        except LearnError as err:
            self.learn._message("warning", str(err))
            return
        self.learn._message("info", "No adapter is active: segmentation uses the base model.")
        self.refresh_versions()
        self.activated.emit(None)

    def _update_buttons(self) -> None:
        busy = self.job is not None and self.job.running
        self.train.setEnabled(not busy and bool(self.checked_objects()) and self.learn.workspace is not None)
        self.cancel.setEnabled(busy)
        self.activate.setEnabled(not busy and self.selected_version() is not None)
        store = self._store()
        try:
            active = None if store is None else store.active
        except Exception:
            active = None
        self.use_base.setEnabled(not busy and active is not None)

    def shutdown(self, wait_ms: int = 60000) -> None:
        if self.job is not None and self.job.running:
            self.job.cancel()
            self.job.wait(wait_ms)
