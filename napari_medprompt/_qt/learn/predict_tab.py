"""The Learn dock's "Predict" tab: the active model's class probabilities on the current slice, a slice
range, the whole volume or every object, a per-slice plot, and the heat map as an Image layer.

:class:`PredictTabMixin` is mixed into :class:`~napari_medprompt._qt.learn.widget.LearnWidget`. A
:class:`~napari_medprompt.learn.Predictor` of the active version (cached per version and modality) runs
in a :class:`~napari_medprompt._qt.learn.jobs.PredictionJob` on a copy of the labels. The heat map is
shown over the image (heat colormap, additive blending, the image layer's scale, translate and affine,
so a volume shown radiologically is overlaid voxel for voxel), just above the image layer, scaled as the
"Heat map scale" chooser says (per slice, or over the predicted slices so they compare; the layer's name
and ``metadata["medprompt_explanation"]["scale"]`` say which); changing the chooser re-scales the layer
shown from the raw maps the prediction kept, without running the model, changing only its data, name
and metadata. When the
active model changes, the prediction shown is computed again with it (or cleared).
"""

from __future__ import annotations

import numpy as np
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor

from napari_medprompt._qt.learn.jobs import PredictionJob, prepare_torch
from napari_medprompt._qt.ui_common import bold, item

HEATMAP_LAYER = "heat map"
RANDOM_HTML = "<b style='color:#e34a33'>RANDOM weights: not meaningful</b>"


class PredictTabMixin:
    """The Predict tab of :class:`~napari_medprompt._qt.learn.widget.LearnWidget` (see the module docstring)."""

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
        heat_scale = self._heat_scale()  # computed at the scale chosen now: no second pass on the GUI thread

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
                                           object_id=oid, scale=heat_scale)
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

    def _tick_prediction(self) -> bool:
        """Draw the running prediction's progress on the dock's bar; False when none runs."""
        pj = self.prediction_job
        if pj is None or pj.finished:
            return False
        pj.bar.flush()
        self.progress.setValue(int(1000 * pj.done / max(pj.total, 1)))
        self.progress.setFormat(f"predicting {pj.done}/{pj.total or '?'} slices")
        return True

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

    def _heat_scale(self) -> str:
        return self.heat_scale.currentData() or "slice"

    def _rescale_heatmap(self) -> None:
        """Show the heat map of the last prediction at the chooser's scale, from its raw maps (no model
        run): only the layer's data, name and scale metadata change; its colormap, opacity, contrast
        limits, visibility and place in the layer list stay as the user left them."""
        heat, old = (self.prediction or {}).get("heat"), self.heat_layer
        if heat is None or old is None or old not in self.viewer.layers:
            return
        heat = self.prediction["heat"] = heat.rescaled(self._heat_scale())  # the old scaling is freed
        arr = heat.data if np.ndim(old.data) == heat.data.ndim else heat.data[0]
        if arr.shape != tuple(old.data.shape):
            return
        md = dict(old.metadata)
        exp = {k: v for k, v in md.get("medprompt_explanation", {}).items() if k not in ("volume_min", "volume_max")}
        md["medprompt_explanation"] = {**exp, **heat.scale_metadata()}
        old.data, old.metadata, old.name = arr, md, self._heat_name(heat)

    @staticmethod
    def _heat_name(heat) -> str:
        return (f"{HEATMAP_LAYER} ({heat.version})" + (" — RANDOM weights" if heat.random_weights else "")
                + f" {heat.name_suffix}")

    def _show_heatmap(self, heat, layer) -> None:
        heat = heat.rescaled(self._heat_scale())  # the chooser changed while it was computed
        if self.prediction is not None and "heat" in self.prediction:
            self.prediction["heat"] = heat
        data = heat.data
        twod = layer.ndim == 2 or (getattr(layer, "rgb", False) and layer.ndim == 3)
        kw_common = dict(scale=tuple(layer.scale), translate=tuple(layer.translate),
                         affine=np.asarray(layer.affine.affine_matrix))
        name = self._heat_name(heat)
        if twod:
            from napari_medprompt.train.explain import heatmap_layer_data

            if getattr(layer, "rgb", False):
                kw_common["scale"], kw_common["translate"] = kw_common["scale"][:2], kw_common["translate"][:2]
                kw_common["affine"] = kw_common["affine"][[0, 1, -1]][:, [0, 1, -1]]
            arr, kwargs, _ = heatmap_layer_data(data[0], data[0].shape, name=name, **kw_common)
            kwargs["metadata"]["medprompt_explanation"].update({"version": heat.version,
                                                               "random_weights": heat.random_weights,
                                                               **heat.scale_metadata()})
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
                bold(cells)
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
