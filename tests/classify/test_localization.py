"""Localization maps: right shape and range for every kind of method, and on the synthetic task they
peak on the class-deciding lesion for a trained model.

The maps explain the "striped" class on striped test images: that class has visible positive evidence
(the stripes inside the lesion); the evidence for "smooth" is the absence of texture, which is
everywhere, so a map of it has no reason to peak on the lesion.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medprompt.classify.base import method_class  # noqa: E402
from napari_medprompt.classify.localization import localization_map, resize_map  # noqa: E402
from napari_medprompt.classify.methods.base import MissingMaskError  # noqa: E402
from napari_medprompt.train.preprocess import Preprocess, images_to_tensor, masks_to_tensor  # noqa: E402
from tests.classify.prompt_training import backbone, task, trained  # noqa: E402

torch.set_num_threads(2)
STRIPED = 1


def striped_inputs(bb, n: int = 8):
    """The first ``n`` striped held-out images as model inputs, with their masks (tensor and bool)."""
    _, test = task()
    idx = np.flatnonzero(test.labels == STRIPED)[:n]
    images, masks = [test.images[i] for i in idx], [test.masks[i] for i in idx]
    spec = Preprocess.from_backbone(bb)
    return images_to_tensor(images, spec), masks_to_tensor(masks, images, spec), [m.astype(bool) for m in masks]


def inside_outside(model, mask_input: bool):
    x, m, masks = striped_inputs(model.backbone)
    ins, outs = [], []
    for i in range(len(x)):
        cam = localization_map(model, x[i], m[i] if mask_input else None, target=STRIPED)
        assert cam.shape == masks[i].shape and cam.dtype == np.float32
        assert 0.0 <= cam.min() and cam.max() <= 1.0 and cam.max() == pytest.approx(1.0)
        ins.append(cam[masks[i]].mean())
        outs.append(cam[~masks[i]].mean())
    return float(np.mean(ins)), float(np.mean(outs))


@pytest.mark.parametrize(
    "name,bb_name,options,kind",
    [
        ("vpt-shallow", "test-vit-tiny", {}, "attention rollout"),
        ("linear-probe", "test-resnet", {}, "Grad-CAM"),
        ("mask-guided-clip", "test-vit-tiny", {"attention_bias": "upweight", "alpha": 0.3}, "rollout x mask"),
    ],
)
def test_map_peaks_on_the_deciding_region_of_a_trained_model(name, bb_name, options, kind):
    t = trained(name, bb_name, tuple(sorted(options.items())))
    hash_before = t.model.backbone.state_hash()
    grads_before = [None if p.grad is None else p.grad.clone() for p in t.model.trainable_parameters()]
    inside, outside = inside_outside(t.model, t.model.uses_masks)
    print(f"{name} on {bb_name} ({kind}): mean map inside the lesion {inside:.3f}, outside {outside:.3f}")
    assert inside > 1.5 * outside, f"{kind}: inside {inside:.3f} vs outside {outside:.3f}"
    assert t.model.backbone.state_hash() == hash_before
    for p, g in zip(t.model.trainable_parameters(), grads_before):  # explaining leaves no gradients behind
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_mask_methods_combine_the_mask_with_the_models_map():
    t = trained("mask-guided-clip", "test-vit-tiny", (("alpha", 0.3), ("attention_bias", "upweight")))
    x, m, masks = striped_inputs(t.model.backbone, 2)
    cam = localization_map(t.model, x[0], m[0])
    assert cam[~masks[0]].max() <= 0.3 + 1e-6  # attention outside the mask is shown, damped
    with pytest.raises(MissingMaskError, match="needs a mask"):
        localization_map(t.model, x[0])


@pytest.mark.parametrize(
    "name,bb_name,options",
    [
        ("vpt-deep", "test-vit-tiny", {}),
        ("segprompt", "test-vit-tiny", {}),
        ("visual-prompt", "test-vit-tiny", {}),
        ("movl", "test-resnet", {}),
        ("mask-guided-clip", "test-resnet", {}),
        ("mask-guided-clip", "test-vit-tiny", {"attention_bias": "restrict", "n_prompts": 2}),
    ],
)
def test_every_method_gets_a_map_aligned_with_its_input(name, bb_name, options):
    bb = backbone(bb_name)
    torch.manual_seed(0)
    model = method_class(name)(bb, ["smooth", "striped"], **options)
    x, m, _ = striped_inputs(bb, 1)
    with torch.no_grad():
        before = model(x, m)
    maps = [localization_map(model, x[0], m[0], target=c) for c in (0, 1)]
    for cam in maps:
        assert cam.shape == (bb.image_size, bb.image_size) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() <= 1
    # Grad-CAM is all zeros for a class with no positive evidence in the image (ReLU); not both
    assert any(cam.max() == pytest.approx(1.0) and cam.min() == 0 for cam in maps)
    assert not np.allclose(maps[0], maps[1]), "the map must depend on the explained class"
    with torch.no_grad():  # every hook / patched attention was removed again
        torch.testing.assert_close(model(x, m), before, rtol=0, atol=0)
    for blk in bb.blocks() if bb.kind == "vit" else []:
        assert "forward" not in blk.attn.__dict__
    model.train()  # the training mode is restored after explaining
    localization_map(model, x[0], m[0])
    assert model.training and not bb.training


def test_resize_map_back_to_the_original_image():
    cam = np.zeros((64, 64), np.float32)
    cam[16:32, 16:32] = 1.0
    out = resize_map(cam, (200, 120))
    assert out.shape == (200, 120) and out.min() >= 0 and out.max() <= 1
    assert out[75, 45] == pytest.approx(1.0) and out[190, 110] == pytest.approx(0.0)


def test_attention_recorder_computes_the_same_attention_and_restores_the_modules():
    """nn.MultiheadAttention (CLIP) is replaced by an explicit attention, timm's fused kernel is switched off."""
    from napari_medprompt.classify.localization import _AttentionRecorder

    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    clip_block = backbone("test-vit-tiny").blocks()[0]
    timm_block = timm.models.vision_transformer.Block(dim=32, num_heads=2).eval()
    bias = torch.randn(2, 2, 5, 5)
    cases = ((clip_block, clip_block.attn.embed_dim, bias.reshape(4, 5, 5)), (timm_block, 32, bias))
    for block, width, mask in cases:
        x = torch.randn(2, 5, width)
        with torch.no_grad():
            plain = block(x, attn_mask=mask)
        fused_before = getattr(block.attn, "fused_attn", None)
        rec = _AttentionRecorder([block])
        try:
            with torch.no_grad():
                recorded = block(x, attn_mask=mask)
        finally:
            rec.close()
        torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-5)
        assert len(rec.store) == 1 and rec.store[0].shape == (2, 2, 5, 5)
        torch.testing.assert_close(rec.store[0].sum(-1), torch.ones(2, 2, 5))
        assert "forward" not in block.attn.__dict__
        assert getattr(block.attn, "fused_attn", None) == fused_before
