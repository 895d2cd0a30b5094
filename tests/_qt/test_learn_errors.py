"""Bad input in the Learn dock: a clear notification, nothing lost, the viewer keeps running."""

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


def _setup(make_napari_viewer, monkeypatch, tmp_path):
    vol, lesions = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1", scale=(3.0, 0.8, 0.8)))
    learn = dock_plugin_widget(viewer, "Learn")
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-vit-tiny"))
    return viewer, seg, learn, lesions


def _last(learn, level="warning"):
    msgs = [m for lv, m in learn.messages if lv == level]
    assert msgs, learn.messages
    return msgs[-1]


def test_bad_example_sets_and_no_model(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari.utils.notifications import notification_manager

    shown = []
    monkeypatch.setattr(notification_manager, "dispatch", lambda n: shown.append(str(n.message)))
    viewer, seg, learn, _lesions = _setup(make_napari_viewer, monkeypatch, tmp_path)
    learn.method.setCurrentIndex(learn.method.findData("linear-probe"))

    press(qtbot, learn.train)  # no examples
    assert learn.job is None and "no examples" in _last(learn)
    assert shown and "no examples" in shown[-1]  # a napari notification, not only the status line

    learn.class_box.setCurrentText("")
    press(qtbot, learn.add_slice)  # no class typed
    assert "class" in _last(learn) and len(learn.workspace.examples) == 0

    learn.class_box.setCurrentText("benign")
    for z in (1, 2):
        seg.ctrl.jump_to_slice(z)
        press(qtbot, learn.add_slice)
    learn.class_box.setCurrentText("malignant")
    seg.ctrl.jump_to_slice(7)
    press(qtbot, learn.add_slice)
    assert learn.workspace.examples.counts() == {"benign": 2, "malignant": 1}
    press(qtbot, learn.train)  # a class with one example
    assert learn.job is None and "only one example" in _last(learn)

    seg.ctrl.jump_to_slice(8)
    press(qtbot, learn.add_slice)
    # a mask method without masks: offered as unavailable, with the reason; refused if forced
    qtbot.waitUntil(lambda: learn._choices["mask-guided-clip"].enabled is False, timeout=5000)
    i = learn.method.findData("mask-guided-clip")
    assert "mask" in learn.method.itemData(i, 3).lower()  # tooltip: the reason
    assert not learn.method.model().item(i).isEnabled()
    learn.method.setCurrentIndex(i)
    assert not learn.train.isEnabled() and "Unavailable" in learn.method_desc.text()
    assert learn.start_training() is None and "mask" in _last(learn).lower()

    # predicting without any model
    learn.method.setCurrentIndex(learn.method.findData("linear-probe"))
    press(qtbot, learn.predict)
    assert learn.prediction_job is None and "No model" in _last(learn)

    # importing: a MedMNIST-style archive adds its training split; a broken file is refused
    import numpy as np

    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny.npz"
    np.savez(npz, train_images=rng.integers(0, 255, (6, 28, 28), dtype=np.uint8),
             train_labels=np.array([[0], [1], [0], [1], [0], [1]]))
    assert len(learn.import_examples(str(npz), kind="npz")) == 6
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not an archive")
    assert learn.import_examples(str(bad), kind="npz") == [] and "bad.npz" in _last(learn)
    assert learn.import_examples(str(tmp_path / "nowhere"), kind="folder") == []
    learn.workspace.examples.remove([e.uid for e in learn.workspace.examples if e.origin == "npz"])

    # nothing was lost, the viewer still works
    assert len(learn.workspace.examples) == 4
    assert learn.workspace.examples.save() and viewer.layers["case1"] is not None


def test_closing_the_image_during_training_and_a_model_for_another_backbone_or_modality(
        make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, seg, learn, lesions = _setup(make_napari_viewer, monkeypatch, tmp_path)
    label_lesions(seg.ctrl.session, lesions)
    learn.add_accepted_objects()
    learn.method.setCurrentIndex(learn.method.findData("vpt-shallow"))
    learn.epochs.setValue(4)
    press(qtbot, learn.train)
    job = learn.job
    assert job is not None
    qtbot.waitUntil(lambda: bool(job.events), timeout=120000)
    image = seg.ctrl.image_layer
    viewer.layers.remove(image)  # the image goes while the model trains
    qtbot.waitUntil(lambda: not job.running, timeout=240000)
    assert job.result is not None and job.result.version == "v0001"  # the run finished and was kept
    assert not learn.predict.isEnabled()
    assert learn.run_prediction() is None and "No image" in _last(learn)

    viewer.layers.append(image)
    seg.bind_image(image)
    qtbot.waitUntil(lambda: seg.ctrl.image_layer is image, timeout=5000)
    # a model trained on another backbone: refused, the message names both
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-resnet"))
    press(qtbot, learn.predict)
    msg = _last(learn)
    assert learn.prediction_job is None and "test-vit-tiny" in msg and "test-resnet" in msg
    # ... and on another modality
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-vit-tiny"))
    trained = learn.workspace.store.get("v0001").get("learn", {}).get("modality")
    other = "MR" if trained != "MR" else "CT"
    monkeypatch.setattr(learn, "_image", lambda: (image, image.data, seg.ctrl.session, other,
                                                  tuple(seg.ctrl.session.spacing)))
    assert trained == "OT"  # a plain array layer: "other" modality, recorded with the version
    press(qtbot, learn.predict)
    assert learn.prediction_job is None and other in _last(learn) and "OT" in _last(learn)
    assert learn.versions.rowCount() == 1 and learn.active_version() == "v0001"
