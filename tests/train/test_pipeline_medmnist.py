"""End to end on real PneumoniaMNIST images for every registered method (random-weight tiny backbones).

A pipeline check, not an accuracy claim: load the .npz, sample a few shots per class from the official
train split, select on a few images of the official val split, train one epoch, write the checkpoint,
load it back, predict held-out test images with identical probabilities. Mask
methods get a centred ellipse mask (the lung fields of a chest X-ray sit around the centre). A
method whose module is not there yet is skipped.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest
import torch

from napari_medprompt.classify.base import available_methods
from napari_medprompt.train.checkpoints import load_checkpoint, read_metadata
from napari_medprompt.train.data import FewShotData, from_npz, k_shot
from napari_medprompt.train.loop import TrainConfig, train_iter
from napari_medprompt.train.metrics import classification_metrics
from napari_medprompt.train.predict import predict
from tests.conftest import shared_file

torch.set_num_threads(2)
CLASSES = ["normal", "pneumonia"]
CASES = [(name, "test-vit-tiny") for name in sorted(available_methods())] + [("movl", "test-resnet")]


def _ellipse(shape) -> np.ndarray:
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]]
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    return ((yy - cy) / (0.4 * shape[0])) ** 2 + ((xx - cx) / (0.35 * shape[1])) ** 2 <= 1


def _with_masks(d: FewShotData) -> FewShotData:
    return FewShotData(d.images, d.labels, d.classes, [_ellipse(im.shape) for im in d.images], d.sources)


@pytest.mark.parametrize("method,bb_name", CASES, ids=[f"{m}-{b}" for m, b in CASES])
def test_pneumoniamnist_pipeline(method, bb_name, tmp_path):
    path = shared_file("medmnist/pneumoniamnist_balanced.npz")
    info = available_methods()[method]
    importlib.import_module(info.target.partition(":")[0])  # a missing method module fails
    if bb_name == "test-resnet" and info.needs_text:
        pytest.skip("needs a text tower")
    train = k_shot(from_npz(path, "train", CLASSES), 12, seed=0)
    val = k_shot(from_npz(path, "val", CLASSES), 3, seed=0)
    test = from_npz(path, "test", CLASSES).subset(range(0, 468, 59))  # 8 images, both classes
    if info.uses_masks:
        train, val, test = _with_masks(train), _with_masks(val), _with_masks(test)
    cfg = TrainConfig(method=method, backbone=bb_name, pretrained="random", epochs=1, batch_size=8, lr=1e-3,
                      out_dir=str(tmp_path))
    events = list(train_iter(cfg, train, val=val))
    assert events[0].metrics["n_train_per_class"] == [12, 12] and events[0].metrics["n_val"] == 6
    done = events[-1]
    assert done.kind == "done" and done.path, [e.kind for e in events]
    model = done.model
    meta = read_metadata(done.path)
    assert meta["method"] == method and meta["backbone"]["random_weights"] is True
    masks = test.masks if info.uses_masks else None
    probs = predict(model, test.images, masks)
    assert probs.shape == (8, 2) and np.allclose(probs.sum(1), 1, atol=1e-5)
    loaded = load_checkpoint(done.path)
    np.testing.assert_allclose(predict(loaded, test.images, masks), probs, atol=1e-6)
    m = classification_metrics(test.labels, probs)
    assert 0.0 <= m["accuracy"] <= 1.0 and sum(map(sum, m["confusion"])) == 8
