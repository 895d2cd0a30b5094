"""The Learn dock's "Segmentation adapter" tab: train an adapter on a frozen segmentation model (SAM2
or CLIPSeg) from the objects accepted on the current image, compare it with the base model on
accepted slices it never saw, and activate it when the user chooses.

A thin view over :mod:`napari_medprompt.learn.seg_adapt`: the run is built and iterated in a worker
(:class:`~napari_medprompt._qt.learn.jobs.TrainingJob`), its events are drained on a timer. Versions
live in the learn folder's ``seg_models/`` store, which the Segment dock reads. The tab's widgets are laid
out by :func:`napari_medprompt._qt.learn.ui.build_seg_adapter_ui`.
"""

from __future__ import annotations

import logging

from qtpy.QtCore import Qt, QTimer, Signal
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import QListWidgetItem, QWidget

from napari_medprompt._qt.learn.jobs import PROGRESS_INTERVAL_MS, TrainingJob, prepare_torch
from napari_medprompt._qt.learn.ui import COMPARE_COLUMNS, FAST, build_seg_adapter_ui
from napari_medprompt._qt.ui_common import bold, item

log = logging.getLogger(__name__)

RANDOM_TEXT = "RANDOM weights"


class SegAdapterTab(QWidget):
    """The tab; ``learn`` is the Learn dock (session, workspace, messages)."""

    trained = Signal(object)  # the TrainingJob that ended
    activated = Signal(object)  # the version made active (None: back to the base model)

    def __init__(self, learn, parent=None) -> None:
        super().__init__(parent)
        self.learn = learn
        self.job: TrainingJob | None = None
        self.pretrained = "random"  # the cached published weights when there are any (see _on_method)
        build_seg_adapter_ui(self)
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
