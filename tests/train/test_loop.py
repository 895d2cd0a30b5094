"""The training generator: protocol (exact k, separate validation, fixed schedule), events, stop
requests, seeds without global side effects, model selection, balancing, bad input."""

from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import available_methods, method_class
from napari_medprompt.train.data import DataError, FewShotData, from_annotations, k_shot
from napari_medprompt.train.loop import TrainConfig, train_iter
from napari_medprompt.train.predict import predict
from tests.classify.synthetic import blob_task

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def bb():
    return create_backbone("test-vit-tiny")


@pytest.fixture(scope="module")
def data():
    t = blob_task(10, seed=4)
    return from_annotations(t.as_items(), classes=t.classes)


@pytest.fixture(scope="module")
def val():
    t = blob_task(4, seed=11)
    return from_annotations(t.as_items(), classes=t.classes)


def test_cached_features_encode_each_image_once_and_events_are_complete(bb, data, val):
    model = method_class("linear-probe")(bb, data.classes)
    calls = []
    orig = bb.encode_image
    bb.encode_image = lambda x: (calls.append(len(x)), orig(x))[1]
    try:
        events = list(train_iter(TrainConfig(epochs=5, batch_size=4, lr=1e-2, patience=0), data, model, val=val))
    finally:
        del bb.encode_image
    assert sum(calls) == len(data) + len(val)  # features computed once per image, then head-only epochs
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "features" in kinds
    assert kinds.count("epoch") == 5
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 5 * 5 and steps[-1].eta_s == pytest.approx(0.0, abs=1e-6)  # 20 images / batch 4
    assert all(e.lr is not None and np.isfinite(e.loss) for e in steps)
    start = events[0].metrics
    assert start["random_weights"] is True and "RANDOM" in events[0].message
    assert start["n_train"] == 20 and start["n_val"] == 8 and start["monitor"] == "balanced_accuracy"
    epochs = [e for e in events if e.kind == "epoch"]
    assert set(epochs[-1].metrics) >= {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "confusion", "loss"}
    assert epochs[-1].metrics["n"] == len(val)  # validation metrics are on the separate split


def test_k_shot_trains_on_exactly_k_per_class(bb):
    pool = from_annotations(blob_task(12, seed=2).as_items(), classes=["smooth", "striped"])
    shots = k_shot(pool, 5, seed=0)
    model = method_class("tip-adapter")(bb, shots.classes)
    events = list(train_iter(TrainConfig(method="tip-adapter"), shots, model))
    assert events[0].metrics["n_train"] == 10 and events[0].metrics["n_train_per_class"] == [5, 5]
    assert model.cache_keys.shape[0] == 10  # the cache holds all 2 x 5 shots, none carved off
    assert model.cache_values.sum(0).tolist() == [5.0, 5.0]
    # a trained method: every step's batch comes from the 10 shots, and the epoch covers 10 draws
    seen = []
    lp = method_class("linear-probe")(bb, shots.classes)
    orig = lp.training_loss_from_features
    lp.training_loss_from_features = lambda f, y: (seen.append(len(y)), orig(f, y))[1]
    list(train_iter(TrainConfig(epochs=1, batch_size=4), shots, lp))
    assert sum(seen) == 10


def test_training_free_without_validation_reports_training_metrics_under_train(bb, data, val):
    model = method_class("tip-adapter")(bb, data.classes)
    events = list(train_iter(TrainConfig(method="tip-adapter"), data, model))
    done = events[-1]
    assert done.metrics["val"] is None and done.metrics["train"]["n"] == len(data)  # metrics on its own cache
    assert "training set" in next(e.message for e in events if e.kind == "epoch")
    model = method_class("tip-adapter")(bb, data.classes)
    done = list(train_iter(TrainConfig(method="tip-adapter"), data, model, val=val))[-1]
    assert done.metrics["train"] is None and done.metrics["val"]["n"] == len(val)


def test_no_validation_trains_the_fixed_schedule_and_says_so(bb, data):
    noisy = FewShotData(data.images, np.random.default_rng(0).permutation(data.labels), data.classes)
    model = method_class("linear-probe")(bb, data.classes)
    events = list(train_iter(TrainConfig(epochs=12, lr=0.1, patience=2, batch_size=4), noisy, model))
    assert "fixed schedule" in events[0].metrics["selection"] and events[0].metrics["monitor"] is None
    assert sum(e.kind == "epoch" and e.metrics is None for e in events) == 12  # no early stop, no val metrics
    done = events[-1]
    assert done.metrics["best_epoch"] == 12 and done.metrics["status"] == "finished" and done.metrics["val"] is None


def test_stop_before_the_first_epoch_writes_nothing(bb, data, tmp_path):
    from napari_medprompt.train.store import ModelStore

    store = ModelStore(tmp_path / "store")
    stop = threading.Event()
    model = method_class("clip-adapter")(bb, data.classes, head="linear")
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    cfg = TrainConfig(epochs=50, batch_size=2, stop_event=stop, out_dir=str(tmp_path / "out"), store=str(store.root))
    kinds, n_steps = [], 0
    for ev in train_iter(cfg, data, model):
        kinds.append(ev.kind)
        if ev.kind == "step":
            n_steps += 1
            if n_steps == 3:
                stop.set()
    assert n_steps == 3
    assert kinds[-2:] == ["stopped", "done"]
    assert store.list() == [] and not (tmp_path / "out").exists()
    assert ev.metrics["status"] == "stopped-before-first-epoch" and ev.metrics["written"] is False
    for k, v in before.items():  # the half epoch is undone
        torch.testing.assert_close(model.state_dict()[k], v)


def test_stop_keeps_the_last_completed_epoch_and_says_which(bb, data, tmp_path):
    from napari_medprompt.train.store import ModelStore

    stop = threading.Event()
    model = method_class("linear-probe")(bb, data.classes)
    cfg = TrainConfig(epochs=50, batch_size=4, lr=0.05, stop_event=stop, store=str(tmp_path / "s"))
    snapshot, events = None, []
    for ev in train_iter(cfg, data, model):
        events.append(ev)
        if ev.kind == "epoch" and ev.epoch == 2:
            snapshot = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
        if ev.kind == "step" and ev.epoch == 3 and ev.step == 12:  # mid third epoch
            stop.set()
    stopped = next(e for e in events if e.kind == "stopped")
    assert stopped.epoch == 2 and "last completed epoch" in stopped.message
    assert [e.kind for e in events[-3:]] == ["stopped", "version", "done"]
    for k, v in snapshot.items():
        torch.testing.assert_close(model.state_dict()[k], v)
    rec = ModelStore(tmp_path / "s").get()
    assert rec["status"] == "stopped" and rec["metrics"]["best_epoch"] == 2


def test_closing_the_generator_stops_it(bb, data):
    model = method_class("full-finetune")(bb, data.classes)
    gen = train_iter(TrainConfig(epochs=50, batch_size=2), data, model)
    for ev in gen:
        if ev.kind == "step":
            break
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def _global_state():
    cudnn = torch.backends.cudnn
    return (random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state().clone(),
            cudnn.deterministic, cudnn.benchmark)


def test_same_seed_same_model_and_no_global_random_state_touched(data):
    probs = []
    torch.backends.cudnn.benchmark = True  # a caller's setting the loop must restore
    try:
        for i, seed in enumerate((7, 7, 8)):
            random.seed(100 + i)  # a caller's random state, different before every run
            np.random.seed(100 + i)
            torch.manual_seed(100 + i)
            before = _global_state()
            cfg = TrainConfig(method="clip-adapter", backbone="test-vit-tiny", pretrained="random",
                              method_options={"head": "linear"}, epochs=3, seed=seed, lr=1e-2, batch_size=8)
            model = [ev for ev in train_iter(cfg, data)][-1].model  # builds (random init), samples, trains
            after = _global_state()
            assert before[0] == after[0]
            np.testing.assert_array_equal(before[1], after[1])
            torch.testing.assert_close(before[2], after[2])
            assert before[3:] == after[3:] == (False, True)
            probs.append(predict(model, data.images[:6]))
    finally:
        torch.backends.cudnn.benchmark = False
    np.testing.assert_array_equal(probs[0], probs[1])
    assert not np.array_equal(probs[0], probs[2])


def test_model_selection_on_balanced_accuracy_with_early_stopping(bb, data, val):
    # shuffled labels: the head can only overfit, so validation does not improve for long
    noisy = FewShotData(data.images, np.random.default_rng(0).permutation(data.labels), data.classes)
    model = method_class("linear-probe")(bb, data.classes)
    cfg = TrainConfig(epochs=40, lr=0.1, patience=3, batch_size=4)
    events = list(train_iter(cfg, noisy, model, val=val))
    vals = [e.metrics for e in events if e.kind == "epoch" and e.metrics]
    assert len(vals) < 40 and events[-1].metrics["status"] == "early-stopped"
    bal = [m["balanced_accuracy"] for m in vals]
    done = events[-1].metrics
    top = [i for i, b in enumerate(bal) if b == max(bal)]  # ties broken by the lower validation loss
    assert done["best_epoch"] == 1 + min(top, key=lambda i: (vals[i]["loss"], i))
    assert done["val"]["balanced_accuracy"] == max(bal) and done["monitor"] == "balanced_accuracy"
    acc = float(np.mean(predict(model, val.images).argmax(1) == val.labels))
    assert acc == pytest.approx(done["val"]["accuracy"])  # the restored weights are the selected epoch's
    # loss as an explicit choice
    model = method_class("linear-probe")(bb, data.classes)
    events = list(train_iter(TrainConfig(epochs=40, lr=0.1, patience=3, batch_size=4, monitor="loss"), noisy, model, val=val))
    losses = [e.metrics["loss"] for e in events if e.kind == "epoch" and e.metrics]
    assert events[-1].metrics["val"]["loss"] == min(losses)
    with pytest.raises(ValueError, match="unknown monitor 'f2'"):
        next(train_iter(TrainConfig(monitor="f2"), data, model))


def test_val_fraction_carves_a_grouped_split_from_a_pool(bb):
    t = blob_task(12, seed=8)
    items = [(im, m, c, f"case{i // 3}") for i, (im, m, c) in enumerate(t.as_items())]  # 3 slices per case
    pool = from_annotations(items, classes=t.classes)
    model = method_class("linear-probe")(bb, pool.classes)
    events = list(train_iter(TrainConfig(epochs=1, val_fraction=0.25), pool, model))
    start = events[0].metrics
    assert "carved from the given pool" in start["validation"] and start["n_train"] + start["n_val"] == 24
    assert start["n_val"] > 0 and start["monitor"] == "balanced_accuracy"


def test_method_defaults_fill_an_unset_schedule(bb, data):
    info = available_methods()["linear-probe"]
    model = method_class("linear-probe")(bb, data.classes)
    events = list(train_iter(TrainConfig(epochs=1), data, model))
    sched = events[0].metrics["schedule"]
    assert sched["lr"] == info.defaults.lr and sched["batch_size"] == info.defaults.batch_size and sched["epochs"] == 1


def test_class_balanced_sampling(bb):
    t = blob_task(20, seed=5)
    keep = np.concatenate([np.flatnonzero(t.labels == 0), np.flatnonzero(t.labels == 1)[:4]])
    data = from_annotations(t.subset(keep).as_items(), classes=t.classes)
    assert data.class_counts().tolist() == [20, 4]
    seen = []
    model = method_class("linear-probe")(bb, data.classes)
    orig = model.training_loss_from_features

    def spy(features, targets):
        seen.extend(targets.tolist())
        return orig(features, targets)

    model.training_loss_from_features = spy
    for _ in train_iter(TrainConfig(epochs=20, batch_size=8), data, model):
        pass
    frac_minority = np.mean(np.asarray(seen) == 1)
    assert 0.4 < frac_minority < 0.6  # 1/6 of the images, about half of the draws


def test_bad_input_errors(bb, data):
    one = FewShotData(data.images[:3], [0, 0, 0], ["only"])
    with pytest.raises(DataError, match="at least two classes"):
        next(train_iter(TrainConfig(), one, None))
    empty = FewShotData(data.images[:3], [0, 0, 0], ["a", "b"])
    with pytest.raises(DataError, match="'b' have no examples"):
        next(train_iter(TrainConfig(), empty, None))
    other = FewShotData(data.images[:2], [0, 1], ["x", "y"])
    with pytest.raises(ValueError, match="either a validation set"):
        next(train_iter(TrainConfig(val_fraction=0.2), data, method_class("linear-probe")(bb, data.classes), val=data))
    with pytest.raises(DataError, match="validation data's classes"):
        next(train_iter(TrainConfig(), data, method_class("linear-probe")(bb, data.classes), val=other))
    mask_methods = [n for n, i in available_methods().items() if i.uses_masks]
    assert mask_methods
    nomask = FewShotData(data.images, data.labels, data.classes)
    with pytest.raises(DataError, match="needs a mask for every image"):
        next(train_iter(TrainConfig(method=mask_methods[0], backbone="test-vit-tiny", pretrained="random"), nomask))


def test_training_on_mixed_sizes_channels_and_bit_depths(bb):
    t = blob_task(6, seed=6)
    items = []
    for i, (img, m, c) in enumerate(t.as_items()):
        if i % 3 == 1:  # 16-bit, larger
            img = np.kron((img * 65535).astype(np.uint16), np.ones((2, 2), np.uint16))
        elif i % 3 == 2:  # 8-bit RGB, cropped to another size
            img = np.repeat((img[:, 8:] * 255).astype(np.uint8)[..., None], 3, axis=-1)
        items.append((img, None, c))
    data = from_annotations(items, classes=t.classes)
    assert {im.dtype.name for im in data.images} == {"float32", "uint16", "uint8"}
    model = method_class("linear-probe")(bb, data.classes)
    done = list(train_iter(TrainConfig(epochs=2), data, model))[-1]
    assert done.kind == "done"
    probs = predict(model, data.images)
    assert probs.shape == (len(data), 2) and np.isfinite(probs).all()


def test_consumer_code_between_events_keeps_gradients_enabled(bb, data):
    model = method_class("linear-probe")(bb, data.classes)
    for ev in train_iter(TrainConfig(epochs=1), data, model):
        assert torch.is_grad_enabled(), f"grad mode leaked out of the loop at a {ev.kind!r} event"


def test_weights_change_only_under_the_models_state_lock(bb, data):
    """A snapshot taken from another thread (prediction while training) takes the same lock, so it
    sees the weights of whole optimiser steps, never half of one."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    from napari_medprompt.classify.snapshot import state_lock

    model = method_class("vpt-shallow")(bb, data.classes)
    lock = state_lock(model)
    held = []
    handle = register_optimizer_step_pre_hook(lambda opt, args, kwargs: held.append(lock._is_owned()))
    try:
        list(train_iter(TrainConfig(epochs=2, batch_size=4), data, model))
    finally:
        handle.remove()
    assert held and all(held)
    assert not lock._is_owned()
