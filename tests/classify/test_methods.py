"""Every feature-level method learns the synthetic lesion-texture task on tiny random-weight backbones.

The class is decided by the lesion's texture (tests/classify/synthetic.py). Backbones are real
open_clip / torchvision model classes at a tiny size with seeded random weights, so what is tested is
the mechanics: the adapters learn from few labelled images, the backbone stays frozen, trainable
counts are reported. Zero-shot and the text classifiers are meaningless on random weights; tests of
them check the mechanics (templates, equivalences), not accuracy.
"""

from __future__ import annotations

import pytest

import torch  # noqa: E402  (a hard dependency: a broken install must fail, not skip)

from napari_medprompt.classify.backbones.registry import create_backbone  # noqa: E402
from napari_medprompt.classify.base import method_class  # noqa: E402
from napari_medprompt.train.data import from_annotations  # noqa: E402
from napari_medprompt.train.loop import TrainConfig, train_iter  # noqa: E402
from napari_medprompt.train.metrics import classification_metrics  # noqa: E402
from napari_medprompt.train.predict import predict  # noqa: E402
from tests.classify.synthetic import blob_task  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def task():
    train, test = blob_task(24, seed=0), blob_task(30, seed=1)
    return from_annotations(train.as_items(), classes=train.classes), test


@pytest.fixture(scope="module")
def backbones():
    return {"test-vit-tiny": create_backbone("test-vit-tiny"), "test-resnet": create_backbone("test-resnet")}


# method, backbone, options, training config; on random weights the text classifiers carry no
# information, so Tip-Adapter runs cache-only (text_weight=0) here and CLIP-Adapter uses its linear head
CASES = [
    ("linear-probe", "test-vit-tiny", {}, dict(lr=1e-2, epochs=30)),
    ("linear-probe", "test-resnet", {}, dict(lr=1e-2, epochs=30)),
    ("clip-adapter", "test-vit-tiny", {"head": "linear"}, dict(lr=1e-2, epochs=30)),
    ("clip-adapter", "test-vit-tiny", {"ratio": 0.6}, dict(lr=1e-2, epochs=40)),
    ("clip-adapter", "test-resnet", {}, dict(lr=1e-2, epochs=30)),
    ("tip-adapter", "test-vit-tiny", {"text_weight": 0.0}, dict()),
    ("tip-adapter-f", "test-vit-tiny", {"text_weight": 0.0}, dict(lr=1e-3, epochs=40)),
    # random weights hold nothing to preserve: the encoder trains at the head's rate here (the default,
    # 1e-5, protects pretrained CLIP features and is checked in test_full_finetune_default_lrs)
    ("full-finetune", "test-vit-tiny", {"backbone_lr": 1e-3}, dict(lr=1e-3, epochs=8)),
]


@pytest.mark.parametrize("name,bb_name,options,train", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_method_learns_the_visible_class(task, backbones, name, bb_name, options, train):
    data, test = task
    bb = backbones[bb_name]
    before = bb.state_hash()
    torch.manual_seed(0)  # the head's initialisation does not depend on which tests ran before
    model = method_class(name)(bb, data.classes, **options)
    cfg = TrainConfig(method=name, backbone=bb_name, batch_size=16, val_fraction=0.2, patience=0, **train)
    epochs, done = [], None
    for ev in train_iter(cfg, data, model):
        if ev.kind == "epoch" and ev.loss is not None:
            epochs.append(ev.loss)
        if ev.kind == "done":
            done = ev
    assert done is not None and done.model is model
    probs = predict(model, list(test.images))
    assert probs.shape == (len(test.labels), 2)
    acc = classification_metrics(test.labels, probs)["accuracy"]
    assert acc >= 0.7, f"{name} on {bb_name}: held-out accuracy {acc:.2f} (chance 0.5)"
    assert bb.state_hash() == before, "the shared frozen backbone changed"
    n = model.num_trainable()
    assert done.metrics["n_trainable"] == n
    if name == "tip-adapter":
        assert n == 0 and not epochs
    else:
        assert n > 0
        assert epochs[-1] < epochs[0], f"training loss did not fall: {epochs}"
    if name == "full-finetune":
        assert model.backbone is not bb and model.backbone.state_hash() != before
        assert n >= sum(p.numel() for p in model.backbone.model.visual.parameters())
    else:
        head_only = sum(p.numel() for p in model.parameters() if p.requires_grad)
        assert n == head_only and not any(p.requires_grad for p in bb.parameters())


def test_zero_shot_templates_are_editable_and_checked(backbones):
    bb = backbones["test-vit-tiny"]
    zs = method_class("zero-shot")
    a = zs(bb, ["normal", "pneumonia"])
    b = zs(bb, ["normal", "pneumonia"], templates=["a chest x-ray showing {}"])
    assert a.num_trainable() == 0
    assert not torch.allclose(a.text_features, b.text_features)
    assert b.method_config()["templates"] == ["a chest x-ray showing {}"]
    with pytest.raises(ValueError, match="'\\{\\}'"):
        zs(bb, ["a", "b"], templates=["no placeholder"])
    with pytest.raises(ValueError, match="no text tower"):
        zs(backbones["test-resnet"], ["a", "b"])
    x = torch.randn(3, 3, bb.image_size, bb.image_size)
    with torch.no_grad():
        logits = a(x)
        ref = 100.0 * torch.nn.functional.normalize(bb.encode_image(x), dim=-1) @ a.text_features.t()
    torch.testing.assert_close(logits, ref)


def test_clip_adapter_ratio_zero_is_zero_shot_clip(backbones):
    bb = backbones["test-vit-tiny"]
    x = torch.randn(4, 3, bb.image_size, bb.image_size)
    ca = method_class("clip-adapter")(bb, ["a", "b", "c"], ratio=0.0)
    zs = method_class("zero-shot")(bb, ["a", "b", "c"])
    with torch.no_grad():
        torch.testing.assert_close(ca(x), zs(x))
    with pytest.raises(ValueError, match="ratio"):
        method_class("clip-adapter")(bb, ["a", "b"], ratio=1.5)


def test_tip_adapter_cache_is_built_from_the_training_features(backbones):
    bb = backbones["test-vit-tiny"]
    tip = method_class("tip-adapter")(bb, ["a", "b"], alpha=2.0, beta=3.0, text_weight=0.0)
    with pytest.raises(RuntimeError, match="cache is empty"):
        tip.forward_features(torch.randn(1, bb.embed_dim))
    feats = torch.randn(6, bb.embed_dim)
    tip.prepare(feats, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert tip.cache_keys.shape == (6, bb.embed_dim) and tip.cache_values.shape == (6, 2)
    # a training image's own feature: affinity 1 with itself, so its class gets at least alpha
    logits = tip.forward_features(feats[:1])
    assert logits[0, 0] >= 2.0
    f = method_class("tip-adapter-f")(bb, ["a", "b"])
    assert f.num_trainable() == 0
    f.prepare(feats, torch.tensor([0, 0, 0, 1, 1, 1]))
    assert f.num_trainable() == 6 * bb.embed_dim


def test_methods_need_two_classes(backbones):
    with pytest.raises(ValueError, match="at least two classes"):
        method_class("linear-probe")(backbones["test-resnet"], ["only"])
