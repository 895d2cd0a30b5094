"""Pieces of the Learn dock on their own: the option form built from a method's schema, the plot, the
Review table's class column, and the Segment dock answering while a model trains."""

from __future__ import annotations

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    load_backend,
    make_widget,
    press,
    stop_workers_after_test,
)
from tests._qt._learn_helpers import label_lesions, lesion_volume

pytestmark = pytest.mark.gui


def test_option_form_follows_the_schema(qtbot):
    from qtpy.QtWidgets import QComboBox, QDoubleSpinBox

    from napari_medprompt._qt.learn.options import OptionForm
    from napari_medprompt.classify.base import available_methods, method_info

    form = OptionForm()
    qtbot.addWidget(form)
    for name, info in available_methods().items():  # every method's defaults round-trip unchanged
        form.set_method(info)
        assert set(form.editors) == {o.name for o in info.options}
        assert form.values() == {}, name
    info = method_info("clip-adapter")
    form.set_method(info)
    ratio = form.editors["ratio"]
    assert isinstance(ratio, QDoubleSpinBox)
    spec = info.option("ratio")
    assert ratio.minimum() == pytest.approx(spec.min) and ratio.maximum() == pytest.approx(spec.max)
    ratio.setValue(0.5)
    head = form.editors["head"]
    assert isinstance(head, QComboBox) and head.count() == len(info.option("head").choices)
    assert form.values() == {"ratio": 0.5}
    form.reset()
    assert form.values() == {}


def test_plot_ticks_and_series(qtbot):
    from napari_medprompt._qt.learn.plot import LinePlot, nice_ticks

    assert nice_ticks(0, 1, 4) == [0, 0.25, 0.5, 0.75, 1.0]
    assert nice_ticks(0, 47, 6)[:3] == [0, 10, 20]
    p = LinePlot("t", "epoch", "loss", "acc")
    qtbot.addWidget(p)
    p.add_series("loss")
    p.add_series("acc", axis="right")
    for i in range(1, 6):
        p.append("loss", i, 1.0 / i)
        p.append("acc", i, i / 5)
    p.resize(300, 200)
    img = p.grab().toImage()
    assert p.n_points() == 10 and not img.isNull()
    got = []
    p.clicked.connect(got.append)
    rect = p._plot_rect()
    from qtpy.QtCore import QPoint, Qt

    qtbot.mouseClick(p, Qt.MouseButton.LeftButton, pos=QPoint(int(rect.right() - 1), int(rect.center().y())))
    assert got and got[0] == pytest.approx(5, abs=0.2)


def test_review_class_column_and_image_class(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_medprompt._qt.review.ui import CLASS_COLUMN

    vol, lesions = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1"))
    review = dock_plugin_widget(viewer, "Review")
    learn = dock_plugin_widget(viewer, "Learn")
    session = seg.ctrl.session
    obj = session.new_object(name="lesion")
    session.commit_slices(obj.id, dict(lesions["benign"]), "accepted")
    qtbot.waitUntil(lambda: review.objects.rowCount() == 1, timeout=5000)
    assert review.objects.item(0, CLASS_COLUMN).text() == ""
    assert review.objects.horizontalHeaderItem(CLASS_COLUMN).text() == "Class"
    review.objects.item(0, CLASS_COLUMN).setText("benign")  # what the cell editor commits
    assert session.objects[obj.id].class_name == "benign"
    qtbot.waitUntil(lambda: "benign" in [learn.class_box.itemText(i) for i in range(learn.class_box.count())],
                    timeout=5000)  # the Learn dock offers the classes already given
    session.undo()
    qtbot.waitUntil(lambda: review.objects.item(0, CLASS_COLUMN).text() == "", timeout=5000)
    assert session.objects[obj.id].class_name is None
    review.image_class.setCurrentText("abnormal")
    review.image_class.lineEdit().editingFinished.emit()
    assert session.image_class == "abnormal"
    review.image_class.setCurrentText("")
    review.image_class.lineEdit().editingFinished.emit()
    assert session.image_class is None


def test_segment_dock_answers_while_a_model_trains(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    vol, lesions = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1"))
    learn = dock_plugin_widget(viewer, "Learn")
    label_lesions(seg.ctrl.session, {"benign": lesions["benign"], "malignant": lesions["malignant"][:3]})
    learn.add_accepted_objects()
    load_backend(qtbot, seg)
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-vit-tiny"))
    learn.method.setCurrentIndex(learn.method.findData("vpt-shallow"))  # the encoder runs every step
    learn.epochs.setValue(1000)
    press(qtbot, learn.train)
    job = learn.job
    qtbot.waitUntil(lambda: any(e.kind == "step" for e in job.events), timeout=120000)
    # while it trains: a new object, a click in the big lesion, its preview, accepted
    oid = seg.new_object("another lesion")
    z, m = lesions["malignant"][4]  # a slice of the big lesion not drawn yet
    r, c = (int(v) for v in np.argwhere(m).mean(axis=0))
    seg.ctrl.jump_to_slice(z)
    with qtbot.waitSignal(seg.preview_updated, timeout=60000):
        seg.prompts.add_point(z, r, c)
    assert job.running  # the preview came while the model was still training
    press(qtbot, seg.ui.accept)
    qtbot.waitUntil(lambda: (seg.ctrl.session.labels[z] == oid).any(), timeout=10000)
    press(qtbot, learn.cancel)
    qtbot.waitUntil(lambda: not job.running, timeout=120000)
    assert job.result is not None and job.result.cancelled


def test_adding_a_2d_image_keeps_the_image_class_set_elsewhere(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    xray = np.random.default_rng(0).integers(0, 255, (48, 40)).astype(np.uint8)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(xray, name="xray"))
    learn = dock_plugin_widget(viewer, "Learn")
    session = seg.ctrl.session
    assert session.image_class is None
    learn.class_box.setCurrentText("normal")
    press(qtbot, learn.add_slice)
    assert session.image_class == "normal", "an image without class takes the example's"
    session.set_image_class("pneumonia")  # the clinician's class, set in the Review panel
    learn.class_box.setCurrentText("normal")
    press(qtbot, learn.add_slice)
    assert session.image_class == "pneumonia", "the Learn dock never overwrites the image's class"
    assert [e.class_name for e in learn.workspace.examples] == ["normal"]
    assert "stays 'pneumonia'" in learn.messages[-1][1]


def test_a_run_trains_on_the_examples_as_they_were_when_train_was_pressed(make_napari_viewer, qtbot, tmp_path,
                                                                           monkeypatch):
    import napari_medprompt._qt.learn.train_tab as train_tab_module

    vol, _lesions = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1", scale=(3.0, 0.8, 0.8)))
    learn = dock_plugin_widget(viewer, "Learn")
    learn.backbone.setCurrentIndex(learn.backbone.findData("test-vit-tiny"))
    learn.method.setCurrentIndex(learn.method.findData("linear-probe"))
    for cls, zs in (("benign", (1, 2, 3)), ("malignant", (7, 8, 9))):
        learn.class_box.setCurrentText(cls)
        for z in zs:
            seg.ctrl.jump_to_slice(z)
            press(qtbot, learn.add_slice)
    assert len(learn.workspace.examples) == 6

    made = []

    class Job:  # captures the run factory the worker would call
        running = cancelling = False

        def __init__(self, make_run, **kw):
            made.append(make_run)

    monkeypatch.setattr(train_tab_module, "TrainingJob", Job)
    monkeypatch.setattr(learn, "_register_task", lambda desc: None)
    learn.start_training()
    assert made
    ex = learn.workspace.examples
    ex.remove([e.uid for e in ex if e.slice_index in (1, 7)])  # the user edits the set meanwhile
    ex.rename_class("benign", "small")
    run = made[0]()  # what the worker builds afterwards
    assert len(run.data) == 6 and run.data.classes == ["benign", "malignant"]
    assert len(ex) == 4
    learn.job = None


def test_a_mask_method_predicts_with_the_current_objects_own_mask(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """Training gave each example its own object's mask; prediction on a slice does the same for the
    current object (not the union of every object), from a copy of the labels."""
    import torch

    import napari_medprompt.learn as learn_pkg
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class
    from napari_medprompt.learn import Predictor

    vol, lesions = lesion_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="case1", scale=(3.0, 0.8, 0.8)))
    learn = dock_plugin_widget(viewer, "Learn")
    session = seg.ctrl.session
    ids = label_lesions(session, lesions)
    z = 3
    extra = session.new_object(name="other")  # a second object on the same slice
    m = np.zeros(vol.shape[1:], bool)
    m[50:60, 5:20] = True
    session.commit_slices(extra.id, {z: m}, "accepted")
    torch.manual_seed(0)
    p = Predictor(method_class("mask-guided-clip")(create_backbone("test-vit-tiny", "random", device="cpu"),
                                                   ["benign", "malignant"]))
    monkeypatch.setattr(learn, "active_version", lambda: "v0001")
    monkeypatch.setattr(learn_pkg, "check_compatible", lambda *a, **k: None)
    monkeypatch.setattr(learn, "_store", lambda: type("Store", (), {"get": lambda self, v: {}, "active": "v0001"})())
    monkeypatch.setattr(learn, "_predictor", lambda vid, modality: p)
    seg.ctrl.jump_to_slice(z)
    seg.ctrl.current_object = 0
    learn.run_prediction(mode="Current slice", heatmap=False)
    qtbot.waitUntil(lambda: learn.prediction_job is None or learn.prediction_job.finished, timeout=60000)
    assert "choose one" in [msg for _lv, msg in learn.messages][-1], "no object: said, nothing guessed"
    seg.ctrl.current_object = ids["benign"]
    labels = np.asarray(session.labels).copy()
    with qtbot.waitSignal(learn.predicted, timeout=60000) as blocker:
        learn.run_prediction(mode="Current slice", heatmap=False)
    out = blocker.args[0]["probs"].probabilities
    np.testing.assert_allclose(out, p.predict_volume(vol, [z], masks=labels == ids["benign"]).probabilities,
                               atol=1e-6)
    assert not np.allclose(out, p.predict_volume(vol, [z], masks=labels > 0).probabilities, atol=1e-6)
