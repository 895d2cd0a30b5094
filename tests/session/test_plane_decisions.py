"""Decisions made in a coronal or sagittal plane are recorded as what they are and never overwritten.

Accepting a coronal slice records it in the object's ``plane_status`` (not as 80 "prompted" axial
slices): the axial slices the user decided (prompted, edited, erased, accepted, rejected) are left as
they are, the other axial slices it changes become "needs review". Every later commit (a
propagation's, an accepted axial preview's, a retraction) keeps the voxels of the coronal rows /
sagittal columns the user decided, inside and outside the object; a hand edit changes them and marks
the plane slice "edited". Undo, redo, save and reopen keep the plane decisions and the plane prompts;
older session files load unchanged; a partial restore drops only damaged plane entries.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_medprompt.segment.planes import axial_masks
from napari_medprompt.session import AnnotationSession, ObjectLockedError, SessionCorruptError
from napari_medprompt.session.store import MANIFEST
from tests.session._synthetic import KEY, SHAPE, SPACING, liver, wanderer

Y = 45  # the coronal slice the user accepts (it cuts through the liver blob, rows 5..20)


def coronal_mask() -> np.ndarray:
    """The user's coronal mask (z, x): a block that differs from the liver on purpose."""
    m = np.zeros((SHAPE[0], SHAPE[2]), dtype=bool)
    m[3:29, 26:52] = True
    return m


def _session(folder=None):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="ct", folder=folder)
    oid = s.new_object("liver").id
    s.commit_slices(oid, {z: liver(z) for z in range(5, 21)}, "propagated")
    return s, oid


def _decided_session(folder=None):
    """Liver propagated on 5..20; the user prompted axial 8, accepted 10, rejected 12."""
    s, oid = _session(folder)
    s.commit_slices(oid, {8: liver(8)}, "prompted")
    s.set_status(oid, [10], "accepted")
    s.set_status(oid, [12], "rejected")
    return s, oid


def test_accepting_a_coronal_slice_marks_it_and_leaves_the_users_axial_decisions(tmp_path):
    s, oid = _decided_session()
    m = coronal_mask()
    changed = s.commit_plane(oid, "coronal", {Y: m}, "prompted", {"backend": "classic"})
    obj = s.objects[oid]
    assert obj.plane_status == {"coronal": {Y: "prompted"}}
    before = _decided_session()[0].labels
    # the plane slice holds the user's mask, except on the axial slices the user decided
    decided = [8, 10, 12]
    expect = np.where(m, oid, 0)
    expect[decided] = before[decided, Y, :]
    np.testing.assert_array_equal(s.labels[:, Y, :], expect)
    for z in decided:  # prompted, accepted, rejected: not a voxel changed
        np.testing.assert_array_equal(s.labels[z], before[z], err_msg=f"slice {z}")
    assert not (s.labels[12] == oid).any()
    assert [obj.slice_status[z] for z in decided] == ["prompted", "accepted", "rejected"]
    # the other axial slices that changed need review (not 23 "prompted" axial slices)
    review = sorted(z for z in range(SHAPE[0]) if z not in decided and (s.labels[z] != before[z]).any())
    assert review == sorted(set(range(3, 29)) - set(decided))
    assert all(obj.slice_status[z] == "needs review" for z in review)
    info = s.last_commit_info
    assert info["needs_review"] == review and changed == set(review)
    assert info["kept_axial"] == decided
    assert info["plane"] == "coronal" and info["plane_slices"] == [Y]
    assert obj.provenance["plane"] == "coronal" and obj.provenance["plane_slices"] == [Y]


def test_undo_and_redo_restore_plane_status_and_voxels():
    s, oid = _decided_session()
    labels0 = s.labels.copy()
    status0 = dict(s.objects[oid].slice_status)
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "accepted")
    labels1 = s.labels.copy()
    status1 = dict(s.objects[oid].slice_status)
    assert s.undo()
    np.testing.assert_array_equal(s.labels, labels0)
    assert s.objects[oid].plane_status == {} and s.objects[oid].slice_status == status0
    assert s.redo()
    np.testing.assert_array_equal(s.labels, labels1)
    assert s.objects[oid].plane_status == {"coronal": {Y: "accepted"}}
    assert s.objects[oid].slice_status == status1


def test_plane_decisions_and_prompts_survive_save_and_reopen(tmp_path):
    folder = tmp_path / "ct.medprompt"
    s, oid = _decided_session(folder)
    s.record_prompt(oid, Y, [[15.0, 40.0], [20.0, 30.0]], [1, 0], None, plane="coronal")
    s.record_prompt(oid, 40, [[50.0, 45.0]], [1], [5, 30, 25, 60], plane="sagittal")
    s.record_prompt(oid, 8, [[45.0, 40.0]], [1])  # an axial prompt, as before
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted")
    s.set_plane_status(oid, "sagittal", [40], "rejected")
    obj = s.objects[oid]
    assert obj.plane_prompts["coronal"][Y] == {"points": [[15.0, 40.0], [20.0, 30.0]], "labels": [1, 0],
                                               "box": None}
    assert set(obj.prompts) == {8}  # plane prompts are not axial prompts
    with pytest.raises(ValueError, match="outside"):
        s.record_prompt(oid, SHAPE[1], [[1.0, 1.0]], [1], plane="coronal")
    r = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)
    robj = r.objects[oid]
    # the sagittal rejection cut the prompted coronal slice: the user's newer decision, marked edited
    assert robj.plane_status == {"coronal": {Y: "edited"}, "sagittal": {40: "rejected"}}
    assert robj.plane_prompts == obj.plane_prompts and robj.prompts == obj.prompts
    assert robj.slice_status == obj.slice_status
    np.testing.assert_array_equal(r.labels, s.labels)
    assert not (r.labels[:, :, 40] == oid).any()
    # the protection works on the reopened session too
    r.commit_slices(oid, {z: wanderer(z, 2) for z in range(5, 21)}, "propagated")
    np.testing.assert_array_equal(r.labels[5:21, Y, :], s.labels[5:21, Y, :])
    assert not (r.labels[:, :, 40] == oid).any()


def test_an_old_session_file_without_plane_records_loads_and_a_damaged_one_is_reported(tmp_path):
    folder = tmp_path / "ct.medprompt"
    s, oid = _decided_session(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert "plane_status" not in manifest["objects"][0] and "plane_prompts" not in manifest["objects"][0]
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "accepted")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["objects"][0]["plane_status"] == {"coronal": {str(Y): "accepted"}}
    # as written by an older version: no plane records
    old = json.loads(json.dumps(manifest))
    del old["objects"][0]["plane_status"]
    (folder / MANIFEST).write_text(json.dumps(old))
    r = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)
    assert r.objects[oid].plane_status == {} and r.objects[oid].plane_prompts == {}
    assert r.objects[oid].slice_status == s.objects[oid].slice_status
    # a damaged plane record is refused; a partial restore drops only that entry and says so
    bad = json.loads(json.dumps(manifest))
    bad["objects"][0]["plane_status"] = {"coronal": {str(Y): "bogus", "50": "accepted"}}
    bad["objects"][0]["plane_prompts"] = {"sagittal": {"40": {"points": "x"}}}
    (folder / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(SessionCorruptError, match="object records malformed"):
        AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)
    p = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE, partial=True, autosave=False)
    pobj = p.objects[oid]
    assert pobj.name == "liver" and pobj.slice_status == s.objects[oid].slice_status  # not a placeholder
    assert pobj.plane_status == {"coronal": {50: "accepted"}} and pobj.plane_prompts == {}
    assert not p.restore_report.bad_objects and not p.restore_report.complete
    msg = p.restore_report.message()
    assert "'liver'" in msg and "bogus" in msg and "sagittal slice 40" in msg and "placeholder" not in msg
    np.testing.assert_array_equal(p.labels, s.labels)
    bad["objects"][0]["plane_status"] = {"axial": {"3": "accepted"}}  # axial decisions are slice_status
    (folder / MANIFEST).write_text(json.dumps(bad))
    with pytest.raises(SessionCorruptError, match="unknown plane"):
        AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)


def test_axial_propagation_and_retraction_keep_the_users_coronal_voxels():
    s, oid = _session()
    m = coronal_mask()
    s.commit_plane(oid, "coronal", {Y: m}, "accepted")
    zs = range(5, 21)
    # the model's next guess covers a different region: inside the user's mask where the model says
    # "not object" (x 26..31 on row Y), outside it where the model says "object" (x 52..90)
    model = {z: wanderer(z, 2) for z in zs}
    assert not model[10][Y, 26] and model[10][Y, 70] and m[10, 26] and not m[10, 70]
    s.commit_slices(oid, model, "propagated")
    for z in zs:
        np.testing.assert_array_equal(s.labels[z, Y], np.where(m[z], oid, 0), err_msg=f"slice {z}")
        np.testing.assert_array_equal(np.delete(s.labels[z], Y, axis=0) == oid, np.delete(model[z], Y, axis=0))
        assert s.objects[oid].slice_status[z] == "propagated"
    assert s.last_commit_info["plane_kept_voxels"] > 0
    # a retraction clears the model's voxels, never the user's
    s.retract_propagated(oid, zs)
    for z in zs:
        np.testing.assert_array_equal(s.labels[z], np.where(np.arange(SHAPE[1])[:, None] == Y,
                                                            np.where(m[z], oid, 0)[None, :], 0))
        assert s.objects[oid].slice_status[z] == "needs review"  # holds only the user's line
    assert s.objects[oid].plane_status == {"coronal": {Y: "accepted"}}


def test_a_rejected_sagittal_slice_stays_empty_under_propagation():
    s, oid = _session()
    X = 40
    assert (s.labels[:, :, X] == oid).any()
    s.set_plane_status(oid, "sagittal", [X], "rejected")
    assert not (s.labels[:, :, X] == oid).any()
    assert s.objects[oid].plane_status == {"sagittal": {X: "rejected"}}
    s.commit_slices(oid, {z: wanderer(z, 4) for z in range(0, 30)}, "needs review")
    assert (s.labels == oid).sum() > 1000 and not (s.labels[:, :, X] == oid).any()


def test_a_coronal_propagation_commit_leaves_accepted_axial_slices_alone():
    s, oid = _decided_session()
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "accepted")
    before = s.labels.copy()
    # what a coronal run delivers: new coronal slices 30..60, turned into the axial slices they cross
    run = {y: (s.labels[:, y, :] == oid) | (np.arange(SHAPE[0])[:, None] < 30) & (np.arange(SHAPE[2]) < 60)
           for y in range(30, 61) if y != Y}
    masks = axial_masks(s.labels == oid, "coronal", run)
    assert {8, 10, 12} <= set(masks)
    s.commit_slices(oid, masks, "propagated")
    for z in (8, 10, 12):
        np.testing.assert_array_equal(s.labels[z], before[z], err_msg=f"slice {z}")
    assert [s.objects[oid].slice_status[z] for z in (8, 10, 12)] == ["prompted", "accepted", "rejected"]
    np.testing.assert_array_equal(s.labels[:, Y, :], before[:, Y, :])  # the accepted coronal slice
    assert (s.labels[20, 35] == oid).any()  # and the run did write elsewhere


def test_locked_objects_are_untouched_by_plane_commits():
    s, oid = _session()
    b = s.new_object("kidney").id
    plane = s.labels[25].copy()  # beyond the liver (an edit over it would be the liver's decided slice)
    assert not (plane == oid).any()
    plane[Y - 2:Y + 3, 30:40] = b
    s.apply_edit(b, {25: s.labels[25].copy()}, {25: plane})
    s.set_locked(b, True)
    before_b = s.labels == b
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted")
    np.testing.assert_array_equal(s.labels == b, before_b)
    assert s.last_commit_info["blocked_voxels"] == 10  # the kidney's voxels on row Y of slice 25
    with pytest.raises(ObjectLockedError):
        s.commit_plane(b, "coronal", {Y: coronal_mask()}, "prompted")
    with pytest.raises(ValueError, match="shape"):
        s.commit_plane(oid, "coronal", {Y: np.ones((SHAPE[0], SHAPE[1]), bool)}, "prompted")
    with pytest.raises(ValueError, match="slice status"):
        s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "propagated")  # plane statuses are the user's


def test_a_partial_restore_keeps_plane_decisions_and_says_they_cross_lost_slices(tmp_path):
    from napari_medprompt.session.store import SLICE_DIR

    folder = tmp_path / "ct.medprompt"
    s, oid = _decided_session(folder)
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "accepted")
    victim = json.loads((folder / MANIFEST).read_text())["labels"]["slices"]["15"]
    pack = folder / SLICE_DIR / victim["pack"]
    data = bytearray(pack.read_bytes())
    data[victim["offset"] + victim["length"] // 2] ^= 0xFF
    pack.write_bytes(bytes(data))
    r = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE, partial=True)
    assert 15 in r.restore_report.damaged_slices
    assert r.objects[oid].plane_status == {"coronal": {Y: "accepted"}}  # still protected elsewhere
    assert 15 not in r.objects[oid].slice_status
    assert r.restore_report.planes_hit == ["liver"]
    assert "coronal / sagittal slices decided for 'liver'" in r.restore_report.message()


def test_the_review_panel_names_plane_decisions_and_prompts():
    from napari_medprompt.session.review import prompt_summary, provenance_items

    s, oid = _decided_session()
    s.record_prompt(oid, Y, [[15.0, 40.0], [20.0, 30.0]], [1, 0], None, plane="coronal")
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted")
    s.set_plane_status(oid, "sagittal", [40, 41], "rejected")
    obj = s.objects[oid]
    assert prompt_summary(obj) == "coronal slice 45: 1 positive, 1 negative"
    items = dict(provenance_items(obj))
    assert items["Coronal slices"] == "edited 45" and items["Sagittal slices"] == "rejected 40-41"


def test_an_erased_axial_slice_stays_erased_when_a_coronal_preview_is_accepted():
    s, oid = _session()
    before15 = s.labels[15].copy()
    s.apply_edit(oid, {15: before15}, {15: np.zeros_like(before15)})  # the user erased slice 15
    assert s.objects[oid].slice_status[15] == "edited"
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted")
    assert not (s.labels[15] == oid).any() and s.objects[oid].slice_status[15] == "edited"
    assert 15 in s.last_commit_info["kept_axial"]


def test_a_coronal_preview_keeps_the_users_sagittal_decisions():
    s, oid = _session()
    X = 40
    s.set_plane_status(oid, "sagittal", [X], "rejected")
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted")
    assert coronal_mask()[:, X].any()  # the coronal mask crosses the rejected sagittal column
    assert not (s.labels[:, :, X] == oid).any()
    assert s.last_commit_info["plane_kept_voxels"] > 0


def test_accepting_plane_slices_changes_no_voxel_and_skips_absent_ones():
    s, oid = _session()
    before = s.labels.copy()
    assert not (s.labels[:, 2, :] == oid).any()
    changed = s.set_plane_status(oid, "coronal", [Y, 2], "accepted")
    assert changed == set()
    np.testing.assert_array_equal(s.labels, before)
    assert s.objects[oid].plane_status == {"coronal": {Y: "accepted"}}  # row 2 holds no liver
    assert s.undo() and s.objects[oid].plane_status == {}


def test_an_axial_preview_keeps_the_voxels_of_the_users_plane_decisions_and_a_hand_edit_changes_them():
    s, oid = _session()
    m = coronal_mask()
    s.commit_plane(oid, "coronal", {Y: m}, "accepted")
    line = s.labels[10, Y].copy()
    s.commit_slices(oid, {10: wanderer(10, 2)}, "prompted")  # an accepted axial preview
    np.testing.assert_array_equal(s.labels[10, Y], line)
    assert s.objects[oid].slice_status[10] == "prompted"
    assert s.last_commit_info["plane_kept_voxels"] > 0
    # a hand edit on the user's coronal row is the user's newest decision: it applies, marks it edited
    before = s.labels[10].copy()
    after = before.copy()
    after[Y, 30:40] = 0
    s.apply_edit(oid, {10: before}, {10: after})
    assert not (s.labels[10, Y, 30:40] == oid).any()
    assert s.objects[oid].plane_status == {"coronal": {Y: "edited"}}
    # an edit elsewhere leaves other plane decisions as they are
    s.set_plane_status(oid, "sagittal", [80], "rejected")
    before = s.labels[11].copy()
    after = before.copy()
    after[10, 10] = oid
    s.apply_edit(oid, {11: before}, {11: after})
    assert s.objects[oid].plane_status["sagittal"] == {80: "rejected"}


def test_rejecting_a_coronal_slice_marks_the_decided_slices_it_changes_as_edited():
    s, oid = _session()
    s.set_status(oid, [10], "accepted")
    X = 40
    s.set_plane_status(oid, "sagittal", [X], "accepted")
    assert (s.labels[10, Y] == oid).any() and (s.labels[:, Y, X] == oid).any()
    s.set_plane_status(oid, "coronal", [Y], "rejected")
    obj = s.objects[oid]
    assert not (s.labels[:, Y, :] == oid).any()
    assert obj.slice_status[10] == "edited" and obj.plane_status["sagittal"] == {X: "edited"}
    info = s.last_commit_info
    assert info["edited_axial"] == [10] and info["edited_plane"] == {"sagittal": [X]}
    assert 10 not in info["needs_review"]
    assert s.undo()
    obj = s.objects[oid]
    assert obj.slice_status[10] == "accepted" and obj.plane_status == {"sagittal": {X: "accepted"}}


def test_accepting_only_absent_plane_slices_makes_no_undo_step():
    s, oid = _session()
    assert s.set_plane_status(oid, "coronal", [0, 1, 2], "accepted") == set()
    assert s.objects[oid].plane_status == {}
    assert s.undo()  # undoes the propagation commit, not an empty step
    assert not (s.labels == oid).any()


def test_prompts_committed_with_a_mask_are_one_undo_step_with_it(tmp_path):
    folder = tmp_path / "ct.medprompt"
    s, oid = _session(folder)
    rec = {"points": [[40.0, 40.0]], "labels": [1], "box": None}
    s.commit_slices(oid, {8: liver(8)}, "prompted", None, False, {8: rec})
    s.commit_plane(oid, "coronal", {Y: coronal_mask()}, "prompted", None, {Y: {**rec, "points": [[10.0, 40.0]]}})
    obj = s.objects[oid]
    assert obj.prompts[8] == rec and obj.plane_prompts["coronal"][Y]["points"] == [[10.0, 40.0]]
    assert s.undo() and s.objects[oid].plane_prompts == {}
    assert s.undo() and 8 not in s.objects[oid].prompts
    assert s.redo() and s.redo()
    obj = s.objects[oid]
    assert obj.prompts[8] == rec and obj.plane_prompts["coronal"][Y]["points"] == [[10.0, 40.0]]
    r = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE)
    assert r.objects[oid].prompts == obj.prompts and r.objects[oid].plane_prompts == obj.plane_prompts
    # a bad prompt record refuses the whole commit
    before = s.labels.copy()
    with pytest.raises(ValueError):
        s.commit_slices(oid, {9: liver(9)}, "prompted", None, False, {9: {"points": [[1.0]], "labels": [1]}})
    np.testing.assert_array_equal(s.labels, before)


def test_rejecting_plane_slices_where_the_object_is_absent_records_nothing():
    s, oid = _session()
    s.set_plane_status(oid, "coronal", [Y], "rejected")
    assert s.last_commit_info["plane_slices"] == [Y]
    assert not (s.labels[:, 2, :] == oid).any()
    assert s.set_plane_status(oid, "coronal", [0, 1, 2], "rejected") == set()
    assert s.objects[oid].plane_status == {"coronal": {Y: "rejected"}}
    assert s.last_commit_info == {"plane": "coronal", "plane_slices": []}  # not the previous call's
    s.set_plane_status(oid, "coronal", [Y, 2], "rejected")  # a decided slice stays listed
    assert s.last_commit_info["plane_slices"] == [Y]
