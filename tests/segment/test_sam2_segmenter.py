"""SAM2 backend through the real sam2 code (SAM2.1-tiny config, random weights loaded from a real
checkpoint file): model input, coordinates, cache hits, disk cache, prefetch, propagation, stop rule.

The image encoder is the expensive part (~3 s per slice here), so one module-wide segmenter works on
a 4-slice 48 x 80 volume (not square: a height/width swap anywhere shows) and tests count encoder
calls instead of re-encoding. Model-window tests stop the encoder at its input (a hook) and assert on
the array handed to it.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from tests.segment.sam2_support import MODEL, checkpoint_file, torch

from napari_medprompt.segment import PropagationSettings, Prompt, PromptError, Segmenter
from napari_medprompt.segment.embedding_cache import prefetch_order
from napari_medprompt.segment.sam2_backend import Sam2Segmenter
from napari_medprompt.segment.sam2_decoder import channels_last, decode_masks, image_projections, mask_to_logits
from napari_medprompt.segment.sam2_video import memory_bank

H, W = 48, 80  # rows, columns: deliberately not square
CY, CX = 24, 46  # centre of the structure (row, col)


def _volume() -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = rng.normal(-80, 20, size=(4, H, W)).astype(np.int16)  # soft-tissue-ish background (HU)
    yy, xx = np.mgrid[:H, :W]
    for z, r in zip(range(1, 4), (14, 12, 9)):
        vol[z][(yy - CY) ** 2 + (xx - CX) ** 2 < r * r] = 250  # a bright, shrinking structure
    vol[0, :, : W // 2] = -1000  # slice 0: air | bone, to check the model window
    vol[0, :, W // 2 :] = 1000
    vol[0, : H // 4, :] = 40  # ... with a band of soft tissue across the top rows
    return vol


VOLUME = _volume()


def _disc(r: int = 12) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - CY) ** 2 + (xx - CX) ** 2 < r * r


@pytest.fixture(scope="module")
def seg():
    torch.set_num_threads(2)
    s = Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="cpu")
    s.bind(VOLUME, modality="CT", key="volume")
    return s


@pytest.fixture
def rebind(seg):
    yield
    seg.model_window, seg.display_preset = None, None
    seg.bind(VOLUME, modality="CT", key="volume")


def test_segmenter_protocol_and_status(seg):
    assert isinstance(seg, Segmenter)
    st = seg.weights_status()
    assert st["model"] == MODEL and st["random_weights"] is True and st["device"] == "cpu"  # flagged test file
    assert st["checkpoint"] == str(checkpoint_file())
    assert seg.resolved_mode() == "projection"  # auto on a CPU
    assert seg.resolved_mode("memory") == "memory"
    with pytest.raises(PromptError, match="unknown propagation mode"):
        seg.resolved_mode("sideways")


def test_model_input_is_the_windowed_slice_and_the_layer_is_untouched(seg):
    before = VOLUME.copy()
    seen = []
    handle = seg.net.image_encoder.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    try:
        calls = seg.encoder_calls
        seg.predict(0, Prompt(points=[[10, 10]], labels=[1]))
    finally:
        handle.remove()
    assert seg.encoder_calls == calls + 1 and len(seen) == 1
    x = seen[0]
    assert x.shape == (1, 3, 1024, 1024) and x.dtype == torch.float32
    # default model window = the display's default CT preset, soft tissue (level 40 / width 400):
    # -1000 HU -> 0, +1000 HU -> 1, 40 HU -> 0.5, then SAM2's ImageNet normalisation
    assert seg.window == (-160.0, 240.0)
    np.testing.assert_allclose(x[0, :, 700, 100].numpy(), (0 - MEAN) / STD, rtol=1e-5)
    np.testing.assert_allclose(x[0, :, 700, 900].numpy(), (1 - MEAN) / STD, rtol=1e-5)
    np.testing.assert_allclose(x[0, :, 100, 500].numpy(), (0.5 - MEAN) / STD, rtol=1e-5)  # top rows
    np.testing.assert_array_equal(VOLUME, before)
    assert seg._image is VOLUME  # bound by reference, never copied or rewritten


MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


class _Stop(Exception):
    pass


def _encoder_input(seg, z: int) -> np.ndarray:
    """The array SAM2's image encoder gets for slice ``z`` (the hook stops it there: no compute)."""
    seen = []

    def hook(_module, args):
        seen.append(args[0].detach().clone())
        raise _Stop

    handle = seg.net.image_encoder.register_forward_pre_hook(hook)
    try:
        with pytest.raises(_Stop):
            seg._encode(z)
    finally:
        handle.remove()
    return seen[0][0, 0].numpy() * STD[0] + MEAN[0]  # back to the [0, 1] windowed slice (channel 0)


def test_the_model_sees_the_display_preset_and_the_hu_are_never_touched(seg, rebind):
    before = VOLUME.copy()
    soft = _encoder_input(seg, 0)
    assert seg.set_model_window(display_preset="lung") == (-1350.0, 150.0)  # level -600 / width 1500
    lung = _encoder_input(seg, 0)
    # air (-1000 HU) is black through the soft-tissue window but grey through the lung window
    assert soft[700, 100] == pytest.approx(0.0, abs=1e-4)
    assert lung[700, 100] == pytest.approx(350 / 1500, abs=1e-3)
    assert lung[100, 500] == pytest.approx(1390 / 1500, abs=1e-3)  # 40 HU
    assert not np.allclose(soft, lung)
    np.testing.assert_array_equal(VOLUME, before)
    assert seg._image is VOLUME
    info = seg.weights_status()["model_window"]
    assert info["window"] == [-1350.0, 150.0] and info["source"] == "display preset 'lung'"
    assert seg.provenance_info()["model_window"]["display_preset"] == "lung"


def test_an_explicit_model_window_wins_over_the_display(seg, rebind):
    assert seg.set_model_window("bone", display_preset="lung") == (-500.0, 1300.0)
    assert seg.set_model_window(display_preset="brain") == (-500.0, 1300.0)  # display changes: not followed
    assert seg.model_window_info()["source"] == "preset 'bone'"
    assert seg.set_model_window((-100, 100)) == (-100.0, 100.0)
    assert seg.set_model_window("display") == (0.0, 80.0)  # back to following the display (brain)
    with pytest.raises(PromptError, match="unknown model window"):
        seg.set_model_window("sideways")
    with pytest.raises(PromptError, match="low < high"):
        seg.set_model_window((5, 5))
    assert seg.window == (0.0, 80.0)  # a refused choice changes nothing


def test_changing_the_window_never_serves_embeddings_of_another_window(seg, rebind):
    seg.features(2)  # soft-tissue window
    sig_soft = seg.cache.sig_id
    assert seg.cache.contains(2)
    seg.set_model_window(display_preset="lung")
    assert seg.cache.sig_id != sig_soft and not seg.cache.contains(2)
    calls = seg.encoder_calls
    seg.features(2)
    assert seg.encoder_calls == calls + 1  # re-encoded through the lung window
    seg.set_model_window(display_preset="soft_tissue")
    assert seg.cache.sig_id == sig_soft and seg.cache.contains(2)  # the soft-tissue entry is back
    seg.features(2)
    assert seg.encoder_calls == calls + 1


def test_a_checkpoint_declaring_medsam2_gets_its_window_convention(tmp_path):
    import json
    import shutil

    from napari_medprompt.segment.sam2_backend import checkpoint_window_convention

    ckpt = tmp_path / "MedSAM2_latest.pt"
    shutil.copyfile(checkpoint_file(), ckpt)
    assert checkpoint_window_convention(ckpt) == "medsam2"
    assert checkpoint_window_convention(checkpoint_file()) is None  # Meta's layout: none declared
    other = tmp_path / "finetuned.pt"
    other.write_bytes(b"")
    (tmp_path / "finetuned.pt.json").write_text(json.dumps({"window_convention": "medsam"}))
    assert checkpoint_window_convention(other) == "medsam"
    (tmp_path / "finetuned.pt.json").write_text(json.dumps({"window_convention": "nnunet"}))
    with pytest.raises(ValueError, match="unknown window_convention"):
        checkpoint_window_convention(other)

    torch.set_num_threads(2)
    s = Sam2Segmenter(MODEL, checkpoint=ckpt, device="cpu")
    assert s.window_convention == "medsam2"
    s.bind(VOLUME, modality="CT", display_preset="lung")
    assert s.window == (-160.0, 240.0)  # level 40 / width 400 whatever the display shows
    mr = np.zeros((2, H, W), np.float32)
    mr[:, 10:40, 20:70] = np.linspace(100.0, 1100.0, 30 * 50).reshape(30, 50)
    s.bind(mr, modality="MR")
    inside = mr[mr > 0]  # MedSAM's MR rule: percentiles of the non-zero voxels
    assert s.window == pytest.approx(tuple(np.percentile(inside, [0.5, 99.5])), rel=1e-4)
    assert s.model_window_info()["source"] == "checkpoint convention 'medsam2'"
    s.set_model_window("display")  # the user may still pick the display's window
    assert s.window == pytest.approx(tuple(np.percentile(mr, [0.5, 99.5])), rel=1e-4)  # 'auto' preset


def test_predict_returns_a_mask_and_reuses_the_cached_embedding(seg):
    res = seg.predict(1, Prompt(points=[[CY, CX]], labels=[1]), object_id=3)
    assert res.mask.shape == (H, W) and res.mask.dtype == bool
    assert res.slice_index == 1 and res.object_id == 3
    assert 0.0 <= res.score <= 1.0 and 0.0 <= res.object_score <= 1.0
    calls, hits = seg.encoder_calls, seg.cache.hits
    res2 = seg.predict(1, Prompt(box=(10, 32, 38, 60)))
    assert seg.encoder_calls == calls  # no encoder run on a cached slice
    assert seg.cache.hits == hits + 1
    assert res2.mask.shape == (H, W)


def _spy(monkeypatch, module, store):
    orig = module.forward

    def forward(*args, **kwargs):
        store.append(kwargs)
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)


def test_napari_row_col_become_sam_x_y(seg, monkeypatch):
    prompts, decodes = [], []
    _spy(monkeypatch, seg.net.sam_prompt_encoder, prompts)
    import napari_medprompt.segment.sam2_backend as backend

    real_decode = backend.decode_masks

    def decode_spy(*args, **kwargs):
        decodes.append({"multimask_output": args[-1]})
        return real_decode(*args, **kwargs)

    monkeypatch.setattr(backend, "decode_masks", decode_spy)
    sx, sy = 1024 / W, 1024 / H  # model space is 1024 x 1024: x scales by the width, y by the height
    # a point near the bottom-left corner: row 45, col 3 -> x = 3, y = 45
    seg.predict(1, Prompt(points=[[45, 3]], labels=[1]))
    coords, labels = prompts[-1]["points"]
    np.testing.assert_allclose(coords.numpy(), [[[3 * sx, 45 * sy]]], rtol=1e-5)
    # and near the top-right corner: row 2, col 77 -> x = 77, y = 2
    seg.predict(1, Prompt(points=[[2, 77]], labels=[1]))
    np.testing.assert_allclose(prompts[-1]["points"][0].numpy(), [[[77 * sx, 2 * sy]]], rtol=1e-5)
    assert labels.tolist() == [[1]]
    assert decodes[-1]["multimask_output"] is True  # a lone click is ambiguous: three candidates
    # a box (row0, col0, row1, col1) -> (x0, y0), (x1, y1), labels 2 and 3 first, then the points
    seg.predict(1, Prompt(points=[[20, 70]], labels=[0], box=(5, 10, 40, 75)))
    coords, labels = prompts[-1]["points"]
    np.testing.assert_allclose(
        coords.numpy(), [[[10 * sx, 5 * sy], [75 * sx, 40 * sy], [70 * sx, 20 * sy]]], rtol=1e-5
    )
    assert labels.tolist() == [[2, 3, 0]]
    assert decodes[-1]["multimask_output"] is False
    assert prompts[-1]["masks"] is None


def test_a_mask_prompt_becomes_low_res_logits(seg, monkeypatch):
    m = np.zeros((H, W), bool)
    m[:, :20] = True
    logits = mask_to_logits(m)
    assert logits.shape == (1, 1, 256, 256)
    assert float(logits[0, 0, 128, 10]) == pytest.approx(10.0)
    assert float(logits[0, 0, 128, 200]) == pytest.approx(-10.0)
    top = np.zeros((H, W), bool)
    top[: H // 4] = True  # the top quarter of the rows: the top quarter of the logits' rows
    t = mask_to_logits(top)
    assert float(t[0, 0, 10, 128]) == pytest.approx(10.0) and float(t[0, 0, 200, 128]) == pytest.approx(-10.0)
    prompts = []
    _spy(monkeypatch, seg.net.sam_prompt_encoder, prompts)
    res = seg.predict(1, Prompt(mask=m))
    torch.testing.assert_close(prompts[-1]["masks"], logits)
    assert res.mask.shape == (H, W)


@pytest.mark.parametrize("cached", [False, True])
@pytest.mark.parametrize("multimask", [True, False])
def test_channels_last_decoder_computes_what_sam2s_decoder_computes(seg, multimask, cached):
    g = torch.Generator().manual_seed(0)
    dec = seg.net.sam_mask_decoder
    embed = torch.randn(1, 256, 64, 64, generator=g)
    hr = [torch.randn(1, 32, 256, 256, generator=g), torch.randn(1, 64, 128, 128, generator=g)]
    with torch.inference_mode():
        sparse, dense = seg.net.sam_prompt_encoder(
            points=(torch.tensor([[[100.0, 900.0]]]), torch.tensor([[1]], dtype=torch.int)), boxes=None, masks=None
        )
        ref = dec(image_embeddings=embed, image_pe=seg._dense_pe, sparse_prompt_embeddings=sparse,
                  dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=False,
                  high_res_features=hr)
        args = (channels_last(embed), channels_last(seg._dense_pe), sparse, channels_last(dense.contiguous()))
        pre = image_projections(dec, args[0], args[1], args[3]) if cached else None
        got = decode_masks(dec, *args, [channels_last(t) for t in hr], multimask, pre=pre)
    for r, o in zip((ref[0], ref[1], ref[3]), got):
        torch.testing.assert_close(o, r, rtol=1e-4, atol=1e-4)


def test_bad_input_gets_clear_errors(seg, rebind):
    with pytest.raises(PromptError, match="out of range"):
        seg.predict(7, Prompt(points=[[3, 3]], labels=[1]))
    with pytest.raises(PromptError, match="outside"):
        seg.predict(1, Prompt(points=[[50, 5]], labels=[1]))  # row 50 of 48: outside
    with pytest.raises(PromptError, match="outside"):
        seg.predict(1, Prompt(points=[[5, 85]], labels=[1]))  # col 85 of 80: outside
    with pytest.raises(PromptError, match="empty"):
        seg.predict(1, Prompt())
    with pytest.raises(PromptError, match="zero area"):
        seg.predict(1, Prompt(box=(5, 5, 5, 30)))
    with pytest.raises(PromptError, match="window"):
        seg.bind(VOLUME, window=(100, 100))
    seg.bind(VOLUME[1], modality="CT")
    with pytest.raises(PromptError, match="2D"):
        list(seg.propagate({1: {0: _disc()}}))
    with pytest.raises(PromptError, match="2D image"):
        seg.predict(1, Prompt(points=[[3, 3]], labels=[1]))


def test_prefetch_order_goes_outward_from_the_current_slice():
    assert prefetch_order(5, 9) == [5, 6, 4, 7, 3, 8, 2, 1, 0]
    assert prefetch_order(0, 3) == [0, 1, 2]
    assert prefetch_order(4, 10, radius=1) == [4, 5, 3]


def test_prefetch_stops_between_slices_when_cancelled(seg, rebind):
    other = VOLUME[:3].copy()
    other[:, 0, 0] += 1  # another image: nothing cached
    seg.bind(other, modality="CT", key="other")
    cancel = threading.Event()
    gen = seg.prefetch([1, 0, 2], cancel)
    calls = seg.encoder_calls
    assert next(gen) == 1
    assert seg.encoder_calls == calls + 1
    cancel.set()
    assert list(gen) == []
    assert seg.encoder_calls == calls + 1
    assert seg.cache.contains(1) and not seg.cache.contains(0)


def _loose(**kw) -> PropagationSettings:
    base = dict(min_object_score=0.0, min_area_px=1, max_area_ratio=1e6, patience=3, min_thickness_fraction=0.0)
    base.update(kw)
    return PropagationSettings(**base)


def test_projection_mode_covers_the_volume_from_a_seed(seg):
    res = list(seg.propagate({1: {1: _disc(14)}}, _loose(mode="projection")))
    assert sorted(r.slice_index for r in res) == [0, 2, 3]
    for r in res:
        assert r.mask.shape == (H, W) and r.mask.dtype == bool
        assert r.source == "propagated" and r.object_id == 1 and 0 <= r.object_score <= 1
    calls = seg.encoder_calls
    list(seg.propagate({1: {1: _disc(14)}}, _loose(mode="projection")))
    assert seg.encoder_calls == calls  # every slice embedding is reused


def test_memory_mode_several_objects_and_seeds_from_cached_features(seg):
    list(seg.prefetch(range(4)))
    calls = seg.encoder_calls
    seeds = {1: {0: _disc(10), 3: _disc(9)}, 2: {2: _disc(5)}}
    res = list(seg.propagate(seeds, _loose(mode="memory")))
    got = sorted((r.object_id, r.slice_index) for r in res)
    # object 1: the gap between its seeds is filled from the nearer seed; object 2: both directions
    assert got == [(1, 1), (1, 2), (2, 0), (2, 1), (2, 3)]
    for r in res:
        assert r.mask.shape == (H, W) and r.mask.dtype == bool and 0 <= r.score <= 1
    assert seg.encoder_calls == calls  # fed from the embedding cache, no JPEG, no re-encoding


class _ControlledObjectScore(torch.nn.Module):
    """Stands in for SAM2's object-score head: the test decides the logit per slice."""

    def __init__(self, logits_by_slice):
        super().__init__()
        self.logits_by_slice = logits_by_slice
        self.slice = None

    def forward(self, x):
        return torch.full((x.shape[0], 1), float(self.logits_by_slice[self.slice]), dtype=x.dtype)


@pytest.mark.parametrize("mode", ["projection", "memory"])
def test_stop_rule_ends_where_the_object_score_drops(seg, monkeypatch, mode):
    head = _ControlledObjectScore({0: 8.0, 1: 8.0, 2: 8.0, 3: -8.0})
    features = seg.features

    def tracking_features(z):
        head.slice = z
        return features(z)

    monkeypatch.setattr(seg, "features", tracking_features)
    decoders = {id(d): d for d in (seg.net.sam_mask_decoder, seg.click_decoder)}.values()
    real_heads = [d.pred_obj_score_head for d in decoders]
    for d in decoders:
        d.pred_obj_score_head = head  # (monkeypatch cannot restore nn.Module children)
    try:
        settings = _loose(mode=mode, patience=1, min_object_score=0.5)
        res = {r.slice_index: r for r in seg.propagate({1: {1: _disc(14)}}, settings)}
    finally:
        for d, h in zip(decoders, real_heads):
            d.pred_obj_score_head = h
    assert sorted(res) == [0, 2, 3]
    assert not res[0].lost and not res[2].lost
    assert res[2].object_score == pytest.approx(torch.sigmoid(torch.tensor(8.0)).item(), rel=1e-2)
    assert res[3].lost and not res[3].mask.any()
    assert res[3].object_score < 0.5


def test_propagation_is_cancellable_between_slices(seg):
    cancel = threading.Event()
    gen = seg.propagate({1: {0: _disc()}}, _loose(mode="projection", cancel=cancel))
    first = next(gen)
    assert first.slice_index == 1
    cancel.set()
    assert list(gen) == []


def test_smaller_memory_bank_keeps_the_trained_position_encodings(seg):
    net = seg.net
    full = net.maskmem_tpos_enc.detach().clone()
    with memory_bank(net, 2):
        assert net.num_maskmem == 3
        t = net.maskmem_tpos_enc
        torch.testing.assert_close(t[0], full[0])  # the previous frame
        torch.testing.assert_close(t[1], full[1])  # two frames back
        torch.testing.assert_close(t[2], full[6])  # the seed (conditioning) frames
    assert net.num_maskmem == 7
    torch.testing.assert_close(net.maskmem_tpos_enc, full)


def test_disk_cache_is_reused_after_a_restart_and_rejected_for_another_image_or_model(tmp_path):
    torch.set_num_threads(2)
    vol = VOLUME[1:3].copy()
    click = Prompt(points=[[CY, CX]], labels=[1])
    a = Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="cpu", cache_dir=tmp_path)
    a.bind(vol, key="/data/ct.nii.gz")
    r1 = a.predict(0, click)
    assert a.encoder_calls == 1 and a.cache.disk_writes == 1
    folder = a.cache.disk_dir
    assert (folder / "signature.json").is_file() and (folder / "slice_00000.safetensors").is_file()

    b = Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="cpu", cache_dir=tmp_path)  # restart
    b.bind(vol, key="/data/ct.nii.gz")
    assert not b.cache.rejected_disk_cache
    r2 = b.predict(0, click)
    assert b.encoder_calls == 0 and b.cache.disk_hits == 1
    assert np.mean(r1.mask == r2.mask) > 0.98  # float16 on disk

    changed = vol.copy()
    changed[0, 5, 5] += 100
    b.bind(changed, key="/data/ct.nii.gz")  # same key, other content
    assert b.cache.rejected_disk_cache and not (folder / "slice_00000.safetensors").exists()
    b.predict(0, click)
    assert b.encoder_calls == 1

    b.bind(changed, key="/data/ct.nii.gz", window=(-100.0, 200.0))  # another model window
    assert b.cache.rejected_disk_cache

    c = Sam2Segmenter("sam2-hiera-tiny", checkpoint="random", device="cpu", cache_dir=tmp_path)
    c.bind(changed, key="/data/ct.nii.gz", window=(-100.0, 200.0))  # another model
    assert c.cache.rejected_disk_cache and c.random_weights
    assert c.weights_status()["random_weights"] and "RANDOM" in c.weights_status()["message"]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_memory_mode_is_the_default_and_runs_in_bfloat16():
    s = Sam2Segmenter(MODEL, checkpoint=checkpoint_file(), device="auto")
    assert s.device == "cuda" and s.resolved_mode() == "memory"
    assert s.encoder_bf16 and s.decoder_bf16 and s.memory_bf16
    s.bind(VOLUME, modality="CT")
    res = s.predict(1, Prompt(points=[[CY, CX]], labels=[1]))
    assert res.mask.shape == (H, W) and s.features(1)["fpn2"].dtype == torch.bfloat16
    out = list(s.propagate({1: {1: _disc(14)}}, _loose()))
    assert sorted(r.slice_index for r in out) == [0, 2, 3]
