"""What the model sees in the Segment widget: the image's modality, the display window and the model
window (the checkpoint's convention, the display preset, a fixed preset or a named convention).

A mixin of :class:`~napari_medprompt._qt.segment.widget.SegmentWidget` (it uses the widget's
``ctrl``, ``ui``, ``volume`` and notification helpers).
"""

from __future__ import annotations

import numpy as np

from napari_medprompt._qt.segment import ui as segment_ui
from napari_medprompt.imaging.window import contrast_limits, default_preset, preset_names
from napari_medprompt.segment.base import PromptError


class ModelInputMixin:
    def set_modality(self, modality: str) -> None:
        """Change the image's modality: presets, the display window, the model window choices and the
        segmenter (rebound with the new modality) follow it."""
        layer, vol = self.ctrl.image_layer, self.volume
        if layer is None or vol is None or not modality:
            return
        modality = modality.upper()
        if modality == vol.modality:
            return
        old = vol.modality
        vol.modality = modality
        md = layer.metadata.setdefault("medprompt", {})
        md["modality"] = modality
        md["modality_inferred"] = False
        preset = default_preset(modality)
        segment_ui.fill_windows(self.ui.window, preset_names(modality), preset)
        if segment_ui.model_window_value(self._model_window_choice) not in (
                None, "display", *segment_ui.model_window_options(modality).values()):
            self._model_window_choice = segment_ui.AUTO_LABEL
        segment_ui.fill_model_windows(self.ui.model_window, modality, self._model_window_choice)
        if self.ui.modality.currentText() != modality:
            segment_ui.fill_modality(self.ui.modality, modality)
        self.set_window(preset)
        self._notify("info", f"Modality of '{layer.name}' set to {modality} (was {old}): window presets "
                             "and the model window follow it.")
        if self.ctrl.segmenter is not None:
            self._bind_segmenter(self.ctrl.segmenter)

    def set_model_window(self, label: str) -> None:
        """Choose what the model sees (a label of the "Model window" chooser)."""
        if not label:
            return
        modality = getattr(self.volume, "modality", "OT")
        if label not in segment_ui.model_window_options(modality):
            self._warn(f"Model window '{label}' is not available for {modality} images (fixed CT windows "
                       "need Hounsfield units): choose one of the listed ones. Nothing was changed.")
            return
        previous, self._model_window_choice = self._model_window_choice, label
        if not self._apply_model_window():
            self._model_window_choice = previous
            segment_ui.fill_model_windows(self.ui.model_window, getattr(self.volume, "modality", "OT"), previous)

    def _apply_model_window(self, quiet: bool = False) -> bool:
        seg = self.ctrl.segmenter
        choice = segment_ui.model_window_value(self._model_window_choice)
        if seg is None or not hasattr(seg, "set_model_window"):
            return True
        try:
            win = seg.set_model_window(choice, display_preset=self.ui.window.currentText() or None)
        except (PromptError, ValueError) as err:
            self._warn(f"Model window unchanged: {err}")
            return False
        if not quiet:
            what = "the image's own values (the classic backend ignores windows)" if win is None else \
                f"{win[0]:.0f} .. {win[1]:.0f}"
            self._notify("info", f"Model window: {self._model_window_choice} -> {what}.")
        return True

    def set_window(self, preset: str) -> None:
        """Apply a window/level preset: changes the image layer's contrast limits only."""
        layer = self.ctrl.image_layer
        if layer is None or self.volume is None or not preset:
            return
        lo, hi = contrast_limits(np.asarray(layer.data), self.volume.modality, preset)
        rlo, rhi = layer.contrast_limits_range
        layer.contrast_limits_range = (min(rlo, lo), max(rhi, hi))
        layer.contrast_limits = (lo, hi)
        if self.ui.window.currentText() != preset:
            self.ui.window.setCurrentText(preset)
        seg = self.ctrl.segmenter
        if seg is not None and hasattr(seg, "set_model_window"):
            try:  # the model sees what the clinician sees (unless a model window was chosen)
                seg.set_model_window(display_preset=preset)
            except (PromptError, ValueError) as err:
                self._warn(f"Model window unchanged: {err}")
