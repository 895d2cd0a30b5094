"""VLSM-Adapter on the real CLIPSeg rd64-refined config (random weights): sizes, exactness, errors."""

import pytest
import torch

from napari_medprompt.seg_adapters.clipseg import SegAdapterError, check_base_name, clipseg_rd64_refined_config
from napari_medprompt.seg_adapters.vlsm import DecoderFinetune, VLSMAdapter

from .conftest import SIZE

# SEG_ADAPTERS.md A4 (measured on the checkpoint's config); shallow VLC = the paper's "SA 4.2M"
EXPECTED = {
    "vlsm-dense-v": 1_784_448, "vlsm-dense-vl": 2_974_464, "vlsm-dense-vlc": 3_237_376,
    "vlsm-shallow-v": 2_363_136, "vlsm-shallow-vl": 3_939_072, "vlsm-shallow-vlc": 4_201_984,
}


def test_real_config_is_not_the_default():
    from transformers import CLIPSegConfig

    cfg, default = clipseg_rd64_refined_config(), CLIPSegConfig()
    assert cfg.vision_config.patch_size == 16 and default.vision_config.patch_size == 32
    assert cfg.use_complex_transposed_convolution and cfg.text_config.eos_token_id == 2


def test_base_has_checkpoint_size_and_is_frozen(base):
    assert sum(p.numel() for p in base.model.parameters()) == 150_747_746
    assert not any(p.requires_grad for p in base.model.parameters())
    assert base.random_weights


@pytest.mark.parametrize("method", sorted(EXPECTED))
def test_trainable_parameter_counts(base, method):
    m = VLSMAdapter(base, ["disk"], method=method, image_size=SIZE)
    try:
        assert m.num_trainable() == EXPECTED[method]
        assert all(n.startswith("adapters.") for n, p in m.named_parameters() if p.requires_grad)
    finally:
        m.remove_hooks()


@pytest.mark.parametrize("method", ["vlsm-dense-vlc", "vlsm-dense-v", "vlsm-shallow-v"])
def test_neutralised_adapters_give_stock_clipseg_exactly(base, method):
    m = VLSMAdapter(base, ["disk"], method=method, image_size=SIZE).eval()
    try:
        x = torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        prompts = ["liver", "the left kidney"]
        with torch.no_grad():
            stock = base.stock_logits(x, prompts)  # hooks attached: adapters at default init change it
            m.hooks_enabled = False
            plain = base.stock_logits(x, prompts)
            m.hooks_enabled = True
            before = m.seg_logits(x, prompts)
            m.neutralise()
            after = m.seg_logits(x, prompts)
        assert (after - plain).abs().max().item() == 0.0
        assert (before - plain).abs().max().item() > 1e-4  # the un-neutralised adapters do act
        if method.startswith("vlsm-dense"):
            assert (stock - plain).abs().max().item() > 1e-4  # hooks act inside the stock forward too
    finally:
        m.remove_hooks()


def test_shallow_cached_path_equals_direct_path(base):
    m = VLSMAdapter(base, ["disk"], method="vlsm-shallow-vlc", image_size=SIZE).eval()
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        direct = m.seg_logits(x, ["disk", "blob", "disk"])
        cached = m.seg_logits_from_features(m.encode_for_cache(x), ["disk", "blob", "disk"])
    assert torch.allclose(direct, cached, atol=1e-5, rtol=0)  # stacked cache: other memory layout, same math


def test_gradients_reach_dense_adapters_through_the_encoders(base):
    m = VLSMAdapter(base, ["disk"], method="vlsm-dense-vl", image_size=SIZE)
    try:
        x = torch.randn(2, 3, SIZE, SIZE)
        m.seg_logits(x, ["disk", "blob"]).sum().backward()
        first_v = m.adapters["v_attn"][0].fc1.weight.grad
        first_l = m.adapters["l_mlp"][0].fc1.weight.grad
        assert first_v is not None and first_v.abs().sum() > 0
        assert first_l is not None and first_l.abs().sum() > 0
        assert all(p.grad is None for p in base.parameters())
    finally:
        m.remove_hooks()


def test_decoder_baseline_trains_only_the_decoder(base):
    d = DecoderFinetune(base, ["disk"], image_size=SIZE)
    try:
        assert d.num_trainable() == sum(p.numel() for p in base.model.decoder.parameters())
        assert not any(p.requires_grad for p in base.model.clip.parameters())
    finally:
        base.model.decoder.requires_grad_(False)


def test_bad_input_messages(base):
    with pytest.raises(SegAdapterError, match="too long"):
        base.tokenize(["liver " * 80])
    with pytest.raises(SegAdapterError, match="empty text prompt"):
        base.tokenize(["  "])
    with pytest.raises(SegAdapterError, match="another"):
        check_base_name("ViT-L-14")
    with pytest.raises(SegAdapterError, match="adapts CLIPSeg"):
        VLSMAdapter(torch.nn.Linear(2, 2), [], method="vlsm-dense-v")
    first = VLSMAdapter(base, [], method="vlsm-dense-v", image_size=SIZE)
    try:
        with pytest.raises(SegAdapterError, match="already carries vlsm-dense-v adapters"):
            VLSMAdapter(base, [], method="vlsm-dense-vl", image_size=SIZE)
    finally:
        first.remove_hooks()
    VLSMAdapter(base, [], method="vlsm-dense-vl", image_size=SIZE).remove_hooks()  # free again
