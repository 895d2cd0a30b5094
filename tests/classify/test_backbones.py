"""Backbones: the ViT token API reproduces encode_image, weights load from local files, frozen, seeded."""

from __future__ import annotations

import logging

import pytest

import torch  # noqa: E402  (a hard dependency: a broken install must fail, not skip)

from napari_medprompt.classify.backbones.registry import create_backbone  # noqa: E402
from napari_medprompt.models.cache import WeightsUnavailable  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def vit():
    return create_backbone("test-vit-tiny")


def test_token_api_reproduces_encode_image(vit):
    x = torch.randn(2, 3, vit.image_size, vit.image_size)
    with torch.no_grad():
        ref = vit.encode_image(x)
        t = vit.tokens(x)
        assert t.shape == (2, 1 + vit.grid_size**2, vit.width)
        for blk in vit.blocks():
            t = vit.run_block(blk, t)
        out = vit.head(t)
    assert out.shape == (2, vit.embed_dim)
    torch.testing.assert_close(out, ref)


def test_attention_bias_changes_the_class_token_and_attention_rows_sum_to_one(vit):
    x = torch.randn(2, 3, vit.image_size, vit.image_size)
    T = 1 + vit.grid_size**2
    bias = torch.zeros(2, vit.num_heads, T, T)
    bias[:, :, 0, 1 : T // 2] = -1e4  # class token may not look at the first half of the patches
    with torch.no_grad():
        plain, biased = vit.tokens(x), vit.tokens(x)
        for blk in vit.blocks():
            plain, biased = vit.run_block(blk, plain), vit.run_block(blk, biased, bias)
        assert (vit.head(plain) - vit.head(biased)).abs().max() > 1e-3
        att = vit.attention(vit.blocks()[0], vit.tokens(x), bias)
    assert att.shape == (2, vit.num_heads, T, T)
    torch.testing.assert_close(att.sum(-1), torch.ones(2, vit.num_heads, T))
    assert att[:, :, 0, 1 : T // 2].max() < 1e-6


def test_frozen_random_weights_flagged_and_seeded(vit, caplog):
    assert vit.random_weights and vit.pretrained == "random"
    assert not any(p.requires_grad for p in vit.parameters())
    assert not vit.training
    with caplog.at_level(logging.WARNING):
        again = create_backbone("test-vit-tiny")
    assert "RANDOM weights" in caplog.text
    assert again.state_hash() == vit.state_hash()
    assert create_backbone("test-vit-tiny", init_seed=1).state_hash() != vit.state_hash()


def test_text_tower(vit):
    with torch.no_grad():
        t = vit.encode_text(["a radiology image of pneumonia", "normal"])
    assert t.shape == (2, vit.embed_dim)


def test_local_safetensors_checkpoint_loads_with_weights(vit, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.clone() + 0.01 for k, v in vit.model.state_dict().items()}
    path = tmp_path / "tiny.safetensors"
    save_file(sd, str(path))
    bb = create_backbone("test-vit-tiny", pretrained=str(path))
    assert not bb.random_weights and bb.pretrained == str(path)
    torch.testing.assert_close(bb.model.state_dict()["visual.proj"], sd["visual.proj"])


def test_unknown_tag_and_offline_weights_give_clear_errors():
    with pytest.raises(ValueError, match="neither a pretrained tag"):
        create_backbone("test-vit-tiny", pretrained="no-such-tag")
    with pytest.raises(WeightsUnavailable, match="offline|local checkpoint"):
        create_backbone("ViT-B-16")  # HF_HUB_OFFLINE=1 in tests: the openai weights are not cached


def test_resnet_feature_map_pool_and_local_weights(tmp_path):
    r = create_backbone("test-resnet")
    x = torch.randn(2, 3, r.image_size, r.image_size)
    with torch.no_grad():
        fmap = r.feature_map(x)
        torch.testing.assert_close(r.pool(fmap), r.encode_image(x))
    assert fmap.shape[:2] == (2, r.embed_dim)
    assert r.mean == (0.485, 0.456, 0.406) and r.kind == "cnn"
    sd = {k: v + 0.5 if v.is_floating_point() else v for k, v in r.model.state_dict().items()}
    torch.save(sd, tmp_path / "r.pt")
    r2 = create_backbone("test-resnet", pretrained=str(tmp_path / "r.pt"))
    assert not r2.random_weights
    torch.testing.assert_close(r2.model.conv1.weight, sd["conv1.weight"])
    with pytest.raises(ValueError, match="cannot read weights"):
        (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
        create_backbone("test-resnet", pretrained=str(tmp_path / "bad.pt"))


def test_hf_hub_model_offline_says_how_to_fix_it():
    with pytest.raises(WeightsUnavailable, match="Hugging Face hub.*offline"):
        create_backbone("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224")
