"""The Learn dock's "Train" tab: method and backbone choosers, the method's options and schedule, the
device, a rough ETA, and a training run in the background with its loss and validation curves.

:class:`TrainTabMixin` is mixed into :class:`~napari_medprompt._qt.learn.widget.LearnWidget`: a
:class:`~napari_medprompt.learn.LearnRun` on a snapshot of the example set trains in a
:class:`~napari_medprompt._qt.learn.jobs.TrainingJob`; its events are stored as they come and drawn by the
dock's timer. A finished run is a new version (the Models tab lists it).
"""

from __future__ import annotations

import logging

import numpy as np
from qtpy.QtCore import Qt

from napari_medprompt._qt.learn.jobs import TrainingJob, prepare_torch

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "ViT-B-16"
DEFAULT_METHOD = "linear-probe"


def fmt_duration(s: float | None) -> str:
    """``s`` seconds for a person: "< 1 s", "42 s", "3.5 min", "1.2 h" ("?" when unknown)."""
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


class TrainTabMixin:
    """The Train tab of :class:`~napari_medprompt._qt.learn.widget.LearnWidget` (see the module docstring)."""

    # ---------------------------------------------------------------------------- choosers
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

    # --------------------------------------------------------------------------------- ETA
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
        self.eta.setText(f"ETA: about {fmt_duration(total)} for {epochs} epoch(s) on {n} examples ({hint}; {where}).")

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

    # ---------------------------------------------------------------------------- training
    def start_training(self):
        """Train a new version on the example set in a worker; returns the job (None when refused)."""
        from napari_medprompt.learn import LearnRun

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

    def _tick_training(self) -> bool:
        """Draw the running training's progress and ETA on the dock's bar; False when none runs."""
        job = self.job
        if job is None or not job.running:
            return False
        job.drain()
        job.bar.flush()
        self.progress.setValue(int(job.progress * 1000))
        last = job.events[-1] if job.events else None
        eta = f", about {fmt_duration(last.eta_s)} left" if last is not None and last.eta_s is not None else ""
        what = "stopping…" if job.cancelling else f"training {int(job.progress * 100)}%{eta}"
        self.progress.setFormat(what)
        return True

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
