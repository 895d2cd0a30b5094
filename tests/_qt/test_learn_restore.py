"""Closing napari keeps the learn state: the example set, the model versions and the active model come
back when the image is opened again; closing napari during training keeps the best completed epoch."""

from __future__ import annotations

import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    make_widget,
    press,
    stop_workers_after_test,
)
from tests._qt._learn_helpers import label_lesions, lesion_volume

pytestmark = pytest.mark.gui


def _viewer_with_learn(make_napari_viewer, monkeypatch, tmp_path, vol):
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1", scale=(3.0, 0.8, 0.8)))
    learn = dock_plugin_widget(viewer, "Learn")
    return viewer, seg, learn


def _train(qtbot, learn, epochs, method="linear-probe"):
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-vit-tiny"))
    learn.method.setCurrentIndex(learn.method.findData(method))
    learn.epochs.setValue(epochs)
    press(qtbot, learn.train)
    assert learn.job is not None, learn.messages
    return learn.job


def test_reopening_napari_restores_examples_versions_and_active_model(make_napari_viewer, qtbot, tmp_path,
                                                                      monkeypatch):
    vol, lesions = lesion_volume(0)
    viewer, seg, learn = _viewer_with_learn(make_napari_viewer, monkeypatch, tmp_path, vol)
    label_lesions(seg.ctrl.session, lesions)
    learn.add_accepted_objects()
    learn.class_box.setCurrentText("benign")
    seg.ctrl.jump_to_slice(0)
    press(qtbot, learn.add_slice)  # a slice without an object, as a whole-slice example
    uids = sorted(learn.workspace.examples.uids)
    assert len(uids) == 11
    for epochs in (3, 4):
        job = _train(qtbot, learn, epochs)
        qtbot.waitUntil(lambda job=job: not job.running, timeout=240000)
    learn.select_versions(["v0001"])
    press(qtbot, learn.activate)
    assert learn.active_version() == "v0001"
    root = learn.workspace.root
    seg.shutdown()
    viewer.close()

    viewer2, seg2, learn2 = _viewer_with_learn(make_napari_viewer, monkeypatch, tmp_path, vol)
    assert seg2.ctrl.session.object_classes() == {1: "benign", 2: "malignant"}  # classes are in the session
    assert learn2.workspace.root == root
    assert sorted(learn2.workspace.examples.uids) == uids
    qtbot.waitUntil(lambda: learn2.examples.rowCount() == 11, timeout=5000)
    assert learn2.versions.rowCount() == 2
    assert learn2.active_version() == "v0001"
    assert "v0001" in learn2.model_label.text()
    assert learn2.backbone.currentData() == "test-vit-tiny"  # the chooser follows the active model
    learn2.predict_mode.setCurrentText("Current slice")
    with qtbot.waitSignal(learn2.predicted, timeout=120000) as blocker:
        press(qtbot, learn2.predict)
    assert blocker.args[0]["version"] == "v0001"
    qtbot.waitUntil(lambda: learn2.prediction_job.finished, timeout=60000)
    seg2.shutdown()


def test_closing_napari_while_training_keeps_the_best_epoch(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    vol, lesions = lesion_volume(0)
    viewer, seg, learn = _viewer_with_learn(make_napari_viewer, monkeypatch, tmp_path, vol)
    label_lesions(seg.ctrl.session, lesions)
    learn.add_accepted_objects()
    job = _train(qtbot, learn, 1000, method="vpt-shallow")  # runs the encoder every step: a long run
    qtbot.waitUntil(lambda: any(e.kind == "epoch" and e.epoch >= 1 for e in job.events), timeout=240000)
    viewer.close()  # napari cancels its running tasks: the run stops and writes what it has
    assert not job.running
    res = job.result
    assert res is not None and res.cancelled and res.status == "stopped" and res.version == "v0001"
    assert 1 <= res.metrics["epochs_completed"] < 1000

    viewer2, seg2, learn2 = _viewer_with_learn(make_napari_viewer, monkeypatch, tmp_path, vol)
    assert learn2.versions.rowCount() == 1 and learn2.active_version() == "v0001"
    assert "stopped" in learn2.versions.item(0, 1).toolTip()
    seg2.shutdown()
