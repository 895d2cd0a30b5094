"""The learn loop without Qt: examples from two annotated volumes, a run in a worker thread with
progress events, cancel (best completed epoch kept, or nothing written), predictions, a heat-map volume
on the image's grid that peaks on the deciding lesion, versions (activate, compare, roll back exactly,
delete), a restart from disk, and clear messages for bad input.

Backbone: ``test-vit-tiny`` / ``test-resnet`` (the real model classes at 64 px, random init: every
result here is flagged as random weights, as it must be)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_medprompt.learn import (
    NO_ACTIVE,
    ExampleSet,
    LearnError,
    LearnRun,
    LearnWorkspace,
    Predictor,
    activate,
    compare,
    delete_version,
    pick_device,
    rollback,
    version_rows,
)
from napari_medprompt.train.explain import explain
from tests.learn.synthetic import annotated_session

STRIPED = 1
VIT = dict(method="vpt-shallow", backbone="test-vit-tiny", lr=1e-2, batch_size=16, device="cpu")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A workspace whose examples come from two annotated volumes (24 slices each, objects of both
    classes), with version v0001: VPT-shallow trained 15 epochs on them."""
    torch.set_num_threads(2)
    root = tmp_path_factory.mktemp("learn") / "medprompt-learn"
    ws = LearnWorkspace(root)
    for seed in (0, 1):
        s, vol, _ = annotated_session(seed, n_per_object=12)
        ws.examples.add_session(s, vol)
    run = LearnRun(ws.examples, ws.store, epochs=15, val_fraction=0, **VIT)
    events = list(run.events())
    return ws, run, events


@pytest.fixture(scope="module")
def test_volume():
    s, vol, lesion = annotated_session(5, n_per_object=8)
    return s, vol, lesion


def test_a_run_reports_progress_and_becomes_a_flagged_version(trained):
    ws, run, events = trained
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["version", "done"]
    assert "RANDOM weights" in events[0].message, "a random-weight backbone is said on screen"
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 15 * 3 and all(e.loss is not None and e.eta_s is not None for e in steps)
    progress = [e.progress for e in events]
    assert progress == sorted(progress) and progress[-1] == 1.0
    assert run.result.version == "v0001" and run.result.status == "finished" and run.result.random_weights
    rec = ws.store.get("v0001")
    assert rec["learn"]["random_weights"] is True and rec["learn"]["n_train_per_class"] == {"smooth": 24, "striped": 24}
    assert rec["learn"]["n_val_per_class"] is None and rec["learn"]["n_with_masks"] == 48
    assert rec["learn"]["n_groups"] == 2 and ws.store.active == "v0001", "the first model becomes active"
    (row,) = version_rows(ws.store)
    assert row["random_weights"] and row["method"] == "vpt-shallow" and row["backbone"] == "test-vit-tiny"
    assert row["data"] == "train smooth 24, striped 24; no val" and row["active"] and row["date"]


def test_predictions_on_a_new_volume_and_the_heat_map_peaks_on_the_deciding_lesion(trained, test_volume):
    ws, _, _ = trained
    _, vol, lesion = test_volume
    p = Predictor.load(ws.store)
    pred = p.predict_volume(vol)
    truth = ["smooth"] * 8 + ["striped"] * 8
    assert np.mean(np.array(pred.predicted) == truth) >= 0.75, pred.predicted
    assert pred.random_weights and "RANDOM" in pred.label and pred.version == "v0001"
    part = p.predict_volume(vol, range(3, 6))
    np.testing.assert_allclose(part.probabilities, pred.probabilities[3:6], atol=1e-6)
    calls = []
    hm = p.heatmap_volume(vol, target=STRIPED, batch_size=5, progress=lambda d, n: calls.append((d, n)))
    assert calls == [(5, 16), (10, 16), (15, 16), (16, 16)]
    assert hm.data.shape == vol.shape and hm.data.dtype == np.float32 and not hm.cancelled
    hits = 0
    for z in range(8, 16):  # striped lesions: the class has visible evidence there
        heat = hm.data[z]
        peak = np.unravel_index(np.argmax(heat), heat.shape)
        hits += bool(lesion[z][peak])
        assert heat[lesion[z]].mean() > 2.0 * heat[~lesion[z]].mean(), f"slice {z}"
    assert hits >= 6, f"the peak lies on the lesion in only {hits} of 8 striped slices"


def test_batched_heat_maps_equal_explaining_each_slice(trained, test_volume):
    ws, _, _ = trained
    _, vol, _ = test_volume
    p = Predictor.load(ws.store)
    hm = p.heatmap_volume(vol, slices=[0, 9, 15], batch_size=2)
    for j, z in enumerate([0, 9, 15]):
        e = explain(p.model, vol[z])
        np.testing.assert_allclose(hm.data[z], e.heatmap, atol=1e-4)
        np.testing.assert_allclose(hm.probabilities[j], e.probabilities, atol=1e-5)
    assert not hm.data[[1, 2, 10]].any(), "slices not asked for stay empty"


def test_heat_map_layer_lines_up_with_the_image_layer(trained, test_volume):
    ws, _, _ = trained
    _, vol, _ = test_volume
    hm = Predictor.load(ws.store).heatmap_volume(vol, slices=range(4), batch_size=4)
    affine = np.diag([1.0, -1.0, 1.0, 1.0])
    data, kw, kind = hm.layer_data(vol.shape, scale=(2.0, 0.8, 0.8), translate=(10.0, -5.0, 3.0), affine=affine)
    assert kind == "image" and data.shape == vol.shape
    assert kw["scale"] == (2.0, 0.8, 0.8) and kw["translate"] == (10.0, -5.0, 3.0) and kw["affine"] == affine.tolist()
    assert kw["blending"] == "additive" and "RANDOM" in kw["name"]
    assert kw["metadata"]["medprompt_explanation"]["random_weights"] is True
    with pytest.raises(LearnError, match="another image"):
        hm.layer_data((3, 64, 64))


def test_heat_map_cancel_returns_what_was_computed(trained, test_volume):
    ws, _, _ = trained
    _, vol, _ = test_volume
    stop = threading.Event()
    hm = Predictor.load(ws.store).heatmap_volume(vol, batch_size=4, progress=lambda d, n: stop.set(), cancel=stop)
    assert hm.cancelled and hm.done == [0, 1, 2, 3] and not hm.data[4:].any() and hm.data[:4].any()


def test_heat_map_scale_per_slice_or_over_the_volume_on_known_raw_maps():
    from napari_medprompt.learn.predict import HeatmapVolume, scale_maps

    raw = np.zeros((3, 8, 8), np.float32)
    raw[0, 2, 2] = 4.0  # slice A: strong evidence
    raw[0, 5, 5] = 1.0
    raw[2, 6, 1] = 1.0  # slice B: a quarter of A's
    per_slice = scale_maps(raw, [0, 2], "slice")
    assert per_slice[0].max() == 1.0 and per_slice[2].max() == 1.0, "per slice both peak at 1"
    volume = scale_maps(raw, [0, 2], "volume")
    assert volume[0].max() == 1.0 and volume[2].max() == pytest.approx(0.25)
    assert volume[0, 5, 5] == pytest.approx(0.25), "equal raw evidence is equally bright across slices"
    shifted = scale_maps(raw + 2.0, [0, 2], "volume")  # a non-zero minimum is taken over the volume too
    assert shifted[2].max() == pytest.approx(0.25) and shifted[[0, 2]].min() == 0.0
    other = raw.copy()
    other[1] = 9.0  # a slice not computed: stays 0 and does not widen the range
    v = scale_maps(other, [0, 2], "volume")
    assert not v[1].any() and v[2].max() == pytest.approx(0.25)
    with pytest.raises(LearnError, match="scale"):
        scale_maps(raw, [0], "global")
    hm = HeatmapVolume(per_slice, np.zeros((2, 2)), [0, 2], ["a", "b"], [0, 0], "Grad-CAM", "v1", False,
                       done=[0, 2], raw=raw)
    v = hm.rescaled("volume")
    assert v.scale == "volume" and v.data[2].max() == pytest.approx(0.25) and hm.data[2].max() == 1.0
    _, kw, _ = v.layer_data(raw.shape)
    md = kw["metadata"]["medprompt_explanation"]
    assert kw["name"].endswith("(scaled over 2 slices)") and md["scale"] == "volume"
    assert md["volume_max"] == 4.0 and md["slices"] == [0, 2]
    _, kw, _ = hm.layer_data(raw.shape)
    md = kw["metadata"]["medprompt_explanation"]
    assert kw["name"].endswith("(scaled per slice)") and md["scale"] == "slice"
    assert md["slice_maxima"] == {0: 4.0, 2: 1.0}


def test_heat_map_keeps_raw_maps_and_rescales_over_the_volume_without_the_model(trained, test_volume):
    ws, _, _ = trained
    _, vol, _ = test_volume
    p = Predictor.load(ws.store)
    hm = p.heatmap_volume(vol, slices=[0, 9, 15], batch_size=2)
    assert hm.scale == "slice" and hm.raw is not None
    maxima = hm.slice_maxima
    assert set(maxima) == {0, 9, 15} and all(v > 0 for v in maxima.values())
    assert len({round(v, 6) for v in maxima.values()}) > 1, "the slices' raw evidence differs"
    hv = p.heatmap_volume(vol, slices=[0, 9, 15], batch_size=2, scale="volume")
    np.testing.assert_allclose(hm.rescaled("volume").data, hv.data, atol=1e-6)
    top = max(maxima, key=maxima.get)
    lo = float(hm.raw[[0, 9, 15]].min())
    for z in (0, 9, 15):
        assert hv.data[z].max() == pytest.approx((maxima[z] - lo) / (maxima[top] - lo), abs=1e-5)
        assert hm.data[z].max() == pytest.approx(1.0)
    np.testing.assert_allclose(hv.rescaled("slice").data, hm.data, atol=1e-6)
    stop = threading.Event()
    part = p.heatmap_volume(vol, batch_size=4, progress=lambda d, n: stop.set(), cancel=stop, scale="volume")
    md = part.layer_data(vol.shape)[1]["metadata"]["medprompt_explanation"]
    name = part.layer_data(vol.shape)[1]["name"]
    assert name.endswith("(scaled over 4 slices, partial)") and md["slices"] == [0, 1, 2, 3]
    assert part.data[:4].max() == 1.0


def _run_in_thread(run, cancel_on):
    """Iterate ``run.events()`` in a worker thread (as napari's thread_worker does); cancel from this
    thread when the worker reports an event for which ``cancel_on(event)`` is true."""
    seen, flag = [], threading.Event()

    def work():
        for ev in run.events():
            seen.append(ev)
            if cancel_on(ev):
                flag.set()
                while not run.cancelled:  # the worker waits for the main thread's cancel
                    threading.Event().wait(0.001)

    t = threading.Thread(target=work)
    t.start()
    assert flag.wait(120)
    run.cancel()
    t.join(120)
    return seen


def test_cancel_keeps_the_best_completed_epoch_and_writes_nothing_before_one(trained, test_volume):
    ws, _, _ = trained
    versions_before = version_rows(ws.store)
    folders_before = sorted(p.name for p in ws.store.versions_dir.iterdir())
    run = LearnRun(ws.examples, ws.store, epochs=10, val_fraction=0, **VIT)
    seen = _run_in_thread(run, lambda e: e.kind == "step" and e.step == 1)
    assert seen[-1].kind == "done" and run.result.version is None
    assert run.result.status == "stopped-before-first-epoch" and "nothing was saved" in run.result.message
    steps = [e for e in seen if e.kind == "step"]
    assert len(steps) <= 2, "stops within one step"
    assert version_rows(ws.store) == versions_before
    assert sorted(p.name for p in ws.store.versions_dir.iterdir()) == folders_before, "nothing half-written"

    run = LearnRun(ws.examples, ws.store, epochs=10, val_fraction="auto", **VIT)
    assert run.val_fraction == 0.2, "two volumes with both classes: a grouped validation split"
    seen = _run_in_thread(run, lambda e: e.kind == "epoch" and e.epoch == 2)
    epochs = [e for e in seen if e.kind == "epoch"]
    assert [e.epoch for e in epochs] == [1, 2] and all(e.val_metric is not None for e in epochs)
    res = run.result
    assert res.status == "stopped" and res.cancelled and res.version == "v0002"
    assert res.metrics["best_epoch"] in (1, 2) and res.metrics["epochs_completed"] == 2
    rec = ws.store.get("v0002")
    assert rec["status"] == "stopped" and rec["learn"]["cancelled"] is True
    best = max(epochs, key=lambda e: (e.val_metric, -e.epoch))
    assert rec["metrics"]["val"]["balanced_accuracy"] == pytest.approx(best.val_metric)
    assert ws.store.active == "v0001", "a stopped run does not replace the active model"
    assert "v0002 is NOT active" in res.message
    learn = rec["learn"]
    train_n, val_n = sum(learn["n_train_per_class"].values()), sum(learn["n_val_per_class"].values())
    assert val_n > 0 and train_n + val_n == 48 and learn["n_train"] == train_n and learn["n_val"] == val_n
    row = next(r for r in version_rows(ws.store) if r["id"] == "v0002")
    assert row["data"] == ("train " + ", ".join(f"{c} {n}" for c, n in learn["n_train_per_class"].items())
                           + "; val " + ", ".join(f"{c} {n}" for c, n in learn["n_val_per_class"].items()))
    assert row["metrics"].startswith(f"val (used for epoch selection, n={val_n}) balanced acc")


def test_versions_switch_compare_roll_back_exactly_and_survive_a_restart(trained, test_volume):
    ws, _, _ = trained
    s, vol, _ = test_volume
    assert ws.store.active == "v0001"
    first = Predictor.load(ws.store).predict_volume(vol).probabilities
    run = LearnRun(ws.examples, ws.store, method="linear-probe", backbone="test-vit-tiny", epochs=2,
                   val_fraction=0, device="cpu")
    run.run()
    new = run.result.version
    assert ws.store.active == "v0001", "a new version does not override the user's active choice"
    assert not run.activated and f"version {new} is NOT active" in run.result.message
    activate(ws.store, new)
    assert ws.store.active == new
    second = Predictor.load(ws.store)
    assert second.version == new and not np.array_equal(second.predict_volume(vol).probabilities, first)
    rows = compare(ws.store, "v0001", new)
    assert ("method", "vpt-shallow", "linear-probe") in rows and any(r[0] == "train_loss" and None not in r for r in rows)
    assert rollback(ws.store) == "v0001"
    again = Predictor.load(ws.store).predict_volume(vol).probabilities
    assert np.array_equal(again, first), "the earlier version's predictions come back exactly"
    per_object = Predictor.load(ws.store).predict_objects(s, vol)
    assert set(per_object) == {1, 2} and per_object[2].slices == list(range(8, 16))

    # restart: everything is read back from disk by new objects
    back = LearnWorkspace(ws.root)
    assert back.store.active == "v0001" and version_rows(back.store) == version_rows(ws.store)
    assert back.examples.rows() == ws.examples.rows()
    assert back.examples.to_fewshot().fingerprint() == ws.examples.to_fewshot().fingerprint()
    assert np.array_equal(Predictor.load(back.store).predict_volume(vol).probabilities, first)

    with pytest.raises(LearnError, match="active model; deleting it needs a choice: choose the version"):
        delete_version(back.store, "v0001")
    assert delete_version(back.store, new) == "v0001", "an inactive version goes without a question"
    assert delete_version(back.store, "v0001", new_active="v0002") == "v0002"
    assert [r["id"] for r in version_rows(back.store)] == ["v0002"]
    with pytest.raises(LearnError, match="only version"):
        delete_version(back.store, "v0002")
    assert delete_version(back.store, "v0002", new_active=NO_ACTIVE) is None
    with pytest.raises(LearnError, match="no model to predict with"):
        Predictor.load(back.store)


def test_a_model_for_another_backbone_or_modality_is_refused(tmp_path):
    ex = ExampleSet()
    for seed in (0, 1):
        s, vol, _ = annotated_session(seed, n_per_object=2)
        ex.add_session(s, vol, modality="CT")
    run = LearnRun(ex, tmp_path / "models", method="linear-probe", backbone="test-resnet", epochs=1,
                   val_fraction=0, device="cpu")
    run.run()
    assert run.result.version == "v0001" and ex.modalities() == {"CT"}
    assert run.model.preprocess.intensity == "window", "CT examples train with the HU window"
    with pytest.raises(LearnError, match="trained on backbone 'test-resnet', not 'test-vit-tiny'"):
        Predictor.load(tmp_path / "models", backbone="test-vit-tiny")
    with pytest.raises(LearnError, match="trained on CT images; this image is MR"):
        Predictor.load(tmp_path / "models", modality="MR")
    p = Predictor.load(tmp_path / "models", backbone="test-resnet", modality="ct")
    hm = p.heatmap_volume(vol, slices=[0, 3], batch_size=2)
    for z in (0, 3):  # Grad-CAM, batched, equals the one-slice explanation
        np.testing.assert_allclose(hm.data[z], explain(p.model, vol[z]).heatmap, atol=1e-4)
    assert hm.technique == "Grad-CAM"


def test_bad_requests_fail_before_training_with_clear_messages(tmp_path):
    store = tmp_path / "models"
    ex = ExampleSet()
    with pytest.raises(LearnError, match="no examples yet"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny")
    img = np.random.default_rng(0).random((32, 32)).astype(np.float32)
    ex.add(img, "a")
    ex.add(img + 0.1, "a")
    ex.add_class("b")
    with pytest.raises(LearnError, match="'b' have no examples"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny")
    ex.add(img + 0.2, "b")
    with pytest.raises(LearnError, match="'b' have only one example"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny")
    ex.add(img + 0.3, "b")
    with pytest.raises(LearnError, match="needs a mask for every example"):
        LearnRun(ex, store, method="mask-guided-clip", backbone="test-vit-tiny")
    with pytest.raises(LearnError, match="has no option 'bogus'"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny", options={"bogus": 1})
    with pytest.raises(LearnError, match="unknown method"):
        LearnRun(ex, store, method="nope", backbone="test-vit-tiny")
    for e in ex:
        if e.class_name == "a":
            e.group = "one-series"  # all of class 'a' in one series: no grouped validation split
    with pytest.raises(LearnError, match="cannot split class 'a'.*val_fraction=0"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny", val_fraction=0.5)
    assert not (tmp_path / "models").exists(), "a refused run writes nothing"
    store.mkdir()
    (store / "index.json").write_text("{not json")
    for e in ex:
        e.group = e.uid
    with pytest.raises(LearnError, match="index.json is corrupt.*No version is lost"):
        LearnRun(ex, store, method="linear-probe", backbone="test-vit-tiny", val_fraction=0)


def test_device_pick_and_epoch_estimate():
    from napari_medprompt.learn import estimate_epoch_seconds

    d = pick_device()
    assert d.kind == ("cuda" if torch.cuda.is_available() else d.kind) and d.label
    fast = estimate_epoch_seconds("linear-probe", "test-vit-tiny", 40, device="cpu")
    slow = estimate_epoch_seconds("vpt-shallow", "test-vit-tiny", 40, device="cpu")
    assert fast > 0 and slow == pytest.approx(3 * fast), "backpropagating through the encoder costs ~3 passes"
    assert estimate_epoch_seconds("linear-probe", "test-vit-tiny", 80, device="cpu") == pytest.approx(2 * fast)


def test_training_free_run_without_validation_reports_no_validation_metric(trained):
    ws, _, _ = trained
    run = LearnRun(ws.examples, ws.store, method="tip-adapter", backbone="test-vit-tiny", val_fraction=0,
                   device="cpu")
    events = list(run.events())
    assert events[0].metrics["n_val"] == 0
    assert all(e.val_metric is None for e in events), "training-set metrics are not shown as validation"
    assert run.result.version is not None


def test_mask_methods_predict_with_the_chosen_objects_own_mask(test_volume):
    """A label volume with two objects on the same slices: the mask of ``object_id`` is that object's
    voxels (as in training), not every labelled voxel; per-object prediction reads a given labels copy."""
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class

    s, vol, lesion = test_volume
    torch.manual_seed(0)
    model = method_class("mask-guided-clip")(create_backbone("test-vit-tiny", "random", device="cpu"),
                                             ["smooth", "striped"])
    p = Predictor(model)
    assert p.uses_masks
    labels = np.zeros(vol.shape, np.int32)
    labels[:, 4:20, 4:20] = 1
    labels[:, 30:60, 30:60] = 2
    zs = [0, 1]
    own = p.predict_volume(vol, zs, masks=labels, object_id=2).probabilities
    np.testing.assert_allclose(own, p.predict_volume(vol, zs, masks=labels == 2).probabilities, atol=1e-6)
    union = p.predict_volume(vol, zs, masks=labels > 0).probabilities
    assert not np.allclose(own, union, atol=1e-6), "the union of all objects is another input"
    heat = p.heatmap_volume(vol, zs, masks=labels, object_id=2)
    np.testing.assert_allclose(heat.probabilities, own, atol=1e-4)
    copy = np.zeros(vol.shape, np.int32)
    copy[3:5, 30:60, 30:60] = 7
    objs = p.predict_objects(s, vol, labels=copy, object_ids=[7])
    assert set(objs) == {7} and objs[7].slices == [3, 4]
    np.testing.assert_allclose(objs[7].probabilities, p.predict_volume(vol, [3, 4], masks=copy == 7).probabilities,
                               atol=1e-6)
