"""The Learn dock end to end, as a clinician uses it: objects of two synthetic CT volumes get a class in
the Review panel, become examples, a small real backbone (random init) trains in the background (one
run cancelled, one finished), predictions and the heat map overlay the image, versions are switched
and rolled back."""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_medprompt._qt.learn.widget import LearnWidget
from napari_medprompt._qt.review.ui import CLASS_COLUMN
from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    make_widget,
    press,
    stop_workers_after_test,
)
from tests._qt._learn_helpers import lesion_volume

pytestmark = pytest.mark.gui
SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")


def _shot(widget, name):
    if SHOTS:
        widget.grab().save(os.path.join(SHOTS, f"{name}.png"))


def _set_class_in_review(qtbot, review, object_id, name):
    """Type the class into the Review table's Class cell of ``object_id`` (what the editor commits)."""
    qtbot.waitUntil(lambda: any(review.objects.item(r, 1).data(256) == object_id
                                for r in range(review.objects.rowCount())), timeout=5000)
    for r in range(review.objects.rowCount()):
        if review.objects.item(r, 1).data(256) == object_id:
            review.objects.item(r, CLASS_COLUMN).setText(name)
            return
    raise AssertionError(f"object {object_id} not in the Review table")


def _label_in_review(qtbot, seg, review, lesions):
    """Objects drawn as label maps, then classed through the Review table's Class column."""
    session = seg.ctrl.session
    ids = {}
    for cls, items in lesions.items():
        obj = session.new_object(name=f"{cls} lesion")
        session.commit_slices(obj.id, dict(items), "accepted")
        ids[cls] = obj.id
    for cls, oid in ids.items():
        _set_class_in_review(qtbot, review, oid, cls)
    assert session.object_classes() == {oid: cls for cls, oid in ids.items()}
    return ids


def _open_learn(viewer) -> LearnWidget:
    learn = dock_plugin_widget(viewer, "Learn")
    assert isinstance(learn, LearnWidget)
    return learn


def _choose(learn, backbone="test-vit-tiny", method="linear-probe", epochs=None):
    learn.backbone.setCurrentIndex(learn.backbone.findData(backbone))
    learn.method.setCurrentIndex(learn.method.findData(method))
    assert learn.method.currentData() == method
    if epochs is not None:
        learn.epochs.setValue(epochs)


def _train(qtbot, learn, cancel_after_epoch=False, timeout=240000):
    with qtbot.waitSignal(learn.trained, timeout=timeout) as blocker:
        press(qtbot, learn.train)
        job = learn.job
        assert job is not None, learn.messages
        if cancel_after_epoch:
            qtbot.waitUntil(lambda: any(e.kind == "epoch" and e.epoch >= 1 for e in job.events), timeout=timeout)
            press(qtbot, learn.cancel)
    return blocker.args[0]


def _predict(qtbot, learn, mode="Whole volume"):
    learn.predict_mode.setCurrentText(mode)
    with qtbot.waitSignal(learn.predicted, timeout=120000) as blocker:
        press(qtbot, learn.predict)
    _idle(qtbot, learn)
    return blocker.args[0]


def _idle(qtbot, learn):
    """Wait until the prediction's worker has ended (its result arrives before that)."""
    qtbot.waitUntil(lambda: learn.prediction_job is None or learn.prediction_job.finished, timeout=60000)


def test_learn_loop_two_volumes(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    vol1, les1 = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol1, name="case1", scale=(3.0, 0.8, 0.8)))
    review = dock_plugin_widget(viewer, "Review")
    learn = _open_learn(viewer)
    assert learn.ctrl is seg.ctrl is review.ctrl
    assert learn.workspace is not None and learn.workspace.root.name == "medprompt-learn"
    assert learn.workspace.root.parent == seg.ctrl.session.folder.parent  # next to the sessions

    # 1. case 1: two lesions get their class in the Review table, then become examples
    _label_in_review(qtbot, seg, review, les1)
    press(qtbot, learn.add_objects)
    assert len(learn.workspace.examples) == 10
    qtbot.waitUntil(lambda: learn.examples.rowCount() == 10, timeout=5000)
    # 2. case 2: another volume, its own session, same learn folder
    vol2, les2 = lesion_volume(1)
    img2 = viewer.add_image(vol2, name="case2", scale=(3.0, 0.8, 0.8))
    seg.bind_image(img2)
    qtbot.waitUntil(lambda: learn.ctrl.session is not None and learn.ctrl.image_layer is img2, timeout=5000)
    _label_in_review(qtbot, seg, review, les2)
    press(qtbot, learn.add_objects)
    ex = learn.workspace.examples
    assert ex.counts() == {"benign": 10, "malignant": 10}
    assert len({e.group for e in ex}) == 2  # one group per volume: splits never mix them
    qtbot.waitUntil(lambda: learn.examples.rowCount() == 20, timeout=5000)
    assert "benign</b>: 10" in learn.counts.text() and "malignant</b>: 10" in learn.counts.text()
    assert not learn.examples.item(0, 0).icon().isNull()  # thumbnails
    _shot(learn, "learn_examples")

    # 3. method and backbone; the mask method is available (every example has a mask)
    _choose(learn, epochs=300)
    assert learn._choices["mask-guided-clip"].enabled  # every example carries its object's mask
    assert "CPU" in learn.device.text() or "CUDA" in learn.device.text()
    learn.tabs.setCurrentIndex(1)  # the Train tab times the encoder for an ETA
    qtbot.waitUntil(lambda: "ETA: about" in learn.eta.text(), timeout=60000)
    assert "timing of the encoder" in learn.eta.text()

    # 4. a run cancelled after its first epoch keeps its best completed epoch as a version
    job = _train(qtbot, learn, cancel_after_epoch=True)
    kinds = [e.kind for e in job.events]
    assert kinds[0] == "start" and "step" in kinds and "epoch" in kinds
    res = job.run.result
    assert res.cancelled and res.status == "stopped" and res.version == "v0001", res
    assert 1 <= res.metrics["epochs_completed"] < 300
    assert learn.curves.series["training loss (epoch)"].xs  # live curves got points
    assert any("RANDOM" in m for _lv, m in learn.messages)  # the random backbone is said
    # 5. a finished run
    _choose(learn, epochs=6)
    job = _train(qtbot, learn)
    res = job.run.result
    assert not res.cancelled and res.status in ("finished", "early-stopped") and res.version == "v0002"
    assert job.events[-1].kind == "done" and job.events[-1].progress == 1.0
    assert learn.versions.rowCount() == 2
    assert learn.active_version() == "v0001", "a new version never overrides the active model"
    assert "v0002 is NOT active" in learn.messages[-1][1]
    assert "data: train benign" in learn.versions.item(1, 2).toolTip()  # the loop's split, per class
    learn.select_versions(["v0002"])
    press(qtbot, learn.activate)
    _idle(qtbot, learn)
    assert learn.active_version() == "v0002"
    assert "last run" in learn.eta.text()  # the ETA now comes from the runs made here
    assert "RANDOM" in learn.versions.item(1, 3).text()
    learn.tabs.setCurrentIndex(1)
    _shot(learn, "learn_train")

    # 6. predict the whole volume: probabilities per slice, heat map over the image
    img = seg.ctrl.image_layer
    out = _predict(qtbot, learn)
    heat = learn.heat_layer
    assert heat is not None and heat in viewer.layers
    assert heat.data.shape == img.data.shape
    np.testing.assert_allclose(heat.scale, img.scale)
    np.testing.assert_allclose(heat.translate, img.translate)
    np.testing.assert_allclose(heat.affine.affine_matrix, img.affine.affine_matrix)
    assert heat.blending == "additive" and "RANDOM" in heat.name
    assert float(heat.data.max()) > 0
    assert len(out["heat"].done) == img.data.shape[0]
    assert set(learn.slice_plot.series) == {"benign", "malignant"}
    assert "RANDOM" in learn.prediction_label.text()
    learn.opacity.setValue(30)
    assert heat.opacity == pytest.approx(0.3)
    p2 = np.asarray(learn.prediction["probabilities"]).copy()
    h2 = np.asarray(heat.data).copy()
    learn.tabs.setCurrentIndex(3)
    _shot(learn, "learn_predict")

    # a slice range: only those slices
    learn.range_from.setValue(3)
    learn.range_to.setValue(6)
    out = _predict(qtbot, learn, "Slice range")
    assert out["heat"].done == [3, 4, 5, 6]
    assert not learn.heat_layer.data[7:].any() and learn.heat_layer.data[3:7].any()

    # 7. every object: each object's answer
    out = _predict(qtbot, learn, "Every object")
    assert set(out["objects"]) == set(seg.ctrl.session.objects)
    assert learn.object_table.rowCount() == 2

    # 8. another active version recomputes the shown prediction; rolling back gives the same numbers
    _predict(qtbot, learn, "Whole volume")
    learn.select_versions(["v0001"])
    with qtbot.waitSignal(learn.predicted, timeout=120000):
        press(qtbot, learn.activate)
    _idle(qtbot, learn)
    assert learn.active_version() == "v0001" and learn.prediction["version"] == "v0001"
    assert not np.array_equal(learn.prediction["probabilities"], p2)
    assert "v0001" in learn.heat_layer.name
    with qtbot.waitSignal(learn.predicted, timeout=120000):
        press(qtbot, learn.rollback)
    _idle(qtbot, learn)
    assert learn.active_version() == "v0002"
    np.testing.assert_array_equal(learn.prediction["probabilities"], p2)
    np.testing.assert_array_equal(learn.heat_layer.data, h2)

    # 9. compare two versions
    learn.select_versions(["v0001", "v0002"])
    rows = learn.compare_selected()
    assert rows and "v0001" in learn.comparison.toPlainText()

    # 10. deleting the active version asks for a replacement; nothing else goes
    monkeypatch.setattr(learn, "ask_replacement", lambda vid, choices: None)
    learn.select_versions(["v0002"])
    assert not learn.delete_selected()
    assert learn.versions.rowCount() == 2
    monkeypatch.setattr(learn, "ask_replacement", lambda vid, choices: "v0001")
    learn.select_versions(["v0002"])
    with qtbot.waitSignal(learn.predicted, timeout=120000):
        assert learn.delete_selected()
    _idle(qtbot, learn)
    assert learn.active_version() == "v0001" and learn.versions.rowCount() == 1
    assert learn.prediction["version"] == "v0001"
