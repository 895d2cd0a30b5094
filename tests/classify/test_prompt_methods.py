"""The prompt-based methods (VPT, visual prompt, MoVL, mask-guided CLIP, SegPrompt) learn the synthetic task.

The class is decided by the lesion's texture (tests/classify/synthetic.py); the backbones are the real
open_clip / torchvision model classes at a tiny size with seeded random weights. Training goes through
the project's one loop (``train_iter``). Checked: held-out accuracy clearly above chance, the training
loss falls, the frozen backbone is unchanged (state hash), only the intended parts train and they are
few, mask methods refuse a missing mask, checkpoints round-trip with the same predictions.
"""

from __future__ import annotations

import numpy as np
import pytest

import torch  # noqa: E402  (a hard dependency: a broken install must fail, not skip)

from napari_medprompt.classify.base import method_class  # noqa: E402
from napari_medprompt.classify.methods.base import MissingMaskError  # noqa: E402
from napari_medprompt.train.checkpoints import load_checkpoint, save_checkpoint  # noqa: E402
from napari_medprompt.train.metrics import classification_metrics  # noqa: E402
from napari_medprompt.train.predict import predict  # noqa: E402
from tests.classify.prompt_training import backbone, task, trained  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def backbones():
    return {n: backbone(n) for n in ("test-vit-tiny", "test-resnet")}


def visual_params(bb) -> int:
    return sum(p.numel() for n, p in bb.named_parameters() if "visual" in n or bb.kind == "cnn")


# method, backbone, options, the parameter groups that must be the only trainable ones
CASES = [
    ("vpt-shallow", "test-vit-tiny", {}, {"prompts", "classifier"}),
    ("vpt-deep", "test-vit-tiny", {"n_prompts": 4}, {"prompts", "classifier"}),
    ("visual-prompt", "test-resnet", {}, {"prompter", "classifier"}),
    ("movl", "test-vit-tiny", {"discrepancy_weight": 0.1}, {"prompter", "classifier"}),
    ("movl", "test-resnet", {"discrepancy_weight": 0.5}, {"prompter", "classifier"}),
    ("mask-guided-clip", "test-vit-tiny", {}, {"classifier"}),  # the default: segmented image, fusion head, cached
    ("mask-guided-clip", "test-vit-tiny", {"guidance": "overlay", "attention_bias": "upweight", "alpha": 0.3, "head": "text"},
     {"classifier"}),
    ("segprompt", "test-vit-tiny", {}, {"mask_tokenizer", "seg_pos_embed", "prompts", "classifier"}),
    ("segprompt", "test-vit-tiny", {"mask_fusion": "add"}, {"mask_tokenizer", "prompts", "classifier"}),
]


@pytest.mark.parametrize("name,bb_name,options,parts", CASES, ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_prompt_method_learns_the_visible_class(name, bb_name, options, parts, tmp_path):
    _, test = task()
    bb = backbone(bb_name)
    t = trained(name, bb_name, tuple(sorted(options.items())))
    model, losses, done = t.model, t.losses, t.done
    assert done is not None and done.model is model

    masks = list(test.masks) if model.uses_masks else None
    probs = predict(model, list(test.images), masks)
    acc = classification_metrics(test.labels, probs)["accuracy"]
    print(f"{name} on {bb_name} {options}: held-out accuracy {acc:.2f}, loss {losses[0]:.3f} -> {losses[-1]:.3f}, "
          f"{model.num_trainable()} trainable")
    assert acc >= 0.7, f"{name} on {bb_name}: held-out accuracy {acc:.2f} (chance 0.5)"
    assert losses[-1] < 0.8 * losses[0], f"training loss did not fall: {losses}"
    assert bb.state_hash() == t.hash_before, "the frozen backbone changed"
    assert not any(p.requires_grad for p in bb.parameters())

    n = model.num_trainable()
    assert done.metrics["n_trainable"] == n > 0
    assert n < 0.1 * visual_params(bb), f"{n} trainable vs {visual_params(bb)} in the image encoder"
    assert {k.split(".")[0] for k, p in model.named_parameters() if p.requires_grad} == parts

    if model.uses_masks:  # the trained model reads the mask: another mask, other probabilities
        moved = [np.roll(m, 20, axis=1) for m in test.masks]
        assert np.abs(predict(model, list(test.images), moved) - probs).max() > 1e-3

    path = save_checkpoint(tmp_path / "adapter.safetensors", model)
    again = load_checkpoint(path, bb, method=name)
    np.testing.assert_allclose(predict(again, list(test.images), masks), probs, atol=1e-5)


@pytest.mark.parametrize("name", ["mask-guided-clip", "segprompt"])
def test_mask_methods_refuse_a_missing_mask(backbones, name):
    bb = backbones["test-vit-tiny"]
    model = method_class(name)(bb, ["a", "b"])
    x = torch.randn(2, 3, bb.image_size, bb.image_size)
    with pytest.raises(MissingMaskError, match=f"{name}.*needs a mask"):
        model(x)
    with pytest.raises(ValueError, match="do not match"):
        model(x, torch.ones(2, 1, bb.image_size // 2, bb.image_size // 2))
    assert model(x, torch.ones(2, 1, bb.image_size, bb.image_size)).shape == (2, 2)


def test_prompt_methods_say_what_they_cannot_run_on(backbones):
    rn = backbones["test-resnet"]
    for name in ("vpt-shallow", "vpt-deep", "segprompt"):
        with pytest.raises(ValueError, match="ViT"):
            method_class(name)(rn, ["a", "b"])
    with pytest.raises(ValueError, match="ViT"):
        method_class("mask-guided-clip")(rn, ["a", "b"], attention_bias="restrict")
    with pytest.raises(ValueError, match="text tower"):
        method_class("mask-guided-clip")(rn, ["a", "b"], head="text")
    with pytest.raises(ValueError, match="vpt-shallow.head: 'bogus' is not one of auto, linear, text"):
        method_class("vpt-shallow")(backbones["test-vit-tiny"], ["a", "b"], head="bogus")
    with pytest.raises(ValueError, match="does not fit"):
        method_class("visual-prompt")(rn, ["a", "b"], pad=40)


def test_vpt_prompts_sit_after_the_class_token(backbones):
    bb = backbones["test-vit-tiny"]
    shallow = method_class("vpt-shallow")(bb, ["a", "b"], n_prompts=3)
    deep = method_class("vpt-deep")(bb, ["a", "b"], n_prompts=3)
    assert shallow.prompts.shape == (1, 3, bb.width)
    assert deep.prompts.shape == (len(bb.blocks()), 3, bb.width)
    x = torch.randn(2, 3, bb.image_size, bb.image_size)
    seen = []
    hook = bb.blocks()[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    with torch.no_grad():
        shallow.features(x)
        tokens = bb.tokens(x)
    hook.remove()
    t = seen[0]
    assert t.shape[1] == 1 + 3 + bb.grid_size**2
    torch.testing.assert_close(t[:, 0], tokens[:, 0])
    torch.testing.assert_close(t[:, 1:4], shallow.prompts[0].expand(2, -1, -1))
    torch.testing.assert_close(t[:, 4:], tokens[:, 1:])


def test_mask_overlay_equals_colouring_the_unnormalised_image(backbones):
    from napari_medprompt.classify.methods.mask_guided import overlay_normalised

    bb = backbones["test-vit-tiny"]
    mean, std = torch.tensor(bb.mean).view(1, 3, 1, 1), torch.tensor(bb.std).view(1, 3, 1, 1)
    rgb = torch.rand(2, 3, 16, 16)
    m = (torch.rand(2, 1, 16, 16) > 0.5).float()
    colour, alpha = (0.0, 1.0, 0.0), 0.4
    expected = rgb * (1 - alpha * m) + alpha * m * torch.tensor(colour).view(1, 3, 1, 1)
    x = (rgb - mean) / std
    out = overlay_normalised(x, m, colour, alpha, bb.mean, bb.std)
    torch.testing.assert_close(out * std + mean, expected)
    outside = m.expand_as(x) == 0
    assert torch.equal(out[outside], x[outside])  # nothing changes outside the mask


def test_restricting_attention_bias_keeps_the_class_token_inside_the_mask(backbones):
    from napari_medprompt.classify.methods.mask_guided import class_token_bias

    bb = backbones["test-vit-tiny"]
    s, g = bb.image_size, bb.grid_size
    mask = torch.zeros(2, 1, s, s)
    mask[0, :, : s // 2, : s // 2] = 1  # image 0: top-left quadrant; image 1: empty mask -> no bias
    bias = class_token_bias(mask, g, bb.num_heads, 0, "restrict", 2.0)
    x = bb.tokens(torch.randn(2, 3, s, s))
    with torch.no_grad():
        attn = bb.attention(bb.blocks()[0], x, bias)  # (B, heads, T, T)
        plain = bb.attention(bb.blocks()[0], x)
    inside = torch.zeros(g, g, dtype=torch.bool)
    inside[: g // 2, : g // 2] = True
    cls_to_patches = attn[0, :, 0, 1:].reshape(-1, g, g)
    assert float(cls_to_patches[:, ~inside].sum(-1).max()) < 1e-2
    torch.testing.assert_close(attn[0, :, 1:], plain[0, :, 1:])  # only the class token's row changes
    torch.testing.assert_close(attn[1], plain[1])
    up = class_token_bias(mask, g, bb.num_heads, 2, "upweight", 2.0)
    assert up.shape == (2, bb.num_heads, 3 + g * g, 3 + g * g)
    assert float(up[0, 0, 0, 3:].max()) == pytest.approx(2.0) and float(up[0, 0, 1:].abs().sum()) == 0


def test_movl_loss_is_cross_entropy_plus_weighted_cosine_discrepancy(backbones):
    bb = backbones["test-resnet"]
    x = torch.randn(4, 3, bb.image_size, bb.image_size)
    y = torch.tensor([0, 1, 0, 1])
    movl = method_class("movl")(bb, ["a", "b"], discrepancy_weight=0.5)
    loss, logits = movl.training_loss(x, None, y)  # zero-initialised prompt: no discrepancy yet
    assert movl.last_terms["discrepancy"] == pytest.approx(0.0, abs=1e-6)
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y))
    with torch.no_grad():
        movl.prompter.pad_up.add_(1.0)
    loss, logits = movl.training_loss(x, None, y)
    with torch.no_grad():
        fp, f0 = bb.encode_image(movl.prompter(x)), bb.encode_image(x)
    disc = (1 - torch.nn.functional.cosine_similarity(fp, f0, dim=-1)).mean()
    assert float(disc) > 0
    torch.testing.assert_close(loss, torch.nn.functional.cross_entropy(logits, y) + 0.5 * disc)
    with pytest.raises(ValueError, match="discrepancy_weight"):
        method_class("movl")(bb, ["a", "b"], discrepancy_weight=-1)


def test_visual_prompt_on_clip_defaults_to_the_frozen_text_classifier(backbones):
    bb = backbones["test-vit-tiny"]
    vp = method_class("visual-prompt")(bb, ["normal", "pneumonia"])
    assert vp.method_config()["head"] == "text" and vp.method_config()["pad"] == round(30 * bb.image_size / 224)
    assert {k.split(".")[0] for k, p in vp.named_parameters() if p.requires_grad} == {"prompter"}
    prompt = vp.prompter.prompt()
    p = vp.prompter.pad
    assert float(prompt[..., p:-p, p:-p].abs().sum()) == 0 and float(prompt[..., :p, :].abs().sum()) > 0
    trainable_text = method_class("visual-prompt")(bb, ["normal", "pneumonia"], head="text-init")
    assert {k.split(".")[0] for k, p in trainable_text.named_parameters() if p.requires_grad} == {"prompter", "classifier"}


@pytest.mark.parametrize("name,options", [("segprompt", {"n_prompts": 2}), ("mask-guided-clip", {"attention_bias": "restrict"})])
def test_mask_methods_by_name_through_train_iter(name, options):
    """The CLI / GUI path: the loop builds the method by name; without masks the data is refused."""
    from napari_medprompt.train.data import DataError, from_annotations
    from napari_medprompt.train.loop import TrainConfig, train_iter

    data, _ = task()
    cfg = TrainConfig(method=name, backbone="test-vit-tiny", pretrained="random", method_options=options,
                      epochs=1, batch_size=16, patience=0)
    events = list(train_iter(cfg, data))
    done = events[-1]
    assert done.kind == "done" and done.model.name == name and done.model.method_config()["n_prompts"] == options.get("n_prompts", 0)
    assert done.model.backbone.random_weights
    no_masks = from_annotations([(im, None, c) for im, _m, c in blob_task_items()], classes=data.classes)
    with pytest.raises(DataError, match="needs a mask"):
        list(train_iter(cfg, no_masks))


def blob_task_items():
    from tests.classify.synthetic import blob_task

    return blob_task(3, seed=5).as_items()
