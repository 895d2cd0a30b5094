"""Session folder: autosave after every change, restore round trip, refusal of wrong images,
damaged files, unwritable folders (in-memory work intact), default folder lookup."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_medprompt.session import (
    AnnotationSession,
    SessionCorruptError,
    SessionMismatchError,
    SessionSaveError,
    find_session,
    image_key,
    session_folder_for,
)
from napari_medprompt.session.store import SLICE_DIR
from tests.session._synthetic import KEY, SHAPE, SPACING, kidney, liver


def _build(folder):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="ct", folder=folder)
    a = s.new_object("liver")
    s.record_prompt(a.id, 9, points=[[45, 40]], labels=[1], box=None)
    s.commit_slices(a.id, {z: liver(z) for z in range(5, 15)}, "propagated",
                    {"backend": "classic", "model": "region-growing", "device": "cpu"})
    s.set_status(a.id, range(5, 8), "accepted")
    s.set_locked(a.id, True)
    b = s.new_object("kidney", color=(0.1, 0.2, 0.9))
    s.commit_slices(b.id, {z: kidney(z) for z in range(9, 12)}, "prompted")
    return s


def test_autosave_and_restore_round_trip(tmp_path):
    folder = tmp_path / "ct.medprompt"
    s = _build(folder)
    assert not s.unsaved_slices  # autosaved: nothing pending
    r = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)
    np.testing.assert_array_equal(r.labels, s.labels)
    assert r.spacing == SPACING and r.image_name == "ct"
    assert {i: o.to_dict() for i, o in r.objects.items()} == {i: o.to_dict() for i, o in s.objects.items()}
    assert r.objects[1].prompts[9] == {"points": [[45.0, 40.0]], "labels": [1], "box": None}
    assert r.objects[1].locked and r.objects[1].slice_status[5] == "accepted"
    assert r.objects[1].provenance["model"] == "region-growing"
    # the restored session keeps autosaving into the same folder
    r.set_status(2, [9], "rejected")
    again = AnnotationSession.load(folder)
    assert not (again.labels[9] == 2).any() and again.objects[2].slice_status[9] == "rejected"
    # only slices with voxels are stored; only packs still referenced are kept
    entries = json.loads((folder / "session.json").read_text())["labels"]["slices"]
    assert sorted(map(int, entries)) == [z for z in range(SHAPE[0]) if again.labels[z].any()]
    assert set(os.listdir(folder / SLICE_DIR)) == {e["pack"] for e in entries.values()}


def test_autosave_writes_only_changed_slices(tmp_path):
    s = _build(tmp_path / "s")
    packs = tmp_path / "s" / SLICE_DIR
    before = set(os.listdir(packs))
    s.commit_slices(2, {10: kidney(3), 11: kidney(4)}, "edited")
    new = set(os.listdir(packs)) - before
    assert len(new) == 1  # one pack per save
    entries = json.loads((tmp_path / "s" / "session.json").read_text())["labels"]["slices"]
    assert sorted(int(z) for z, e in entries.items() if e["pack"] in new) == [10, 11]


def test_old_packs_are_merged_and_removed(tmp_path):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, folder=tmp_path / "s")
    packs = tmp_path / "s" / SLICE_DIR
    a = s.new_object("liver")
    s._store.max_packs = 3
    for z in range(5, 15):  # ten live slices, one pack each: merged whenever there are > 3 packs
        s.commit_slices(a.id, {z: liver(z)}, "propagated")
        assert len(os.listdir(packs)) <= 4
    s._store.compact_slack = 0
    s._store.max_packs = 100
    s.commit_slices(a.id, {z: liver(z + 1) for z in range(5, 35)}, "propagated")  # one big pack
    s.set_status(a.id, range(5, 34), "rejected")  # 29 of its 30 slices are dead: merged away
    (pack,) = os.listdir(packs)
    assert (packs / pack).stat().st_size == sum(e["length"] for e in s._store.slice_files.values())
    np.testing.assert_array_equal(AnnotationSession.load(tmp_path / "s").labels, s.labels)


def test_restore_refuses_other_image(tmp_path):
    folder = tmp_path / "ct.medprompt"
    _build(folder)
    manifest = (folder / "session.json").read_bytes()
    with pytest.raises(SessionMismatchError, match=r"shape \(40, 96, 112\).*not restored"):
        AnnotationSession.load(folder, image_key=KEY, shape=(41, 96, 112))
    with pytest.raises(SessionMismatchError, match="another image"):
        AnnotationSession.load(folder, image_key="some/other.nii.gz|40x96x112|2.5x0.8x0.8", shape=SHAPE)
    assert (folder / "session.json").read_bytes() == manifest  # nothing touched


def test_damaged_slice_file_is_reported(tmp_path):
    folder = tmp_path / "ct.medprompt"
    _build(folder)
    entries = json.loads((folder / "session.json").read_text())["labels"]["slices"]
    path = folder / SLICE_DIR / entries["10"]["pack"]
    data = bytearray(path.read_bytes())
    data[entries["10"]["offset"] + 5] ^= 0xFF  # one flipped byte inside slice 10
    path.write_bytes(bytes(data))
    with pytest.raises(SessionCorruptError, match=rf"{entries['10']['pack']}: slice 10"):
        AnnotationSession.load(folder)
    last = max(entries.values(), key=lambda e: (e["pack"], e["offset"]))
    path = folder / SLICE_DIR / last["pack"]
    path.write_bytes(path.read_bytes()[:-7])  # truncated
    with pytest.raises(SessionCorruptError, match="truncated|corrupt|checksum"):
        AnnotationSession.load(folder)


def test_unwritable_folder_raises_clear_error_and_keeps_work(tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # a file where the session folder's parent should be: unwritable for anyone
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY)
    a = s.new_object("liver")
    s.commit_slices(a.id, {z: liver(z) for z in range(5, 9)}, "propagated")
    s.set_folder(blocker / "ct.medprompt", save=False)
    events = []
    s.on_change(events.append)
    with pytest.raises(SessionSaveError, match=r"not-a-folder/ct\.medprompt.*Nothing was lost"):
        s.commit_slices(a.id, {9: liver(9)}, "propagated")
    assert events[-1].kind == "save_failed" and s.last_save_error is not None
    np.testing.assert_array_equal(s.labels[9] == a.id, liver(9))  # the change is in memory
    assert s.objects[a.id].slice_status[9] == "propagated"
    # the user picks another folder: everything, including the failed change, is written
    s.set_folder(tmp_path / "elsewhere")
    np.testing.assert_array_equal(AnnotationSession.load(tmp_path / "elsewhere").labels, s.labels)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_raises_clear_error(tmp_path):
    folder = tmp_path / "ro"
    s = _build(folder)
    os.chmod(folder, 0o555)
    try:
        with pytest.raises(SessionSaveError, match="ro"):
            s.commit_slices(2, {3: kidney(3)}, "prompted")
        assert (s.labels[3] == 2).any()
    finally:
        os.chmod(folder, 0o755)
    s.save()
    assert (AnnotationSession.load(folder).labels[3] == 2).any()


def test_default_folder_beside_image_and_find_session(tmp_path):
    img = tmp_path / "patient" / "ct.nii.gz"
    img.parent.mkdir()
    img.write_bytes(b"")
    key = image_key(img, SHAPE, SPACING)
    folder = session_folder_for(key)
    assert folder == img.parent.resolve() / "ct.medprompt"
    assert session_folder_for(img) == folder
    assert find_session(key) is None
    s = AnnotationSession(SHAPE, SPACING, image_key=key, folder=folder)
    s.save()
    assert find_session(key) == folder and find_session(img) == folder


def test_default_folder_in_cache_without_source(tmp_path):
    key = image_key(None, SHAPE, SPACING)
    folder = session_folder_for(key)
    assert "sessions" in folder.parts
    AnnotationSession(SHAPE, SPACING, image_key=key, folder=folder).save()
    assert find_session(key) == folder


def test_export_nifti_with_sidecar(tmp_path):
    from napari_medprompt.io.labels_io import load_label_map

    s = _build(None)
    out = s.export_nifti(tmp_path / "seg.nii.gz")
    labels, ref, info = load_label_map(out)
    np.testing.assert_array_equal(labels, s.labels)
    assert ref.spacing == pytest.approx(SPACING)  # NIfTI stores float32 zooms
    assert info[1]["name"] == "liver" and info[2]["color"] == [26, 51, 230]
    assert info[1]["provenance"]["backend"] == "classic" and info[1]["accepted_slices"] == [5, 6, 7]


def test_new_session_never_overwrites_another_sessions_folder(tmp_path):
    folder = tmp_path / "ct.medprompt"
    first = _build(folder)
    manifest = (folder / "session.json").read_bytes()
    second = AnnotationSession(SHAPE, SPACING, image_key=KEY, folder=folder)
    with pytest.raises(SessionSaveError, match="already holds another annotation session"):
        second.new_object("other")
    assert (folder / "session.json").read_bytes() == manifest
    assert "other" in [x.name for x in second.objects.values()]  # kept in memory
    # the session that owns the folder (and a restored copy of it) keep saving there
    first.rename(1, "liver (checked)")
    restored = AnnotationSession.load(folder)
    restored.rename(2, "left kidney")
    assert AnnotationSession.load(folder).objects[2].name == "left kidney"


def test_label_ids_above_255_round_trip(tmp_path):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, folder=tmp_path / "s")
    big = s.new_object("vessel", object_id=40000)
    small = s.new_object("liver", object_id=3)
    s.commit_slices(big.id, {z: kidney(z) for z in range(4, 9)}, "propagated")
    s.commit_slices(small.id, {z: liver(z) for z in range(6, 12)}, "propagated")
    entries = json.loads((tmp_path / "s" / "session.json").read_text())["labels"]["slices"]
    assert entries["5"]["bpv"] == 2 and entries["10"]["bpv"] == 1  # uint8 where ids fit a byte
    r = AnnotationSession.load(tmp_path / "s")
    np.testing.assert_array_equal(r.labels, s.labels)
    assert (r.labels == 40000).sum() == sum(kidney(z).sum() for z in range(4, 9))


def test_slice_encoding_round_trip_edges(tmp_path):
    from napari_medprompt.session.store import decode_slice, encode_slice

    rng = np.random.default_rng(0)
    for plane in [np.zeros((7, 5), np.uint16), np.zeros((7, 5), np.uint16), rng.integers(0, 3, (7, 5)).astype(np.uint16)]:
        plane[0, 0] = 1
        plane[-1, -1] = 65535 if plane.sum() % 2 else 2
        blob, meta = encode_slice(plane)
        np.testing.assert_array_equal(decode_slice(blob, plane.shape, meta, tmp_path / "x" / "p", 0), plane)
    one = np.zeros((9, 4), np.uint16)
    one[4, 2] = 7
    blob, meta = encode_slice(one)
    assert meta["rows"] == [4, 5] and meta["bpv"] == 1
    np.testing.assert_array_equal(decode_slice(blob, one.shape, meta, tmp_path / "x" / "p", 0), one)
    with pytest.raises(SessionCorruptError, match="slice 3 fails its checksum"):
        decode_slice(blob, one.shape, {**meta, "crc32": meta["crc32"] ^ 1}, tmp_path / "x" / "p", 3)
