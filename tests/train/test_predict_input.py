"""predict: every accepted input layout gives one row per image; a single RGB image is one image."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import method_class
from napari_medprompt.train.predict import as_image_list, predict

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    bb = create_backbone("test-vit-tiny")
    return method_class("linear-probe")(bb, ["a", "b", "c"])


def test_layouts_give_one_row_per_image(model):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (40, 56, 3), np.uint8)
    grey = rng.random((40, 56)).astype(np.float32)
    stack = rng.random((4, 40, 56)).astype(np.float32)
    for images, n in ((rgb, 1), (rgb[..., :1].repeat(4, -1), 1), (grey, 1), (stack, 4), (list(stack[:3]), 3),
                      (np.stack([rgb, rgb]), 2), ([rgb, grey, np.moveaxis(rgb, -1, 0)], 3)):
        probs = predict(model, images)
        assert probs.shape == (n, 3), f"input of shape {np.shape(images)}"
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
    # the RGB image as one image gives the same answer as the same image inside a list
    np.testing.assert_allclose(predict(model, rgb), predict(model, [rgb]), atol=1e-6)
    # a stack row gives the same answer as that image alone
    np.testing.assert_allclose(predict(model, stack)[2], predict(model, stack[2])[0], atol=1e-6)


def test_as_image_list_shapes():
    assert len(as_image_list(np.zeros((30, 20, 3)))) == 1
    assert len(as_image_list(np.zeros((30, 20, 4)))) == 1
    assert len(as_image_list(np.zeros((5, 30, 20)))) == 5
    assert len(as_image_list(np.zeros((2, 3, 30, 20)))) == 2
    with pytest.raises(ValueError, match="expected"):
        as_image_list(np.zeros((2, 2, 3, 30, 20)))


def test_predict_leaves_the_model_as_it_was(model):
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    predict(model, np.zeros((32, 32), np.float32))
    assert model.training and not model.backbone.training
    for k, v in model.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k])
    for mod in model.modules():
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    model.eval()
