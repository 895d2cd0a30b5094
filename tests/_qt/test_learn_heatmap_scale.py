"""The Predict tab's "Heat map scale" chooser: per slice or over the volume, said by the layer's name and
metadata; changing it re-scales the heat map shown from the raw maps, without a new prediction, and keeps
the colormap and opacity the user set on the layer."""

from __future__ import annotations

import os

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    make_widget,
    stop_workers_after_test,
)
from tests._qt._learn_helpers import lesion_volume

pytestmark = pytest.mark.gui
SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")  # a folder: keep the screenshot of the Predict tab


def test_heat_map_scale_chooser_rescales_the_shown_layer_without_predicting(make_napari_viewer, qtbot, tmp_path,
                                                                           monkeypatch):
    import torch

    import napari_medprompt.learn as learn_pkg
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class
    from napari_medprompt.learn import Predictor

    vol, _ = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1", scale=(3.0, 0.8, 0.8)))
    learn = dock_plugin_widget(viewer, "Learn")
    torch.manual_seed(0)
    p = Predictor(method_class("linear-probe")(create_backbone("test-resnet", "random", device="cpu"),
                                               ["benign", "malignant"]))
    runs = []
    real = p.heatmap_volume
    monkeypatch.setattr(p, "heatmap_volume", lambda *a, **k: runs.append(1) or real(*a, **k))
    monkeypatch.setattr(learn, "active_version", lambda: "v0001")
    monkeypatch.setattr(learn_pkg, "check_compatible", lambda *a, **k: None)
    monkeypatch.setattr(learn, "_store", lambda: type("Store", (), {"get": lambda self, v: {}, "active": "v0001"})())
    monkeypatch.setattr(learn, "_predictor", lambda vid, modality: p)
    assert learn.heat_scale.currentData() == "slice" and "over the volume" in learn.heat_scale.toolTip()
    with qtbot.waitSignal(learn.predicted, timeout=120000) as blocker:
        learn.run_prediction(mode="Whole volume")
    qtbot.waitUntil(lambda: learn.prediction_job is None or learn.prediction_job.finished, timeout=60000)
    heat = blocker.args[0]["heat"]
    layer = learn.heat_layer
    md = layer.metadata["medprompt_explanation"]
    assert layer.name.endswith("(scaled per slice)") and md["scale"] == "slice"
    assert set(md["slice_maxima"]) == set(range(vol.shape[0]))
    peaks = np.asarray(layer.data).reshape(vol.shape[0], -1).max(1)
    np.testing.assert_allclose(peaks, 1.0, atol=1e-6)  # every slice brightest at 1, whatever its evidence
    weakest = min(md["slice_maxima"], key=md["slice_maxima"].get)
    assert runs == [1]

    layer.colormap = "viridis"  # the user's own display choices
    layer.opacity = 0.8
    layer.contrast_limits = (0.1, 0.9)
    learn.heat_scale.setCurrentIndex(learn.heat_scale.findData("volume"))
    assert learn.heat_layer is layer and runs == [1], "re-scaled from the raw maps, no new prediction"
    md = layer.metadata["medprompt_explanation"]
    assert layer.name.endswith(f"(scaled over {vol.shape[0]} slices)") and md["scale"] == "volume"
    assert md["slices"] == list(range(vol.shape[0])) and md["volume_max"] == max(md["slice_maxima"].values())
    np.testing.assert_allclose(layer.data, heat.rescaled("volume").data)
    assert float(np.asarray(layer.data)[weakest].max()) < 1.0, "the weakest slice is dimmer over the volume"
    assert layer.colormap.name == "viridis" and layer.opacity == pytest.approx(0.8)
    assert tuple(layer.contrast_limits) == pytest.approx((0.1, 0.9))
    assert learn.prediction["heat"].scale == "volume"  # the per-slice copy is not kept beside it
    learn.tabs.setCurrentIndex(3)
    if SHOTS:
        os.makedirs(SHOTS, exist_ok=True)
        learn.grab().save(os.path.join(SHOTS, "learn_predict_heat_scale.png"))

    learn.heat_scale.setCurrentIndex(learn.heat_scale.findData("slice"))
    assert layer.name.endswith("(scaled per slice)") and layer.metadata["medprompt_explanation"]["scale"] == "slice"
    np.testing.assert_allclose(layer.data, heat.data)
    assert "volume_max" not in layer.metadata["medprompt_explanation"]
    assert runs == [1] and layer.colormap.name == "viridis"
