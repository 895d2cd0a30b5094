"""A damaged session file costs only what is damaged: every slice that verifies is restored, the
rest is named, the damaged originals are kept, and the folder is left consistent."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_medprompt.session import AnnotationSession, SessionCorruptError
from napari_medprompt.session.store import MANIFEST, MANIFEST_BACKUP, SLICE_DIR
from tests.session._synthetic import KEY, SHAPE, SPACING, kidney, liver

REVIEWED = range(2, 38)  # 36 liver slices reviewed (committed 12 per save: three packs)


def _reviewed_session(folder):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="ct", folder=folder)
    a = s.new_object("liver")
    zs = list(REVIEWED)
    for i in range(0, len(zs), 12):
        s.commit_slices(a.id, {z: liver(z) for z in zs[i:i + 12]}, "propagated")
    s.set_status(a.id, zs, "accepted")
    b = s.new_object("kidney")
    s.commit_slices(b.id, {z: kidney(z) for z in range(10, 30)}, "prompted")
    return s


def _entries(folder):
    return json.loads((folder / MANIFEST).read_text())["labels"]["slices"]


def test_flipped_byte_in_one_pack_restores_every_other_slice(tmp_path):
    folder = tmp_path / "ct.medprompt"
    original = _reviewed_session(folder)
    entries = _entries(folder)
    victim = entries["20"]
    pack = folder / SLICE_DIR / victim["pack"]
    data = bytearray(pack.read_bytes())
    data[victim["offset"] + victim["length"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    damaged_bytes = bytes(data)

    with pytest.raises(SessionCorruptError, match="slice 20"):  # the strict read still refuses
        AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)

    s = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE, partial=True)
    report = s.restore_report
    assert set(report.damaged_slices) == {20}
    assert report.restored_slices == len(entries) - 1
    for z in range(SHAPE[0]):
        if z != 20:
            np.testing.assert_array_equal(s.labels[z], original.labels[z], err_msg=f"slice {z}")
    assert not s.labels[20].any()
    liv, kid = s.objects[1], s.objects[2]
    # the status of the lost slice is dropped (it would describe voxels that are not there)
    assert 20 not in liv.slice_status and 20 not in kid.slice_status
    assert liv.slices_with("accepted") == [z for z in REVIEWED if z != 20]
    assert report.objects_hit == {"liver": [20], "kidney": [20]}
    msg = report.message()
    assert "slice(s) 20" in msg and "'liver'" in msg and "'kidney'" in msg and str(report.kept_in) in msg
    # the damaged original is kept byte for byte; the folder itself is consistent again
    assert (report.kept_in / SLICE_DIR / victim["pack"]).read_bytes() == damaged_bytes
    again = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)  # strict: verifies now
    np.testing.assert_array_equal(again.labels, s.labels)
    # the restored session keeps working and saving
    s.commit_slices(liv.id, {20: liver(20)}, "edited")
    assert (AnnotationSession.load(folder).labels[20] == liv.id).any()


def test_truncated_pack_loses_only_its_tail(tmp_path):
    folder = tmp_path / "ct.medprompt"
    original = _reviewed_session(folder)
    entries = _entries(folder)
    pack_name = entries["2"]["pack"]  # the first 12 liver slices
    in_pack = sorted(int(z) for z, e in entries.items() if e["pack"] == pack_name)
    assert len(in_pack) >= 6
    half = len(in_pack) // 2
    pack = folder / SLICE_DIR / pack_name
    cut = entries[str(in_pack[half])]["offset"] + 3
    pack.write_bytes(pack.read_bytes()[:cut])
    s = AnnotationSession.load(folder, partial=True)
    assert sorted(s.restore_report.damaged_slices) == in_pack[half:]
    for z in range(SHAPE[0]):
        if z not in in_pack[half:]:
            np.testing.assert_array_equal(s.labels[z], original.labels[z])


@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_damaged_session_json_falls_back_on_its_backup(tmp_path, damage):
    folder = tmp_path / "ct.medprompt"
    original = _reviewed_session(folder)
    text = (folder / MANIFEST).read_text()
    assert (folder / MANIFEST_BACKUP).read_text() == text
    (folder / MANIFEST).write_text(text[: len(text) // 2] if damage == "truncated" else "")
    with pytest.raises(SessionCorruptError, match="cannot be read"):
        AnnotationSession.load(folder)
    s = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE, partial=True)
    np.testing.assert_array_equal(s.labels, original.labels)
    assert {o.name for o in s.objects.values()} == {"liver", "kidney"}
    report = s.restore_report
    assert report.manifest_problem and not report.damaged_slices
    assert "backup copy" in report.message()
    assert (report.kept_in / MANIFEST).stat().st_size == (0 if damage == "empty" else len(text) // 2)
    assert AnnotationSession.load(folder).objects[1].name == "liver"  # session.json rewritten


def test_both_manifests_gone_is_a_clear_error_and_nothing_is_deleted(tmp_path):
    folder = tmp_path / "ct.medprompt"
    _reviewed_session(folder)
    (folder / MANIFEST).write_text("")
    (folder / MANIFEST_BACKUP).write_text("{")
    packs = sorted(os.listdir(folder / SLICE_DIR))
    with pytest.raises(SessionCorruptError, match="cannot be read as a session file"):
        AnnotationSession.load(folder, partial=True)
    assert sorted(os.listdir(folder / SLICE_DIR)) == packs


def test_an_unreadable_object_record_is_named_and_its_voxels_kept(tmp_path):
    folder = tmp_path / "ct.medprompt"
    original = _reviewed_session(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["objects"][1]["slice_status"] = {"12": "bogus"}  # the kidney's record is damaged
    text = json.dumps(manifest)
    (folder / MANIFEST).write_text(text)
    (folder / MANIFEST_BACKUP).write_text(text)
    with pytest.raises(SessionCorruptError, match="object records malformed"):
        AnnotationSession.load(folder)
    s = AnnotationSession.load(folder, partial=True)
    np.testing.assert_array_equal(s.labels, original.labels)
    assert s.objects[1].name == "liver" and s.objects[2].name == "object 2 (record damaged)"
    msg = s.restore_report.message()
    assert "record 2" in msg and "bogus" in msg and "placeholder" in msg
