"""The seed methods in the form their docstrings claim (SegPrompt, mask-guided CLIP / MedFocusCLIP, MoVL).

- SegPrompt (default): segmentation tokens are a stream of their own, concatenated to the sequence
  with their own trainable position embeddings; the additive form is a named option.
- mask-guided CLIP (default): the encoder sees the segmented image (pixel-wise attention), the mask
  changes the logits, the loss is lambda*CE(class) + (1-lambda)*CE(alignment), and the cached path
  (encoder once per image) gives the forward's logits.
- MoVL: loss = CE + 0.1 * mean(1 - cos(f(x+p), f(x))) computed by hand.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import method_class

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return create_backbone("test-vit-tiny")


def _batch(bb, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    s = bb.image_size
    x = torch.randn(b, 3, s, s, generator=g)
    m = torch.zeros(b, 1, s, s)
    m[0, :, : s // 2, : s // 2] = 1  # top-left quadrant
    m[1:, :, s // 2 :, s // 4 : 3 * s // 4] = 1
    return x, m


def _first_block_inputs(bb, fn):
    seen = []
    hook = bb.blocks()[0].register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach()))
    try:
        with torch.no_grad():
            fn()
    finally:
        hook.remove()
    return seen[0]


def test_segprompt_segmentation_tokens_are_their_own_stream(vit):
    bb = vit
    from napari_medprompt.classify.methods.segprompt import pre_norm

    n, N = 3, bb.grid_size**2
    sp = method_class("segprompt")(bb, ["a", "b"], n_prompts=n)
    x, m = _batch(bb)
    with torch.no_grad():  # the tokenizer starts at zero (the mask enters as training reads it)
        torch.testing.assert_close(sp.mask_tokens(m), pre_norm(bb)(sp.seg_pos_embed).expand(2, -1, -1))
        sp.mask_tokenizer.weight.normal_(0, 0.3)  # as after training
    t = _first_block_inputs(bb, lambda: sp(x, m))
    with torch.no_grad():
        tokens = bb.tokens(x)
        seg = sp.mask_tokens(m)
    assert t.shape[1] == 1 + n + 2 * N  # the sequence grows by the N segmentation tokens
    torch.testing.assert_close(t[:, 0], tokens[:, 0])
    torch.testing.assert_close(t[:, 1 : 1 + n], sp.prompts[0].expand(2, -1, -1))
    torch.testing.assert_close(t[:, 1 + n : 1 + n + N], seg)  # tokenised mask + its own position embeddings
    torch.testing.assert_close(t[:, 1 + n + N :], tokens[:, 1:])  # image patches untouched, last N
    # own position embeddings: trainable, initialised at the image patches' positions
    assert sp.seg_pos_embed.requires_grad and sp.seg_pos_embed.shape == (N, bb.width)
    torch.testing.assert_close(sp.seg_pos_embed.detach(), bb.model.visual.positional_embedding[1:].detach().float())
    # segmentation and image tokens attend to each other; the class token and prompts read the image
    # stream (not the segmentation tokens directly)
    with torch.no_grad():
        attn = bb.attention(bb.blocks()[0], t, sp.attention_bias(t, n + N))  # (B, heads, T, T)
    seg = slice(1 + n, 1 + n + N)
    assert float(attn[:, :, : 1 + n, seg].sum(-1).max()) < 1e-6
    assert float(attn[:, :, 1 + n + N :, seg].sum(-1).min()) > 1e-3  # image -> segmentation
    assert float(attn[:, :, seg, 1 + n + N :].sum(-1).min()) > 1e-3  # segmentation -> image
    # the image tokens read the mask through attention: another mask, other logits
    with torch.no_grad():
        assert (sp(x, m) - sp(x, m.flip(-1))).abs().max() > 1e-4


def test_segprompt_trains_its_tokens_and_never_the_backbone(vit):
    bb = vit
    before = bb.state_hash()
    sp = method_class("segprompt")(bb, ["a", "b"])
    names = {k.split(".")[0] for k, p in sp.named_parameters() if p.requires_grad}
    assert names == {"mask_tokenizer", "seg_pos_embed", "prompts", "classifier"}
    opt = torch.optim.SGD(sp.trainable_parameters(), lr=0.5)
    pos0 = sp.seg_pos_embed.detach().clone()
    x, m = _batch(bb)
    loss, _ = sp.training_loss(x, m, torch.tensor([0, 1]))
    loss.backward()
    opt.step()
    assert (sp.seg_pos_embed.detach() - pos0).abs().max() > 0  # the position embeddings learn
    assert bb.state_hash() == before and not any(p.requires_grad for p in bb.parameters())


def test_segprompt_additive_variant_keeps_the_sequence_length(vit):
    bb = vit
    sp = method_class("segprompt")(bb, ["a", "b"], mask_fusion="add", n_prompts=0)
    x, m = _batch(bb)
    t = _first_block_inputs(bb, lambda: sp(x, m))
    assert t.shape[1] == 1 + bb.grid_size**2 and sp.seg_pos_embed is None
    with torch.no_grad():  # zero-initialised tokenizer: starts exactly at the frozen backbone
        torch.testing.assert_close(t, bb.tokens(x))


def test_mask_guided_default_feeds_the_segmented_image(vit):
    from napari_medprompt.classify.methods.mask_guided import segment_normalised

    bb = vit
    mg = method_class("mask-guided-clip")(bb, ["a", "b"])
    assert mg.method_config()["guidance"] == "segment" and mg.method_config()["head"] == "fusion"
    assert mg.cached_features
    mean, std = torch.tensor(bb.mean).view(1, 3, 1, 1), torch.tensor(bb.std).view(1, 3, 1, 1)
    rgb = torch.rand(3, 3, 16, 16)
    m = (torch.rand(3, 1, 16, 16) > 0.5).float()
    m[2] = 0  # an empty mask: the image is left as it is
    out = segment_normalised((rgb - mean) / std, m, 0.25, bb.mean, bb.std) * std + mean
    expected = rgb * (m + (1 - m) * 0.25)
    expected[2] = rgb[2]
    torch.testing.assert_close(out, expected)

    x, mk = _batch(bb)
    seen = []
    orig = bb.encode_image
    bb.encode_image = lambda im: (seen.append(im.detach()), orig(im))[1]
    try:
        with torch.no_grad():
            a = mg(x, mk)
            b = mg(x, mk.flip(-1))
    finally:
        del bb.encode_image
    torch.testing.assert_close(seen[0], segment_normalised(x, mk, 0.0, bb.mean, bb.std))
    assert (a - b).abs().max() > 1e-4  # the mask decides what the encoder sees


def test_mask_guided_loss_is_the_weighted_classification_plus_alignment(vit):
    bb = vit
    mg = method_class("mask-guided-clip")(bb, ["a", "b", "c"], loss_weight=0.3)
    x, m = _batch(bb, 3)
    y = torch.tensor([0, 2, 1])
    with torch.no_grad():
        f = mg.encode_for_cache(x, m)
        mg.prepare(f, y)
        loss, logits = mg.training_loss(x, m, y)
        head = mg.classifier
        fu = f / f.norm(dim=-1, keepdim=True)
        t = head.text / head.text.norm(dim=-1, keepdim=True)
        align = head.logit_scale * fu @ t.t()
        ctx = align.softmax(-1) @ t
        cls_logits = head.fc(torch.cat([(f - head.scaler.mean) / head.scaler.std, ctx], -1))
        expected = 0.3 * F.cross_entropy(cls_logits, y) + 0.7 * F.cross_entropy(align, y)
    torch.testing.assert_close(logits, cls_logits)
    torch.testing.assert_close(loss, expected)


def test_mask_guided_cached_path_matches_the_forward_and_encodes_each_image_once(vit):
    from napari_medprompt.train.loop import TrainConfig, train_iter
    from tests.classify.prompt_training import task

    bb = vit
    mg = method_class("mask-guided-clip")(bb, ["a", "b"])
    x, m = _batch(bb)
    with torch.no_grad():
        torch.testing.assert_close(mg.forward_features(mg.encode_for_cache(x, m)), mg(x, m))
    data, _ = task()
    model = method_class("mask-guided-clip")(bb, data.classes)
    calls = []
    orig = bb.encode_image
    bb.encode_image = lambda im: (calls.append(len(im)), orig(im))[1]
    try:
        events = list(train_iter(TrainConfig(method=model.name, backbone=bb.name, epochs=3, batch_size=8, patience=0), data, model))
    finally:
        del bb.encode_image
    assert events[0].metrics["cached_features"] is True
    assert sum(calls) == len(data.labels)  # the encoder ran once per image (train + validation)
    assert events[-1].kind == "done"


def test_movl_loss_is_cross_entropy_plus_its_documented_discrepancy(vit):
    bb = vit
    movl = method_class("movl")(bb, ["a", "b"])
    assert movl.method_config()["discrepancy_weight"] == 0.1 and movl.method_config()["init_std"] == 0.0
    assert all(float(p.abs().sum()) == 0 for p in movl.prompter.parameters())  # starts as the plain linear probe
    with torch.no_grad():
        movl.prompter.pad_left.add_(0.5)
    x, _ = _batch(bb, 3)
    y = torch.tensor([1, 0, 1])
    loss, logits = movl.training_loss(x, None, y)
    with torch.no_grad():
        fp, f0 = bb.encode_image(movl.prompter(x)), bb.encode_image(x)
        cos = (fp * f0).sum(-1) / (fp.norm(dim=-1) * f0.norm(dim=-1))
        logp = (logits - logits.logsumexp(-1, keepdim=True)).gather(1, y[:, None]).squeeze(1)
        expected = -logp.mean() + 0.1 * (1 - cos).mean()
    assert float((1 - cos).mean()) > 1e-4
    torch.testing.assert_close(loss.detach(), expected)
