"""Hiera adapters on a random-init SAM2.1-tiny: parameter counts, zero-init identity, what trains."""

from __future__ import annotations

import pytest

from tests.seg_adapters.sam2_synthetic import TEST_SIZE, small_base, synthetic_pairs, torch

from napari_medprompt.seg_adapters.sam2_model import SAM2_METHODS, Sam2AdapterModel, pair_tensors


@pytest.fixture(scope="module")
def base():
    return small_base()


def test_trainable_parameter_counts_match_the_measured_design(base):
    # SEG_ADAPTERS.md B3: ratio 0.25 -> 2,306,544; fixed 64 -> 1,215,168; fixed 32 -> 612,288
    counts = {}
    for kwargs, want in (({}, 2_306_544), ({"width": 64}, 1_215_168), ({"width": 32}, 612_288)):
        m = Sam2AdapterModel(base, "sam2-adapter", **kwargs)
        counts[str(kwargs)] = m.num_trainable()
        m.detach_adapters()
        assert counts[str(kwargs)] == want
    dec = Sam2AdapterModel(base, "sam2-decoder")
    # the mask decoder (4,215,109) without conv_s0/conv_s1 (24,672), which run in the encoder path
    assert dec.num_trainable() == 4_190_437
    both = Sam2AdapterModel(base, "sam2-adapter-decoder")
    assert both.num_trainable() == 2_306_544 + 4_190_437
    both.detach_adapters()
    assert sum(p.numel() for p in base.net.parameters() if p.requires_grad) == 0  # the base stays frozen


def test_zero_init_adapters_reproduce_the_base_model_exactly(base):
    data = synthetic_pairs(2, seed=3)
    t = pair_tensors(data, TEST_SIZE)
    with torch.no_grad():
        emb0 = base.net.forward_image(t.x)["vision_features"]
    plain = Sam2AdapterModel(base, "sam2-decoder")  # no adapters: the base encoder, a decoder copy
    with torch.no_grad():
        logits0 = plain.seg_logits(t.x, plain.seg_prompts(t, torch.arange(2), None))
    model = Sam2AdapterModel(base, "sam2-adapter")
    with torch.no_grad():
        emb1 = base.net.forward_image(t.x)["vision_features"]
        logits1 = model.seg_logits(t.x, model.seg_prompts(t, torch.arange(2), None))
    assert torch.equal(emb0, emb1)  # bit for bit
    assert torch.equal(logits0, logits1)
    assert torch.equal(logits0 > 0, logits1 > 0)
    # the test can fail: a non-zero up projection changes the embeddings
    with torch.no_grad():
        model.adapters.blocks[11].attn.up.weight.normal_(0, 0.05)
        emb2 = base.net.forward_image(t.x)["vision_features"]
    assert not torch.equal(emb0, emb2)
    model.detach_adapters()  # the base model again
    with torch.no_grad():
        assert torch.equal(base.net.forward_image(t.x)["vision_features"], emb0)


@pytest.mark.parametrize("method", sorted(SAM2_METHODS))
def test_only_adapter_and_chosen_decoder_parameters_change(base, method):
    data = synthetic_pairs(4, seed=5)
    model = Sam2AdapterModel(base, method)
    t = pair_tensors(data, TEST_SIZE)
    before_base = {k: v.clone() for k, v in base.net.state_dict().items()}
    before_own = {k: v.clone() for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    feats = model.encode_for_cache(t.x) if model.cached_features else None
    model.train(True)
    for _ in range(2):
        idx = torch.tensor([0, 1])
        prompts = model.seg_prompts(t, idx, gen)
        logits = model.seg_logits_from_features(feats[idx], prompts) if feats is not None else model.seg_logits(t.x[idx], prompts)
        loss = model.loss_function()(logits, t.y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.detach_adapters()
    after_base = base.net.state_dict()
    assert all(torch.equal(before_base[k], after_base[k]) for k in before_base), "the frozen base changed"
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    changed = {k for k in own if not torch.equal(own[k], before_own[k])}
    assert any(k.startswith("adapters.") for k in changed) == SAM2_METHODS[method].adapters
    assert any(k.startswith("decoder.") for k in changed) == SAM2_METHODS[method].decoder
    assert not any(k.startswith(("decoder.conv_s0", "decoder.conv_s1")) for k in changed)
    assert changed <= {k for k in own if k.startswith(("adapters.", "decoder."))}
