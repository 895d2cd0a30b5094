"""The example set: gathered from sessions, slices, folders and MedMNIST archives; checked; saved and
reopened identically; no folder path or patient field kept."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from napari_medprompt.learn import ExampleSet, LearnError, LearnWorkspace, learn_folder_for, method_choices
from napari_medprompt.learn.examples import DATA_DIR, MANIFEST
from tests.classify.synthetic import blob_task, write_npz
from tests.learn.synthetic import annotated_session


def _two_volume_set(folder=None):
    ex = ExampleSet(folder)
    for seed in (0, 1):
        s, vol, _ = annotated_session(seed, n_per_object=3)
        ex.add_session(s, vol, modality="CT")
    return ex


def test_accepted_objects_of_two_sessions_become_grouped_examples_with_masks():
    s, vol, lesion = annotated_session(0, n_per_object=3)
    s.set_status(1, [2], "rejected")  # a rejected slice is not an example
    ex = ExampleSet()
    added = ex.add_session(s, vol)
    assert len(added) == 5 and ex.counts() == {"smooth": 2, "striped": 3}
    e = next(e for e in ex if e.object_id == 2 and e.slice_index == 4)
    np.testing.assert_array_equal(e.image, vol[4])
    np.testing.assert_array_equal(e.mask, lesion[4])
    assert e.source == "ct0.nii.gz", "the file name only, never the folders (/data/patient-0/)"
    assert "patient" not in json.dumps([x.record() for x in ex])
    s2, vol2, _ = annotated_session(1, n_per_object=3)
    ex.add_session(s2, vol2)
    assert len({e.group for e in ex}) == 2, "one group per image"
    data = ex.to_fewshot()
    assert data.classes == ["smooth", "striped"] and len(data) == 11 and data.has_masks
    assert len(set(data.groups)) == 2
    assert ex.add_session(s, vol) and len(ex) == 11, "adding a session again updates, never duplicates"
    s.set_object_class(1, "benign")
    ex.add_session(s, vol)
    assert ex.counts() == {"benign": 2, "smooth": 3, "striped": 6}


def test_slices_rejected_or_erased_later_leave_the_example_set_when_the_image_is_added_again(tmp_path):
    s, vol, _ = annotated_session(0, n_per_object=3)
    ex = ExampleSet(tmp_path / "examples")
    ex.add_session(s, vol)
    assert len(ex) == 6 and ex.last_dropped == 0
    other, vol1, _ = annotated_session(1, n_per_object=3)
    ex.add_session(other, vol1)
    s.set_status(1, [1], "rejected")
    z2 = sorted(s.slice_voxels(2))[0]
    s.labels[z2][s.labels[z2] == 2] = 0  # erased
    ex.add_session(s, vol)
    assert ex.last_dropped == 2 and len(ex) == 10, "the other image's examples stay"
    keys = {(e.object_id, e.slice_index) for e in ex if e.source_key == ex[0].source_key}
    assert (1, 1) not in keys and (2, z2) not in keys
    assert len(ExampleSet.open(tmp_path / "examples")) == 10, "the drop is saved"
    s.set_status(1, sorted(s.objects[1].slice_status), "rejected")
    s.set_status(2, sorted(s.objects[2].slice_status), "rejected")
    assert ex.add_session(s, vol) == [] and ex.last_dropped == 4 and len(ex) == 6


def test_objects_without_a_class_are_reported():
    s, vol, _ = annotated_session(0, n_per_object=2, classes=None)
    with pytest.raises(LearnError, match="have no class"):
        ExampleSet().add_session(s, vol)


def test_current_slice_whole_image_and_image_level_class():
    ex = ExampleSet()
    vol = np.random.default_rng(0).random((5, 20, 30)).astype(np.float32)
    e = ex.add_slice(vol, 3, "normal", source="/secret/path/scan.nrrd", spacing=(2.0, 0.7, 0.6))
    assert e.slice_index == 3 and e.mask is None and e.spacing == (0.7, 0.6) and e.source == "scan.nrrd"
    keyed = ex.add_slice(vol, 4, "normal", source_key="/home/Doe^John/scan.nrrd|5x20x30|2x0.7x0.6")
    assert "Doe" not in keyed.source_key + keyed.group and keyed.source_key.startswith("key-")
    n = len(ex)
    again = ex.add_slice(vol, 4, "other", source_key="/home/Doe^John/scan.nrrd|5x20x30|2x0.7x0.6")
    assert len(ex) == n and again.class_name == "other", "the same slice of the same image is one example"
    assert again.uid != keyed.uid and keyed.uid not in ex.uids, "a replaced example gets a new uid (pixel file)"
    ex.remove([again.uid])
    xray = np.random.default_rng(1).integers(0, 255, (40, 32), dtype=np.uint8)
    from napari_medprompt.session import AnnotationSession

    s = AnnotationSession((1, 40, 32), (1, 1, 1), image_key="x")
    s.set_image_class("pneumonia")
    (img,) = ex.add_session(s, xray)
    assert img.origin == "image" and img.class_name == "pneumonia" and img.mask is None
    with pytest.raises(LearnError, match="outside the volume"):
        ex.add_slice(vol, 9, "normal")
    with pytest.raises(LearnError, match="mask of shape"):
        ex.add(vol[0], "normal", mask=np.ones((3, 3)))
    with pytest.raises(LearnError, match="class needs a name"):
        ex.add(vol[0], "  ")


def test_folder_per_class_and_medmnist_imports(tmp_path):
    t = blob_task(3, seed=0)
    for i, (im, y) in enumerate(zip(t.images, t.labels)):
        d = tmp_path / "folder" / t.classes[int(y)]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray((im * 255).astype(np.uint8)).save(d / f"img{i}.png")
    ex = ExampleSet()
    assert len(ex.import_folder(tmp_path / "folder")) == 6
    write_npz(tmp_path / "m.npz", blob_task(2, seed=1))
    assert len(ex.import_npz(tmp_path / "m.npz", classes=list(t.classes))) == 4
    assert ex.counts() == {"smooth": 5, "striped": 5}
    ex.import_npz(tmp_path / "m.npz", classes=list(t.classes))
    assert len(ex) == 10, "importing the same archive again updates its examples"
    twin = tmp_path / "twin.npz"
    np.savez(twin, train_images=np.zeros((2, 8, 8), np.uint8) + np.eye(8, dtype=np.uint8), train_labels=np.array([0, 1]))
    assert len(ExampleSet().import_npz(twin)) == 2, "equal images of an archive stay two examples"
    assert {e.origin for e in ex} == {"folder", "npz"}
    with pytest.raises(LearnError, match="no 'val_images'"):
        ex.import_npz(tmp_path / "m.npz", split="val")
    with pytest.raises(LearnError, match="not a folder"):
        ex.import_folder(tmp_path / "missing")


def test_checks_name_the_problem():
    ex = ExampleSet()
    with pytest.raises(LearnError, match="no examples yet"):
        ex.check()
    img = np.random.default_rng(0).random((16, 16))
    ex.add(img, "a")
    ex.add(img + 1, "a")
    ex.add_class("b")
    with pytest.raises(LearnError, match="'b' have no examples"):
        ex.check()
    ex.add(img + 2, "b")
    with pytest.raises(LearnError, match="'b' have only one example"):
        ex.check()
    ex.add(img + 3, "b")
    ex.check()
    with pytest.raises(LearnError, match="needs a mask for every example, but 4 of 4"):
        ex.check(uses_masks=True)
    choices = {c.name: c for c in method_choices(ex, "test-vit-tiny")}
    assert not choices["mask-guided-clip"].enabled and "4 of 4" in choices["mask-guided-clip"].reason
    assert not choices["segprompt"].enabled and choices["linear-probe"].enabled
    assert choices["linear-probe"].fast_on_cpu and not choices["vpt-shallow"].fast_on_cpu
    assert not {c.name: c for c in method_choices(ex, "test-resnet")}["zero-shot"].enabled, "no text tower"
    assert ex.remove([ex[0].uid]) == 1 and ex.counts() == {"a": 1, "b": 2}


def test_example_set_reopens_identically_and_writes_atomically(tmp_path):
    ws = LearnWorkspace(learn_folder_for(tmp_path / "ct0.medprompt"))
    assert ws.root == tmp_path / "medprompt-learn"
    ex = ws.examples
    for seed in (0, 1):
        s, vol, _ = annotated_session(seed, n_per_object=2)
        ex.add_session(s, vol, modality="CT")
    ex.add_class("unused")
    ex.remove([ex[0].uid])
    back = ws.reopen().examples  # a restart: new objects, read from disk
    assert back.rows() == ex.rows() and back.classes == ex.classes and back.counts() == ex.counts()
    for a, b in zip(ex, back):
        assert a.record() == b.record()
        np.testing.assert_array_equal(a.image, b.image)
        assert a.image.dtype == b.image.dtype
        np.testing.assert_array_equal(a.mask, b.mask)
    ex.remove_class("unused")
    back.remove_class("unused")
    assert back.to_fewshot().fingerprint() == ex.to_fewshot().fingerprint()
    files = sorted(p.stem for p in (ws.root / "examples" / DATA_DIR).glob("*.npz"))
    assert files == sorted(back.uids), "removed examples leave no pixel file behind"
    stamps = {p.name: p.stat().st_mtime_ns for p in (ws.root / "examples" / DATA_DIR).glob("*.npz")}
    back.add(np.eye(8), "smooth")
    assert {p.name: p.stat().st_mtime_ns for p in (ws.root / "examples" / DATA_DIR).glob("*.npz")
            if p.name in stamps} == stamps, "a change writes only the new pixels"
    back.remove([back[-1].uid])
    # a pixel file not listed in the manifest (an interrupted write) is ignored
    (ws.root / "examples" / DATA_DIR / "deadbeef.npz").write_bytes(b"partial")
    assert len(ExampleSet.open(ws.root / "examples")) == len(ex)
    # one unreadable pixel file: that example is flagged, the rest opens, nothing is deleted
    bad = ws.root / "examples" / DATA_DIR / f"{ex[0].uid}.npz"
    bad.write_bytes(b"not an npz")
    flagged = ExampleSet.open(ws.root / "examples")
    assert len(flagged) == len(ex) - 1 and [r["uid"] for r, _ in flagged.unreadable] == [ex[0].uid]
    assert "cannot be read" in flagged.unreadable[0][1]
    assert len(LearnWorkspace(ws.root).examples) == len(ex) - 1, "the workspace (and the Models tab) opens"
    flagged.add(np.eye(8), "smooth")  # a save keeps the flagged record and its file as they are
    again = ExampleSet.open(ws.root / "examples")
    assert bad.exists() and len(again) == len(ex) and len(again.unreadable) == 1
    (ws.root / "examples" / MANIFEST).write_text("{broken")
    with pytest.raises(LearnError, match="cannot be read"):
        ExampleSet.open(ws.root / "examples")


def test_thumbnails_are_small_uint8_pictures():
    ex = _two_volume_set()
    th = ex.thumbnail(ex[0].uid)
    assert th.dtype == np.uint8 and th.shape == (64, 64)
    assert th.max() == 255 and th.min() < 60
    rgb = ex.add(np.random.default_rng(0).random((30, 60, 3)), "colour")
    assert ex.thumbnail(rgb.uid, size=32).shape == (16, 32, 3)
