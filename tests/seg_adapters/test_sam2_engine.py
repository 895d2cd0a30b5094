"""MedSAM2 checkpoints as SAM2 model choices, and adapters in the segmentation engine: saved adapters
reload and give the same masks, switching back to the base model is one call, mismatches are refused.

The MedSAM2 checkpoint is one we write ourselves from a random-init SAM2.1-tiny in MedSAM2's format
(``{"model": state_dict, "epoch", "steps"}``, as its trainer saves them): no weights can be downloaded
here. The engine runs MedSAM2 at its own 512 px.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.seg_adapters.sam2_synthetic import torch

from napari_medprompt.models.sam2_weights import CheckpointError, build_model, resolve_checkpoint, write_random_checkpoint
from napari_medprompt.seg_adapters.pairs import SimPrompt
from napari_medprompt.seg_adapters.sam2_engine import save_adapter, use_store_version
from napari_medprompt.seg_adapters.sam2_model import AdapterMismatch, Sam2AdapterModel, Sam2Base

MEDSAM2 = "medsam2-latest"


@pytest.fixture(scope="module")
def medsam2_file(tmp_path_factory):
    return write_random_checkpoint(MEDSAM2, tmp_path_factory.mktemp("medsam2") / "MedSAM2_latest.pt")


def _ct_slice():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :80]
    organ = ((yy - 50) / 22) ** 2 + ((xx - 38) / 16) ** 2 <= 1
    return (rng.normal(-50, 30, (96, 80)) + 120 * organ).astype(np.int16), organ


def test_medsam2_checkpoint_loads_through_the_weight_cache(medsam2_file, tmp_path, monkeypatch):
    from tests.segment.sam2_support import install_in_hf_cache

    from napari_medprompt.segment import create_segmenter

    raw = torch.load(medsam2_file, weights_only=True)
    assert set(raw) >= {"model", "epoch", "steps"}  # MedSAM2's trainer layout
    monkeypatch.setenv("MEDPROMPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import tests.segment.sam2_support as support

    monkeypatch.setitem(support._CKPT, MEDSAM2, medsam2_file)
    install_in_hf_cache(tmp_path, MEDSAM2)
    path = resolve_checkpoint(MEDSAM2)
    assert path.name == "MedSAM2_latest.pt" and "wanglab--MedSAM2" in str(path)
    seg = create_segmenter(MEDSAM2, device="cpu", encoder_bf16=False, decoder_bf16=False)
    assert seg.net.image_size == 512 and seg.random_weights  # said everywhere: random test weights
    assert "RANDOM" in seg.weights_status()["message"]
    img, organ = _ct_slice()
    seg.bind(img, modality="CT")
    assert seg.window == (-160.0, 240.0)  # MedSAM2's CT convention: level 40 / width 400
    assert seg.window_convention == "medsam2"
    from napari_medprompt.segment.base import Prompt

    res = seg.predict(0, Prompt(box=(28, 22, 72, 54)))
    assert res.mask.shape == img.shape


def test_a_file_that_is_not_medsam2_is_refused_clearly(tmp_path):
    medsam_v1 = tmp_path / "medsam_vit_b.pth"
    torch.save({"image_encoder.blocks.0.attn.qkv.weight": torch.zeros(3, 3)}, medsam_v1)
    with pytest.raises(CheckpointError, match=r"not a MedSAM2 checkpoint.*SAM / MedSAM ViT"):
        build_model(MEDSAM2, medsam_v1)
    foreign = tmp_path / "other.pt"
    torch.save({"model": {"head.weight": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="not a MedSAM2 checkpoint"):
        build_model(MEDSAM2, foreign)
    junk = tmp_path / "MedSAM2_latest.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read"):
        build_model(MEDSAM2, junk)


def test_adapter_reloads_into_the_engine_with_the_same_masks(medsam2_file, tmp_path):
    from napari_medprompt.segment.base import Prompt
    from napari_medprompt.segment.sam2_backend import Sam2Segmenter
    from napari_medprompt.train.store import ModelStore

    seg = Sam2Segmenter(MEDSAM2, checkpoint=medsam2_file, device="cpu", encoder_bf16=False, decoder_bf16=False)
    img, organ = _ct_slice()
    seg.bind(img, modality="CT")
    box = (28.0, 22.0, 72.0, 54.0)
    m0 = seg.predict(0, Prompt(box=box)).mask
    enc0 = seg.encoder_calls

    # an adapted model on the engine's own network, its weights moved away from zero (as by training)
    model = Sam2AdapterModel(Sam2Base(seg.net, MEDSAM2, medsam2_file, True), "sam2-adapter-decoder")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.requires_grad and (name.startswith("adapters.") and ".up." in name or name.startswith("decoder.output_hyper")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    expected = model.predict_mask(img, seg.window, SimPrompt(box, np.zeros((0, 2)), np.zeros(0, int)))
    path = save_adapter(model, tmp_path / "liver-adapter.safetensors", metrics={"val": {"dice": 0.5}})
    model.detach_adapters()

    info = seg.use_adapter(path)
    assert info["method"] == "sam2-adapter-decoder" and seg.weights_status()["adapter"] == info
    m1 = seg.predict(0, Prompt(box=box)).mask
    assert seg.encoder_calls == enc0 + 1  # the base embedding is not served to the adapted model
    assert not np.array_equal(m1, m0)  # the adapter changes the answer...
    assert (m1 == expected).mean() > 0.999  # ...to what the adapted model computes

    assert seg.use_adapter(None) is None  # one call back to the base model
    assert np.array_equal(seg.predict(0, Prompt(box=box)).mask, m0)
    assert seg.weights_status()["adapter"] is None

    seg.use_adapter(model)  # the in-memory model gives the same masks as its saved file
    assert np.array_equal(seg.predict(0, Prompt(box=box)).mask, m1)
    seg.use_adapter(None)

    # versioned in the model store: the record names the base model and its checkpoint's hash
    store = ModelStore(tmp_path / "store")
    vid = store.add(model, preprocess=model.preprocess, metrics={"val": {"dice": 0.5}})
    rec = store.get(vid)
    assert rec["method"] == "sam2-adapter-decoder" and rec["backbone"]["name"] == MEDSAM2
    assert rec["backbone"]["pretrained"] == model.backbone.pretrained
    assert rec["backbone"]["pretrained"].startswith("sha256:") and rec["backbone"]["state_hash"]
    use_store_version(seg, store, vid)
    assert np.array_equal(seg.predict(0, Prompt(box=box)).mask, m1)
    assert seg.adapter_info["store_version"] == vid
    seg.use_adapter(None)

    # an adapter for another base model, or another checkpoint of the same model: refused, nothing changed
    other_file = tmp_path / "MedSAM2_2411.pt"
    sd = torch.load(medsam2_file, weights_only=True)
    sd["model"]["sam_mask_decoder.iou_token.weight"] += 1.0
    torch.save(sd, other_file)
    other = Sam2Segmenter(MEDSAM2, checkpoint=other_file, device="cpu")
    with pytest.raises(AdapterMismatch, match="another checkpoint of medsam2-latest"):
        other.use_adapter(path)
    assert other.weights_status()["adapter"] is None
    tiny = Sam2Segmenter("sam2.1-hiera-tiny", checkpoint="random", device="cpu")
    with pytest.raises(AdapterMismatch, match="trained on SAM2 model 'medsam2-latest'.*'sam2.1-hiera-tiny'"):
        tiny.use_adapter(path)


def test_medsam2_siblings_are_model_choices_with_their_files(monkeypatch):
    from napari_medprompt.models.cache import WeightsUnavailable
    from napari_medprompt.models.sam2_weights import MEDSAM2_MODELS, model_spec
    from napari_medprompt.segment import available_segmenters

    files = {s.filename for s in MEDSAM2_MODELS.values()}
    assert files == {"MedSAM2_latest.pt", "MedSAM2_2411.pt", "MedSAM2_CTLesion.pt", "MedSAM2_MRI_LiverLesion.pt",
                     "MedSAM2_US_Heart.pt"}
    assert set(MEDSAM2_MODELS) <= set(available_segmenters())
    for name in MEDSAM2_MODELS:
        spec = model_spec(name)
        assert (spec.repo_id, spec.image_size, spec.window_convention) == ("wanglab/MedSAM2", 512, "medsam2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable, match="MedSAM2_US_Heart.pt from wanglab/MedSAM2"):
        resolve_checkpoint("medsam2-us-heart")
