"""Localization maps: on the synthetic task they peak on the class-deciding lesion for a trained model,
in the original image's geometry (off-centre lesion, non-square image); mask methods show the model's
own map, not the mask; explaining a model that trains in another thread leaves its training exactly as
it would have been.

The maps explain the "striped" class on striped test images: that class has visible positive evidence
(the stripes inside the lesion); the evidence for "smooth" is the absence of texture, which is
everywhere, so a map of it has no reason to peak on the lesion.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from napari_medprompt.classify.base import method_class
from napari_medprompt.classify.localization import localization_map, raw_localization, resize_map
from napari_medprompt.classify.methods.base import MissingMaskError
from napari_medprompt.train.explain import explain
from napari_medprompt.train.preprocess import Preprocess, images_to_tensor, masks_to_tensor
from tests.classify.prompt_training import backbone, task, train, trained
from tests.classify.synthetic import _texture

torch.set_num_threads(2)
STRIPED = 1
MASK_GUIDED = (("alpha", 0.3), ("attention_bias", "upweight"), ("guidance", "overlay"), ("head", "text"))


def lesion_image(shape, centre, radii, kind: int = STRIPED, seed: int = 0):
    """One synthetic-task image of any shape: background as in ``blob_task``, one lesion of texture
    ``kind`` at ``centre`` (row, col) with ``radii``. Returns (image float32, lesion mask bool)."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    gy, gx = rng.uniform(-0.15, 0.15, 2)
    img = 0.25 + gy * (yy / h - 0.5) + gx * (xx / w - 0.5) + rng.normal(0, 0.03, (h, w))
    inside = ((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 <= 1.0
    img = np.where(inside, 0.35 + 0.45 * _texture(kind, yy, xx, rng) + rng.normal(0, 0.03, (h, w)), img)
    return np.clip(img, 0.0, 1.0).astype(np.float32), inside


def distance_to(mask: np.ndarray, point) -> float:
    rr, cc = np.nonzero(mask)
    return float(np.min(np.hypot(rr - point[0], cc - point[1])))


# Non-square images at the model's own scale (64 px on the long side: padded, not resized), lesions off
# centre so that a flipped or transposed map misses them.
OFF_CENTRE = [((64, 40), (46, 13), (12, 11)), ((48, 64), (13, 50), (11, 12))]


@pytest.mark.parametrize(
    "name,bb_name,options,tolerance,ratio",
    [
        ("vpt-shallow", "test-vit-tiny", (), 0.0, 2.0),
        # Grad-CAM on a 4x4 feature grid (64 px input): one value per 16-px cell; its peak sits on a
        # cell centre, so it may miss the lesion's edge by up to half a cell, and the map is blurry
        ("linear-probe", "test-resnet", (), 8.0, 1.3),
        ("mask-guided-clip", "test-vit-tiny", MASK_GUIDED, 0.0, 2.0),
    ],
)
def test_raw_map_peaks_on_an_off_centre_lesion_of_a_non_square_image(name, bb_name, options, tolerance, ratio):
    t = trained(name, bb_name, options)
    hash_before = t.model.backbone.state_hash()
    for seed in range(3):
        for shape, centre, radii in OFF_CENTRE:
            image, lesion = lesion_image(shape, centre, radii, seed=seed)
            e = explain(t.model, image, lesion if t.model.uses_masks else None, target=STRIPED)
            heat = e.heatmap
            assert heat.shape == shape and heat.dtype == np.float32, "the map is on the image's own grid"
            assert heat.max() == pytest.approx(1.0) and heat.min() == pytest.approx(0.0), "a flat map"
            peak = np.unravel_index(np.argmax(heat), shape)
            flipped = np.unravel_index(np.argmax(heat[::-1, ::-1]), shape)
            where = f"{name}, seed {seed}, {shape}: peak {peak}, lesion at {centre}"
            assert distance_to(lesion, peak) <= tolerance, where
            assert distance_to(lesion, flipped) > tolerance, "the test image must tell a flipped map apart"
            assert heat[lesion].mean() > ratio * heat[~lesion].mean(), where
            if t.model.uses_masks:  # the model's own map, the mask given back separately
                np.testing.assert_array_equal(e.mask, lesion)
    assert t.model.backbone.state_hash() == hash_before


def test_anisotropic_pixels_are_explained_in_the_image_grid():
    """A slice stored with 2 mm rows and 1 mm columns: the lesion looks squashed in pixels; with its
    spacing the model sees it round, and the map comes back onto the squashed lesion."""
    t = trained("vpt-shallow", "test-vit-tiny")
    image, lesion = lesion_image((64, 64), (40, 22), (13, 12), seed=3)
    squashed, squashed_lesion = image[::2], lesion[::2]  # (32, 64) pixels of 2 mm x 1 mm
    e = explain(t.model, squashed, spacing=(2.0, 1.0), target=STRIPED)
    assert e.heatmap.shape == (32, 64) and e.geometry.content == (64, 64)
    peak = np.unravel_index(np.argmax(e.heatmap), e.heatmap.shape)
    assert squashed_lesion[peak], f"peak {peak}"


def test_mask_methods_show_the_models_map_not_the_mask():
    """The old behaviour multiplied the map by the mask (outside <= 0.3) and replaced a flat map by the
    mask. Now: a mask much larger than the lesion leaves the peak on the lesion inside it, and the map
    is the same function of the model as for any method."""
    t = trained("mask-guided-clip", "test-vit-tiny", MASK_GUIDED)
    image, lesion = lesion_image((64, 40), (44, 14), (12, 11), seed=1)
    big = np.zeros_like(lesion)
    big[20:, :] = True  # the lesion and a lot of background
    e = explain(t.model, image, big, target=STRIPED)
    assert lesion[np.unravel_index(np.argmax(e.heatmap), lesion.shape)]
    spec = Preprocess.from_backbone(t.model.backbone)
    x = images_to_tensor([image], spec)
    m = masks_to_tensor([big], [image], spec)
    raw, _, _ = raw_localization(t.model, x[0], m[0], STRIPED)
    top, left = e.geometry.offset
    h, w = e.geometry.content
    raw = raw[top : top + h, left : left + w].numpy()
    raw = (raw - raw.min()) / (raw.max() - raw.min())
    np.testing.assert_allclose(e.heatmap, raw, atol=1e-5)  # nothing blended in
    with pytest.raises(MissingMaskError, match="needs a mask"):
        explain(t.model, image)
    with pytest.raises(MissingMaskError, match="needs a mask"):
        localization_map(t.model, x[0])


def _trainable_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}


def test_explaining_while_training_in_another_thread_leaves_training_untouched():
    """Same seed, same data: the weights after training are bit-identical whether or not the model
    was explained (and predicted) from another thread meanwhile; nothing is left patched."""
    from napari_medprompt.train.predict import predict

    bb = backbone("test-vit-tiny")
    data, test = task()
    attn_before = [dict(blk.attn.__dict__) for blk in bb.blocks()]

    def fresh():
        torch.manual_seed(0)
        return method_class("vpt-shallow")(bb, data.classes)

    alone = fresh()
    train(alone, data, epochs=4)
    reference = _trainable_state(alone)

    model = fresh()
    started, done = threading.Event(), threading.Event()
    errors = []

    def run():
        try:
            started.set()
            train(model, data, epochs=4)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)
        finally:
            done.set()

    worker = threading.Thread(target=run)
    worker.start()
    started.wait()
    overlapped = 0
    while not done.is_set():
        explain(model, test.images[0], target=STRIPED)
        predict(model, test.images[:2])
        overlapped += int(not done.is_set())
    worker.join()
    assert not errors, errors
    assert overlapped >= 1, "no explanation ran while the model was training"
    after = _trainable_state(model)
    assert after.keys() == reference.keys()
    for k in reference:
        assert torch.equal(after[k], reference[k]), f"{k} differs from training without explanations"
    for mod in model.modules():
        assert "forward" not in mod.__dict__ and "feature_map" not in mod.__dict__
        assert not mod._forward_hooks and not mod._forward_pre_hooks
    assert [dict(blk.attn.__dict__) for blk in bb.blocks()] == attn_before


@pytest.mark.parametrize(
    "name,bb_name,options",
    [
        ("vpt-deep", "test-vit-tiny", {}),
        ("segprompt", "test-vit-tiny", {}),
        ("visual-prompt", "test-vit-tiny", {}),
        ("movl", "test-resnet", {}),
        ("mask-guided-clip", "test-resnet", {}),
        ("mask-guided-clip", "test-vit-tiny", {}),
        ("mask-guided-clip", "test-vit-tiny", {"guidance": "overlay", "attention_bias": "restrict", "n_prompts": 2}),
    ],
)
def test_every_method_gets_a_map_aligned_with_its_input(name, bb_name, options):
    bb = backbone(bb_name)
    torch.manual_seed(0)
    model = method_class(name)(bb, ["smooth", "striped"], **options)
    image, lesion = lesion_image((64, 64), (30, 30), (12, 12))
    spec = Preprocess.from_backbone(bb)
    x, m = images_to_tensor([image], spec), masks_to_tensor([lesion], [image], spec)
    with torch.no_grad():
        before = model(x, m)
    maps = [localization_map(model, x[0], m[0], target=c) for c in (0, 1)]
    for cam in maps:
        assert cam.shape == (bb.image_size, bb.image_size) and cam.dtype == np.float32
        assert cam.min() >= 0 and cam.max() <= 1
    # Grad-CAM is all zeros for a class with no positive evidence in the image (ReLU); not both
    assert any(cam.max() == pytest.approx(1.0) and cam.min() == 0 for cam in maps)
    assert not np.allclose(maps[0], maps[1]), "the map must depend on the explained class"
    with torch.no_grad():  # nothing was patched or hooked on the model
        torch.testing.assert_close(model(x, m), before, rtol=0, atol=0)
    for mod in model.modules():
        assert "forward" not in mod.__dict__ and not mod._forward_hooks and not mod._forward_pre_hooks
    model.train()  # the training mode is left as it was
    localization_map(model, x[0], m[0])
    assert model.training and not bb.training


def test_resize_map_back_to_the_original_image():
    cam = np.zeros((64, 64), np.float32)
    cam[16:32, 16:32] = 1.0
    out = resize_map(cam, (200, 120))
    assert out.shape == (200, 120) and out.min() >= 0 and out.max() <= 1
    assert out[75, 45] == pytest.approx(1.0) and out[190, 110] == pytest.approx(0.0)


def test_attention_recorder_computes_the_same_attention_and_restores_the_modules():
    """nn.MultiheadAttention (CLIP): a hook recomputes it explicitly; timm: the fused kernel is switched
    off. Same outputs, the probabilities recorded, no forward replaced, everything restored."""
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
            assert "forward" not in block.attn.__dict__
            xg = x.clone().requires_grad_(True)
            recorded = block(xg, attn_mask=mask)
        finally:
            rec.close()
        torch.testing.assert_close(recorded, plain, rtol=1e-5, atol=1e-5)
        assert len(rec.store) == 1 and rec.store[0].shape == (2, 2, 5, 5)
        torch.testing.assert_close(rec.store[0].sum(-1), torch.ones(2, 2, 5))
        (g,) = torch.autograd.grad(recorded.sum(), rec.store)  # the output depends on what was recorded
        assert g.abs().sum() > 0
        assert "forward" not in block.attn.__dict__ and not block.attn._forward_hooks
        assert getattr(block.attn, "fused_attn", None) == fused_before
