"""Adapted models in the Segment dock, from the segmentation model store next to the session
(``<learn folder>/seg_models``): SAM2 adapters for the loaded base model and checkpoint are an
"Adapter" choice (base model one click away, adapters of other weights not offered, the adapter in
the provenance); text versions are a choice of the Text prompt's model box.

MedSAM2 is a random-init SAM2.1-tiny written in MedSAM2's format (no weights can be downloaded);
CLIPSeg is the real config with random weights at 64 px.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt._qt.segment import text_prompt
from tests._qt._helpers import click_and_preview, load_backend, make_widget, stop_workers_after_test  # noqa: F401

MEDSAM2 = "medsam2-latest"
SHAPE = (5, 48, 64)  # non-square slices


def _volume():
    rng = np.random.default_rng(1)
    vol = rng.normal(-50, 30, SHAPE).astype(np.int16)
    vol[:, 12:36, 20:44] += 150
    return vol


def _seg_store(widget):
    from napari_medprompt.learn.workspace import learn_folder_for
    from napari_medprompt.train.store import ModelStore

    return ModelStore(learn_folder_for(widget.ctrl.session.folder) / "seg_models")


def _sam2_adapter(net, ckpt, seed):
    import torch

    from napari_medprompt.seg_adapters.sam2_model import Sam2AdapterModel, Sam2Base

    model = Sam2AdapterModel(Sam2Base(net, MEDSAM2, ckpt, True), "sam2-adapter-decoder")
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # moved away from the identity start, as by training
        for name, p in model.named_parameters():
            if p.requires_grad and (name.startswith("adapters.") and ".up." in name or name.startswith("decoder.output_hyper")):
                p.add_(torch.randn(p.shape, generator=gen) * 0.05)
    return model


def _choose(qtbot, widget, version):
    combo = widget.backend.adapter
    combo.setCurrentIndex(combo.findData(version) if version is not None else 0)
    combo.activated.emit(combo.currentIndex())
    qtbot.waitUntil(lambda: widget._seg_ready and combo.isEnabled(), timeout=60000)


def test_sam2_adapter_is_a_model_choice_and_the_base_model_one_click_away(qtbot, make_napari_viewer,
                                                                          monkeypatch, tmp_path):
    import torch

    from napari_medprompt.models.sam2_weights import write_random_checkpoint

    ckpt = write_random_checkpoint(MEDSAM2, tmp_path / "MedSAM2_latest.pt")
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(_volume(), name="CT"))
    load_backend(qtbot, widget, MEDSAM2, checkpoint=str(ckpt), timeout=180000)
    seg = widget.ctrl.segmenter
    assert widget.backend.adapter.isHidden()  # no adapter trained yet: no chooser

    store = _seg_store(widget)
    good = _sam2_adapter(seg.net, ckpt, 0)
    vid = store.add(good, preprocess=good.preprocess, metrics={"val": {"dice": 0.5}}, activate=False)
    good.detach_adapters()
    # an adapter trained on other weights of the same model (a changed decoder tensor): not offered
    p = seg.net.sam_mask_decoder.iou_token.weight
    saved = p.detach().clone()
    with torch.no_grad():
        p.add_(1.0)
    other = _sam2_adapter(seg.net, ckpt, 1)
    other_vid = store.add(other, preprocess=other.preprocess, activate=False)
    other.detach_adapters()
    with torch.no_grad():
        p.copy_(saved)
    assert store.get(other_vid)["backbone"]["state_hash"] != store.get(vid)["backbone"]["state_hash"]

    widget.refresh_seg_models()
    combo = widget.backend.adapter
    qtbot.waitUntil(lambda: not combo.isHidden(), timeout=60000)
    assert [combo.itemData(i) for i in range(combo.count())] == [None, vid]
    assert "Base model" in combo.itemText(0) and vid in combo.itemText(1) and "dice 0.50" in combo.itemText(1)

    _choose(qtbot, widget, vid)
    assert seg.weights_status()["adapter"]["store_version"] == vid
    assert combo.currentData() == vid and vid in widget.backend.adapter_status.text()
    m = click_and_preview(qtbot, widget, 2, 24, 32, timeout=120000)
    assert m.shape == SHAPE[1:]
    widget.accept()
    oid = widget.ctrl.current_object
    prov = widget.ctrl.session.objects[oid].provenance
    assert prov["adapter"]["store_version"] == vid and prov["adapter"]["method"] == "sam2-adapter-decoder"

    _choose(qtbot, widget, None)  # one click back to the base model
    assert seg.weights_status()["adapter"] is None and combo.currentIndex() == 0
    assert "base model" in widget.backend.adapter_status.text()
    click_and_preview(qtbot, widget, 3, 24, 32, timeout=120000)
    widget.accept()
    assert widget.ctrl.session.objects[widget.ctrl.current_object].provenance["adapter"] is None

    # asked for the other weights' adapter anyway: refused with the reason, the model unchanged
    widget.choose_adapter(other_vid)
    qtbot.waitUntil(lambda: any("Could not use adapter" in msg for _lv, msg in widget.messages), timeout=60000)
    assert "another checkpoint" in widget.messages[-1][1]
    assert seg.weights_status()["adapter"] is None and combo.currentIndex() == 0


def test_text_versions_of_the_store_are_text_model_choices(qtbot, make_napari_viewer, monkeypatch, tmp_path):
    import torch

    from napari_medprompt.seg_adapters.clipseg import load_clipseg
    from napari_medprompt.seg_adapters.vlsm import DecoderFinetune

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(text_prompt, "TEXT_IMAGE_SIZE", 64)
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(_volume(), name="CT"))
    assert widget.text_panel.model.count() == 1  # stock CLIPSeg only
    store = _seg_store(widget)
    model = DecoderFinetune(load_clipseg("random", image_size=64), ["liver"], image_size=64)
    with torch.no_grad():  # a "trained" decoder: its output layer moved
        for p in model.decoder.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(0)) * 0.02)
    vid = store.add(model, preprocess=model.preprocess, metrics={"val": {"dice": 0.61}}, activate=False)

    widget.text_panel.refresh.click()
    box = widget.text_panel.model
    assert [box.itemData(i) for i in range(box.count())] == [None, vid]
    assert "clipseg-decoder" in box.itemText(1) and "dice 0.61" in box.itemText(1)
    box.setCurrentIndex(1)
    widget.ctrl.jump_to_slice(1)
    with qtbot.waitSignal(widget.preview_updated, timeout=180000):
        widget.segment_text("liver", "slice")
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=30000)
    assert vid in widget.text_panel.banner.text()
    widget.accept()
    prov = widget.ctrl.session.objects[widget.ctrl.current_object].provenance
    assert prov["version"] == vid and prov["method"] == "clipseg-decoder" and prov["text_prompt"] == "liver"
    assert widget.ctrl.session.objects[widget.ctrl.current_object].slice_status == {1: "prompted"}


@pytest.mark.parametrize("method_ok", [True])
def test_adapter_chooser_without_a_sam2_backend_says_so(qtbot, make_napari_viewer, monkeypatch, tmp_path, method_ok):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(_volume(), name="CT"))
    load_backend(qtbot, widget, "classic")
    widget.choose_adapter("v0001")
    assert widget.messages[-1] == ("warning", "Adapters apply to a SAM2 backend: load one first.")
    assert widget.backend.adapter.isHidden()


@pytest.mark.parametrize("disk", [True, False])
def test_idle_prefetch_fills_the_disk_cache_with_the_whole_volume(qtbot, make_napari_viewer, monkeypatch,
                                                                  tmp_path, disk):
    """With the disk cache (medprompt-embed's folder exists) the whole volume is embedded while idle;
    memory only: just the slices around the one shown. The dock counts the embedded slices."""
    from napari_medprompt.models.sam2_weights import write_random_checkpoint
    from napari_medprompt.segment import embed

    folder = tmp_path / "embed-cache"
    folder.mkdir()
    monkeypatch.setattr(embed, "plugin_cache_dir", lambda: folder if disk else None)
    ckpt = write_random_checkpoint(MEDSAM2, tmp_path / "MedSAM2_latest.pt")
    shape = (7, 40, 56)
    vol = np.random.default_rng(2).normal(0, 30, shape).astype(np.int16)
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(vol, name="CT"))
    widget.prefetcher.radius = 1  # around the slice shown: 3 slices
    widget.ctrl.jump_to_slice(3)
    load_backend(qtbot, widget, MEDSAM2, checkpoint=str(ckpt), timeout=180000)
    label = widget.backend.embedded
    if disk:
        qtbot.waitUntil(lambda: label.text().startswith("embedded: 7 / 7 slices (disk cache)")
                        and not widget.prefetcher.running, timeout=240000)
        files = sorted(p.name for p in folder.rglob("slice_*.safetensors"))
        assert len(files) == 7
    else:
        qtbot.waitUntil(lambda: len(widget.prefetcher.done) >= 3 and not widget.prefetcher.running, timeout=180000)
        qtbot.wait(1500)  # idle: nothing more is embedded
        widget.update_embedded()
        assert not widget.prefetcher.running
        assert label.text() == "embedded: 3 / 7 slices (memory only)"
        assert not list(folder.rglob("slice_*"))
    assert not label.isHidden()
