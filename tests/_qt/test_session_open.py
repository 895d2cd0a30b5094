"""Finding and restoring an image's sessions when it is opened (no viewer needed): keyed by
content (a moved or copied case folder keeps its session), every session written for the image
offered, damaged / foreign / read-only folders handled with a warning and nothing lost."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from napari_medprompt._qt import session_binding
from napari_medprompt._qt.session_binding import open_session
from napari_medprompt.io.volume import Volume
from napari_medprompt.session.store import MANIFEST, SLICE_DIR
from tests.session._synthetic import SHAPE, SPACING, liver


def _image(folder, name="ct.nii.gz", seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_bytes(b"image file")  # only its place matters here; the voxels are below
    data = np.random.default_rng(seed).integers(-1000, 1000, SHAPE).astype(np.int16)
    return Volume(data=data, spacing=SPACING, name="ct", source=str(path), modality="CT")


def _annotate(vol, n=12):
    s, _note, _lvl = open_session(vol, lambda f: False)
    a = s.new_object("liver")
    s.commit_slices(a.id, {z: liver(z) for z in range(5, 5 + n)}, "prompted")
    return s


def _never(_folder):
    raise AssertionError("no session should be offered")


def test_moved_and_copied_case_folders_keep_their_session(tmp_path):
    vol = _image(tmp_path / "case1")
    s = _annotate(vol)
    assert s.folder == tmp_path / "case1" / "ct.medprompt"
    labels = s.labels.copy()
    shutil.move(tmp_path / "case1", tmp_path / "archive" / "case1")
    moved = Volume(data=vol.data, spacing=SPACING, name="ct", source=str(tmp_path / "archive/case1/ct.nii.gz"))
    offered = []
    r, note, level = open_session(moved, lambda f: offered.append(f) or True)
    assert offered == [tmp_path / "archive" / "case1" / "ct.medprompt"]
    np.testing.assert_array_equal(r.labels, labels)
    assert level == "info" and "Restored" in note
    shutil.copytree(tmp_path / "archive" / "case1", tmp_path / "copy")
    copied = Volume(data=vol.data, spacing=SPACING, name="ct", source=str(tmp_path / "copy/ct.nii.gz"))
    r2, _, _ = open_session(copied, lambda f: True)
    assert r2.folder == tmp_path / "copy" / "ct.medprompt"
    np.testing.assert_array_equal(r2.labels, labels)


def test_a_new_session_keeps_the_old_one_and_both_are_offered(tmp_path):
    vol = _image(tmp_path / "case")
    first = _annotate(vol, n=4)
    second, note, _ = open_session(vol, lambda f: False)  # "No": start a new session
    assert second.folder != first.folder and first.folder.is_dir()
    assert "earlier session" in note
    b = second.new_object("kidney")
    second.commit_slices(b.id, {3: liver(3)}, "prompted")
    seen = []

    def choose(cands):
        seen.extend(c.folder for c in cands)
        return next(c for c in cands if c.folder == first.folder)

    r, _, _ = open_session(vol, _never, choose)
    assert set(seen) == {first.folder, second.folder} and seen[0] == second.folder  # newest first
    np.testing.assert_array_equal(r.labels, first.labels)


def test_unwritable_place_sends_new_work_to_the_cache_and_it_is_offered_again(tmp_path, monkeypatch):
    vol = _image(tmp_path / "case")
    old = _annotate(vol, n=3)
    case = str(tmp_path / "case")
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, m, *a, **k: False if (m & os.W_OK and str(p).startswith(case))
                        else real_access(p, m, *a, **k))
    new, _, _ = open_session(vol, lambda f: False)  # "No" with a read-only case folder
    assert "sessions" in new.folder.parts
    b = new.new_object("spleen")
    new.commit_slices(b.id, {7: liver(7)}, "prompted")
    seen = []
    open_session(vol, _never, lambda cands: seen.extend(c.folder for c in cands))
    assert set(seen) == {old.folder, new.folder}
    # restoring the read-only one moves it to a writable folder: new work never strands
    r, note, _ = open_session(vol, _never, lambda cands: next(c for c in cands if c.folder == old.folder))
    assert r.folder != old.folder and "read-only" in note
    r.commit_slices(1, {9: liver(9)}, "edited")
    assert not r.unsaved_slices


def test_damaged_pack_restores_the_rest_with_a_warning(tmp_path):
    vol = _image(tmp_path / "case")
    s = _annotate(vol, n=12)
    pack = next((s.folder / SLICE_DIR).iterdir())
    data = bytearray(pack.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    r, note, level = open_session(vol, lambda f: True)
    assert level == "warning"
    lost = set(r.restore_report.damaged_slices)
    assert len(lost) == 1 and "Not restored" in note and "damaged originals are kept" in note
    for z in set(range(5, 17)) - lost:
        np.testing.assert_array_equal(r.labels[z], s.labels[z])


def test_foreign_and_unreadable_folders_are_named_and_left_alone(tmp_path):
    other = _image(tmp_path / "case", seed=1)
    foreign = _annotate(other)
    manifest = (foreign.folder / MANIFEST).read_bytes()
    vol = _image(tmp_path / "case", seed=2)  # another image now stored under the same name
    broken = tmp_path / "case" / "ct.old.medprompt"
    broken.mkdir()
    (broken / MANIFEST).write_text("")
    s, note, level = open_session(vol, _never)
    assert level == "warning"
    assert str(foreign.folder) in note and "another image" in note
    assert str(broken) in note and "cannot be read" in note
    assert s.folder not in (foreign.folder, broken)
    s.new_object("liver")
    assert (foreign.folder / MANIFEST).read_bytes() == manifest
    assert (broken / MANIFEST).read_text() == ""


@pytest.mark.parametrize("restore", [True])
def test_old_path_keyed_session_is_still_found(tmp_path, restore):
    from napari_medprompt.session import AnnotationSession, image_key

    vol = _image(tmp_path / "case")
    key = image_key(vol.source, SHAPE, SPACING)  # how sessions were keyed before
    old = AnnotationSession(SHAPE, SPACING, image_key=key, folder=tmp_path / "case" / "ct.medprompt")
    a = old.new_object("liver")
    old.commit_slices(a.id, {6: liver(6)}, "prompted")
    r, _, _ = open_session(vol, lambda f: restore)
    np.testing.assert_array_equal(r.labels, old.labels)
    assert r.image_key.startswith("content:")
    assert session_binding.find_sessions(vol.source, [r.image_key])[0][0].folder == old.folder
