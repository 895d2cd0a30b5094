"""The training generator: events, cached features, stop requests, seeds, early stopping, balancing."""

from __future__ import annotations

import threading

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medprompt.classify.backbones.registry import create_backbone  # noqa: E402
from napari_medprompt.classify.base import available_methods, method_class  # noqa: E402
from napari_medprompt.train.data import DataError, FewShotData, from_annotations  # noqa: E402
from napari_medprompt.train.loop import TrainConfig, train_iter  # noqa: E402
from napari_medprompt.train.predict import predict  # noqa: E402
from tests.classify.synthetic import blob_task  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def bb():
    return create_backbone("test-vit-tiny")


@pytest.fixture(scope="module")
def data():
    t = blob_task(10, seed=4)
    return from_annotations(t.as_items(), classes=t.classes)


def test_cached_features_encode_each_image_once_and_events_are_complete(bb, data):
    model = method_class("linear-probe")(bb, data.classes)
    calls = []
    orig = bb.encode_image
    bb.encode_image = lambda x: (calls.append(len(x)), orig(x))[1]
    try:
        events = list(train_iter(TrainConfig(epochs=5, batch_size=4, lr=1e-2, val_fraction=0.2, patience=0), data, model))
    finally:
        del bb.encode_image
    assert sum(calls) == len(data)  # features computed once per image (train + val), then head-only epochs
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done" and "features" in kinds
    assert kinds.count("epoch") == 5
    steps = [e for e in events if e.kind == "step"]
    assert len(steps) == 5 * 4 and steps[-1].eta_s == pytest.approx(0.0, abs=1e-6)
    assert all(e.lr is not None and np.isfinite(e.loss) for e in steps)
    assert events[0].metrics["random_weights"] is True and "RANDOM" in events[0].message
    epochs = [e for e in events if e.kind == "epoch"]
    assert set(epochs[-1].metrics) >= {"accuracy", "balanced_accuracy", "macro_f1", "auroc", "confusion", "loss"}


def test_stop_event_ends_training_cleanly_and_keeps_the_model(bb, data, tmp_path):
    stop = threading.Event()
    model = method_class("clip-adapter")(bb, data.classes, head="linear")
    cfg = TrainConfig(epochs=50, batch_size=2, stop_event=stop, out_dir=str(tmp_path), val_fraction=0.2)
    kinds, n_steps = [], 0
    for ev in train_iter(cfg, data, model):
        kinds.append(ev.kind)
        if ev.kind == "step":
            n_steps += 1
            if n_steps == 3:
                stop.set()
    assert n_steps == 3
    assert kinds[-3:] == ["stopped", "checkpoint", "done"]
    assert (tmp_path / "adapter.safetensors").is_file()


def test_closing_the_generator_stops_it(bb, data):
    model = method_class("full-finetune")(bb, data.classes)
    gen = train_iter(TrainConfig(epochs=50, batch_size=2), data, model)
    for ev in gen:
        if ev.kind == "step":
            break
    gen.close()
    with pytest.raises(StopIteration):
        next(gen)


def test_same_seed_same_model(bb, data):
    probs = []
    for seed in (7, 7, 8):  # the loop seeds everything, then builds the backbone and the method
        cfg = TrainConfig(method="clip-adapter", backbone="test-vit-tiny", pretrained="random",
                          method_options={"head": "linear"}, epochs=3, seed=seed, lr=1e-2)
        model = [ev for ev in train_iter(cfg, data)][-1].model
        probs.append(predict(model, data.images[:6]))
    np.testing.assert_array_equal(probs[0], probs[1])
    assert not np.array_equal(probs[0], probs[2])


def test_early_stopping_restores_the_best_validation_epoch(bb, data):
    # shuffled labels: the head can only overfit, so the validation loss turns upwards early
    noisy = FewShotData(data.images, np.random.default_rng(0).permutation(data.labels), data.classes)
    model = method_class("linear-probe")(bb, data.classes)
    cfg = TrainConfig(epochs=40, lr=0.1, patience=2, val_fraction=0.3, batch_size=4)
    events = list(train_iter(cfg, noisy, model))
    val_losses = [e.metrics["loss"] for e in events if e.kind == "epoch" and e.metrics]
    assert len(val_losses) < 40  # stopped early
    done = events[-1]
    assert done.metrics["val"]["loss"] == min(val_losses)
    assert done.metrics["best_epoch"] == int(np.argmin(val_losses)) + 1


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
    for _ in train_iter(TrainConfig(epochs=20, val_fraction=0.0, batch_size=8), data, model):
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
    mask_methods = [n for n, i in available_methods().items() if i.uses_masks]
    if not mask_methods:
        pytest.skip("no mask-using method registered")
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
    done = list(train_iter(TrainConfig(epochs=2, val_fraction=0.0), data, model))[-1]
    assert done.kind == "done"
    probs = predict(model, data.images)
    assert probs.shape == (len(data), 2) and np.isfinite(probs).all()


def test_consumer_code_between_events_keeps_gradients_enabled(bb, data):
    model = method_class("linear-probe")(bb, data.classes)
    for ev in train_iter(TrainConfig(epochs=1), data, model):
        assert torch.is_grad_enabled(), f"grad mode leaked out of the loop at a {ev.kind!r} event"
