"""Segmentation adapters trained from accepted objects (napari_medprompt.learn.seg_adapt), Qt-free, on a
small synthetic CT with two accepted organs and random-init base models (no weights can be downloaded)."""

from __future__ import annotations

import numpy as np
import pytest

from tests.learn.seg_synthetic import disk_session, organ_session

import torch
import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
import monai  # noqa: F401 (a hard dependency: a broken install fails here)

from napari_medprompt.learn import LearnError, LearnWorkspace  # noqa: E402
from napari_medprompt.learn.seg_adapt import (  # noqa: E402
    SegAdaptRun,
    accepted_objects,
    activate_seg,
    seg_method_rows,
    seg_versions,
)

SIZE = 128  # SAM2.1-tiny from its real config at a reduced input size (same network, smaller input)


@pytest.fixture(scope="module")
def sam2_base():
    from napari_medprompt.seg_adapters.sam2_model import Sam2Base

    return Sam2Base.build("sam2.1-hiera-tiny", "random", "cpu", image_size=SIZE)


def _run(session, vol, store, base, **kw):
    kw = {"method": "sam2-decoder", "epochs": 4, "lr": 1e-3, "options": {"image_size": SIZE}, **kw}
    return SegAdaptRun(session, vol, store, base=base, **kw)


def _own_dice(model, run, name):
    """Dice of ``model`` on ``name``'s held-out slices computed here, apart from the run's code path:
    the SAM2 pair tensors and the model's fixed validation prompts, per slice, then the mean."""
    from napari_medprompt.seg_adapters.pairs import Sam2PairData
    from napari_medprompt.seg_adapters.sam2_model import pair_tensors

    session, vol = run.sources[0]
    oid = next(o.object_id for o in accepted_objects(session) if o.name == name)
    zs = run.heldout_slices[name]
    pairs = Sam2PairData([vol[z] for z in zs], [session.labels[z] == oid for z in zs], [run.window] * len(zs))
    t = pair_tensors(pairs, SIZE)
    model.train(False)
    with torch.no_grad():
        logits = model.seg_logits(t.x, model.seg_prompts(t, torch.arange(len(zs)), None))
    p = (logits > 0).numpy().reshape(len(zs), -1)
    g = (t.y > 0.5).numpy().reshape(len(zs), -1)
    d = [2 * (a & b).sum() / max(a.sum() + b.sum(), 1) if (a.sum() + b.sum()) else 1.0 for a, b in zip(p, g)]
    return float(np.mean(d))


def test_accepted_objects_and_method_rows():
    session, _vol, organs = organ_session()
    objs = {o.name: o for o in accepted_objects(session)}
    assert objs["liver"].slices == sorted(organs["liver"]) and objs["liver"].n_slices == 8
    assert objs["left kidney"].n_slices == 7 and objs["liver"].problem is None
    rows = {r.name: r for r in seg_method_rows()}
    assert rows["sam2-decoder"].fast_on_cpu and rows["clipseg-decoder"].fast_on_cpu
    assert not rows["sam2-adapter"].fast_on_cpu and rows["vlsm-dense-vl"].family == "clipseg"
    assert rows["sam2-adapter"].family == "sam2" and rows["sam2-adapter"].base == "sam2.1-hiera-tiny"


def test_held_out_blocks_keep_neighbours_apart():
    session, vol, _ = organ_session()
    run = SegAdaptRun(session, vol, None, method="sam2-decoder", holdout=0.25, gap=1)
    for name in ("liver", "left kidney"):
        tr, va = run.train_slices[name], run.heldout_slices[name]
        assert va and tr and not set(tr) & set(va)
        assert min(abs(a - b) for a in tr for b in va) >= 2, (name, tr, va)  # the neighbour left out
    assert run.heldout_slices["liver"] == [7, 8] and run.train_slices["liver"] == [1, 2, 3, 4, 5]
    assert "held out" in run.split_note and "neighbouring" in run.split_note
    # several images: whole images are held out, none is on both sides
    s2, v2, _ = organ_session(seed=1)
    run = SegAdaptRun(sources=[(session, vol), (s2, v2)], store=None, method="sam2-decoder", holdout=0.5)
    src_tr = {run.sources[s.source][0].image_key for s in run.train_samples}
    src_va = {run.sources[s.source][0].image_key for s in run.heldout_samples}
    assert len(src_tr) == 1 and len(src_va) == 1 and not src_tr & src_va
    assert "whole images held out" in run.split_note


def test_no_object_trains_on_a_slice_held_out_for_another():
    """One image, liver on 0-7 (holds out 6-7), kidney on 4-10 (holds out 9-10): the kidney must not train
    on liver's held-out slices 6-7 (or their neighbours), which an encoder adapter would learn pixel by pixel."""
    session, vol = disk_session({"liver": range(0, 8), "kidney": range(4, 11)})
    run = SegAdaptRun(session, vol, None, method="sam2-adapter", holdout=0.25, gap=1)
    held = {z for zs in run.heldout_slices.values() for z in zs}
    assert run.heldout_slices == {"liver": [6, 7], "kidney": [9, 10]}
    for name, zs in run.train_slices.items():
        assert all(min(abs(z - h) for h in held) > 1 for z in zs), (name, zs, held)
    assert run.train_slices == {"liver": [0, 1, 2, 3, 4], "kidney": [4]}
    assert "no object trains on any held-out slice" in run.split_note and "6-7, 9-10" in run.split_note
    # no slice away from the held-out ones: trains next to them (no gap), said in the note
    session, vol = disk_session({"liver": range(0, 8), "kidney": range(5, 9)})
    run = SegAdaptRun(session, vol, None, method="sam2-decoder", holdout=0.25, gap=1)
    assert run.heldout_slices["kidney"] == [8] and run.train_slices["kidney"] == [5]
    assert "kidney" in run.split_note and "NO 1-slice gap" in run.split_note
    assert not {z for zs in run.train_slices.values() for z in zs} & {6, 7, 8}
    # every slice of the kidney held out for some object: refused rather than trained on held-out slices
    session, vol = disk_session({"liver": range(0, 8), "kidney": range(6, 9)})
    with pytest.raises(LearnError, match="kidney: every slice"):
        SegAdaptRun(session, vol, None, method="sam2-decoder", holdout=0.25, gap=1)


def test_run_uses_the_data_of_its_construction_not_later_edits(sam2_base, tmp_path):
    """Edits made while a run trains (a slice rejected, another repainted, an object deleted) change neither
    its training data nor the masks either Dice is measured on: the same run as on the untouched session."""
    session, vol, _ = organ_session()
    run = _run(session, vol, tmp_path / "a", sam2_base, epochs=1)
    assert run.train_slices["liver"] == [1, 2, 3, 4, 5] and run.heldout_slices["liver"] == [7, 8]
    session.set_status(1, [3, 8], "rejected")  # a training and a held-out slice of the liver erased
    yy, xx = np.mgrid[:64, :64]
    session.commit_slices(1, {2: (yy - 5) ** 2 + (xx - 5) ** 2 <= 9}, "edited")  # another one repainted
    session.delete_object(2)  # the kidney deleted
    assert not (session.labels[8] == 1).any() and 2 not in session.objects
    res = run.run()  # no KeyError for the deleted object
    clean, vol2, _ = organ_session()
    ref = _run(clean, vol2, tmp_path / "b", sam2_base, epochs=1).run()
    assert res.metrics["train_set_sha256"] == ref.metrics["train_set_sha256"]
    got, want = {c.name: c for c in res.comparison}, {c.name: c for c in ref.comparison}
    assert set(got) == {"liver", "left kidney"} == set(want)
    for name in got:
        assert got[name].n_heldout == want[name].n_heldout == 2
        assert got[name].base == pytest.approx(want[name].base, abs=1e-6)
        assert got[name].adapted == pytest.approx(want[name].adapted, abs=1e-4)


def test_run_writes_an_inactive_version_and_reports_real_held_out_dice(sam2_base, tmp_path):
    from napari_medprompt.seg_adapters.sam2_engine import load_adapter

    session, vol, _ = organ_session()
    ws = LearnWorkspace(tmp_path / "medprompt-learn")
    run = _run(session, vol, ws.seg_store, sam2_base)
    events = list(run.events())
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and "epoch" in kinds and kinds[-3:] == ["compare", "version", "done"]
    assert events[0].random_weights and "RANDOM" in events[0].message
    res = run.result
    assert res.status == "finished" and res.version == "v0001" and res.random_weights
    # the version is written but not activated: the user decides
    assert ws.seg_store.active is None and (tmp_path / "medprompt-learn" / "seg_models").is_dir()
    rec = ws.seg_store.get(res.version)
    assert rec["method"] == "sam2-decoder" and rec["seg"]["family"] == "sam2"
    assert rec["seg"]["objects"] == ["liver", "left kidney"] and rec["seg"]["random_weights"]
    comp = {c.name: c for c in res.comparison}
    assert set(comp) == {"liver", "left kidney"} and comp["liver"].n_heldout == 2
    # the figures are Dice on the held-out slices, recomputed here from the saved adapter and the base
    again = load_adapter(ws.seg_store.weights_path(res.version), sam2_base)
    for name, c in comp.items():
        assert c.adapted == pytest.approx(_own_dice(again, run, name), abs=0.02)
        assert rec["seg"]["heldout"][name]["adapted"] == pytest.approx(c.adapted)
    from napari_medprompt.seg_adapters.sam2_model import Sam2AdapterModel

    fresh = Sam2AdapterModel(sam2_base, "sam2-decoder")
    assert comp["liver"].base == pytest.approx(_own_dice(fresh, run, "liver"), abs=0.02)
    # the adapter learnt something real on slices it never saw (random-init SAM2: the task is learnable)
    mean_base = np.mean([c.base for c in comp.values()])
    mean_adapted = np.mean([c.adapted for c in comp.values()])
    assert mean_adapted > mean_base + 0.2, (mean_base, mean_adapted)
    rows = seg_versions(ws.seg_store, family="sam2", base="sam2.1-hiera-tiny")
    assert [r["id"] for r in rows] == ["v0001"] and not rows[0]["active"] and "RANDOM" in rows[0]["label"]
    assert seg_versions(ws.seg_store, family="clipseg") == []
    activate_seg(ws.seg_store, "v0001")
    assert ws.reopen().seg_store.active == "v0001" and seg_versions(ws.seg_store)[0]["active"]
    with pytest.raises(LearnError, match="v0999"):
        activate_seg(ws.seg_store, "v0999")


def test_cancel_within_a_step(sam2_base, tmp_path):
    session, vol, _ = organ_session()
    store = tmp_path / "seg"
    run = _run(session, vol, store, sam2_base, epochs=3)
    for ev in run.events():
        if ev.kind == "step":
            run.cancel()
    assert run.result.status == "stopped-before-first-epoch" and run.result.version is None
    assert "nothing was saved" in run.result.message and run.store.list() == []
    run = _run(session, vol, store, sam2_base, epochs=5)
    n_epochs = 0
    for ev in run.events():
        if ev.kind == "epoch" and ev.epoch == 1:
            run.cancel()
        n_epochs += ev.kind == "epoch" and ev.epoch > 0
    assert run.result.status == "stopped" and run.result.cancelled and run.result.version == "v0001"
    assert run.result.metrics["epochs_completed"] == 1 and n_epochs == 1
    assert run.result.comparison  # the kept epoch is still compared on the held-out slices


def test_bad_input_is_refused_before_anything_is_written(sam2_base, tmp_path):
    from napari_medprompt.session import AnnotationSession

    store = tmp_path / "seg"
    session, vol, organs = organ_session()
    empty = AnnotationSession(vol.shape, (1, 1, 1), image_key="e", image_name="empty", autosave=False)
    with pytest.raises(LearnError, match="no objects"):
        SegAdaptRun(empty, vol, store, method="sam2-decoder")
    one = AnnotationSession(vol.shape, (1, 1, 1), image_key="o", image_name="one", autosave=False)
    obj = one.new_object(name="liver")
    one.commit_slices(obj.id, {4: organs["liver"][4]}, "accepted")
    with pytest.raises(LearnError, match="one slice only"):
        SegAdaptRun(one, vol, store, method="sam2-decoder")
    blank = AnnotationSession(vol.shape, (1, 1, 1), image_key="b", image_name="blank", autosave=False)
    obj = blank.new_object(name="liver")
    blank.objects[obj.id].slice_status.update({3: "accepted", 4: "accepted"})  # accepted, nothing drawn
    with pytest.raises(LearnError, match="empty mask"):
        SegAdaptRun(blank, vol, store, method="sam2-decoder")
    unnamed, _v, _o = organ_session(names=("liver",))
    unnamed.objects[1].name = ""
    with pytest.raises(LearnError, match="no name"):
        SegAdaptRun(unnamed, vol, store, method="clipseg-decoder")
    wordy, _v, _o = organ_session(names=("liver",))
    wordy.objects[1].name = "the large dark organ in the upper right abdomen " * 8
    with pytest.raises(LearnError, match="CLIP's text context holds 77"):
        SegAdaptRun(wordy, vol, store, method="vlsm-shallow-vl")
    with pytest.raises(LearnError, match="adapts a CLIPSeg model"):
        SegAdaptRun(session, vol, store, method="vlsm-shallow-v", base=sam2_base)
    with pytest.raises(LearnError, match="unknown segmentation method"):
        SegAdaptRun(session, vol, store, method="linear-probe")
    with pytest.raises(LearnError, match="no object with id 9"):
        SegAdaptRun(session, vol, store, method="sam2-decoder", object_ids=[9])
    with pytest.raises(LearnError, match="shape"):
        SegAdaptRun(session, vol[:, :32], store, method="sam2-decoder")
    assert not (tmp_path / "seg" / "versions").exists() or not any((tmp_path / "seg" / "versions").iterdir())
    assert len(session.objects) == 2 and sum(len(o.slice_status) for o in session.objects.values()) == 15


def test_clipseg_decoder_learns_from_object_names(tmp_path):
    """The text-prompted path: the objects' names are the prompts; random-init CLIPSeg (real config)."""
    session, vol, _ = organ_session()
    run = SegAdaptRun(session, vol, tmp_path / "seg", method="clipseg-decoder", epochs=15, lr=2e-3, batch_size=4,
                      options={"image_size": 64})
    run.run()
    res = run.result
    assert res.version and res.random_weights and [c.name for c in res.comparison] == ["liver", "left kidney"]
    rec = run.store.get(res.version)
    assert rec["seg"]["prompts"] == ["liver", "left kidney"] and rec["seg"]["family"] == "clipseg"
    assert rec["metrics"]["n_trainable"] > 1_000_000  # the decoder trained (1.13M), the encoders did not
    for c in res.comparison:
        assert 0.0 <= c.base <= 1.0 and 0.0 <= c.adapted <= 1.0 and c.n_heldout == 2
    liver = res.comparison[0]
    assert liver.adapted > liver.base + 0.2, (liver.base, liver.adapted)
    # the version segments raw slices through the training window: text segmentation with it on the
    # held-out slices gives the reported Dice (64 px slices, 64 px model input: the same grid)
    from napari_medprompt.seg_adapters.io import load_seg_adapter
    from napari_medprompt.seg_adapters.segmenter import TextSegmenter

    model = load_seg_adapter(store=run.store, version=res.version)
    assert model.preprocess.intensity == "window"
    seg = TextSegmenter(model)
    zs = run.heldout_slices["liver"]
    dice = []
    for z in zs:
        p, g = seg.segment_slice(vol[z], "liver"), session.labels[z] == 1
        dice.append(2 * (p & g).sum() / max(p.sum() + g.sum(), 1))
    assert float(np.mean(dice)) == pytest.approx(liver.adapted, abs=0.02)


def test_vlsm_adapter_trains_on_a_reused_base(tmp_path):
    """A VLSM-Adapter (shallow, cached) on a loaded CLIPSeg that the run reuses: the base's own weights
    stay frozen and unchanged, the stock comparison runs without the adapters."""
    from napari_medprompt.seg_adapters.clipseg import load_clipseg

    base = load_clipseg("random", image_size=64)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    session, vol, _ = organ_session()
    run = SegAdaptRun(session, vol, tmp_path / "seg", method="vlsm-shallow-v", base=base, epochs=1, batch_size=4,
                      options={"image_size": 64})
    res = run.run()
    assert res.version and res.comparison and res.random_weights
    assert all(torch.equal(before[k], v) for k, v in base.state_dict().items())
    assert not any(p.requires_grad for p in base.parameters())
