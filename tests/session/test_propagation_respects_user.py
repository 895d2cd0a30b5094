"""A propagation never undoes the clinician: rejected, hand-edited (erased too), prompted and
accepted slices are never overwritten; edits made while a propagation runs are undo steps of their
own and the run's later chunks leave those slices alone; a new run can retract what the previous run
left, and nothing else."""

from __future__ import annotations

import numpy as np

from napari_medprompt.session import AnnotationSession
from tests.session._synthetic import KEY, SHAPE, SPACING, liver, wanderer


def _session(tmp_path=None):
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, folder=None if tmp_path is None else tmp_path / "s")
    a = s.new_object("liver")
    s.commit_slices(a.id, {z: liver(z) for z in range(5, 21)}, "propagated")
    return s, a.id


def test_rejected_and_erased_slices_are_not_refilled(tmp_path):
    s, oid = _session(tmp_path)
    s.set_status(oid, [8], "rejected")
    before = s.labels[12].copy()
    erased = before.copy()
    erased[erased == oid] = 0
    s.apply_edit(oid, {12: before}, {12: erased})  # the user erased the object on slice 12
    assert s.status_of(oid, 12) == "edited"
    s.commit_slices(oid, {z: wanderer(z, 3) for z in range(5, 21)}, "propagated")
    assert not (s.labels[8] == oid).any() and s.status_of(oid, 8) == "rejected"
    assert not (s.labels[12] == oid).any() and s.status_of(oid, 12) == "edited"
    assert s.last_commit_info["skipped"] == [8, 12]
    np.testing.assert_array_equal(s.labels[9] == oid, wanderer(9, 3))  # still "propagated": replaced
    # "needs review" is a propagation status too: replaced by the next run, never by the user's
    s.commit_slices(oid, {9: liver(9)}, "needs review")
    assert s.status_of(oid, 9) == "needs review"
    s.commit_slices(oid, {9: wanderer(9, 5)}, "propagated")
    assert s.status_of(oid, 9) == "propagated"
    # the rejected status survives a save / restore
    r = AnnotationSession.load(tmp_path / "s")
    assert r.status_of(oid, 8) == "rejected" and r.status_of(oid, 12) == "edited"


def test_edits_during_a_run_are_their_own_undo_steps_and_are_respected():
    s, oid = _session()
    b = s.new_object("kidney").id
    start = s.labels.copy()
    s.begin_undo_group("propagated liver")
    s.commit_slices(oid, {z: wanderer(z, 1) for z in range(21, 26)}, "propagated")  # chunk 1
    after_chunk1 = s.labels.copy()
    # the user paints the kidney on slice 28 and accepts liver slice 6 while the run goes on
    before28 = s.labels[28].copy()
    painted = before28.copy()
    painted[40:60, 70:90] = b
    s.apply_edit(b, {28: before28}, {28: painted})
    after_edit = s.labels.copy()
    s.commit_slices(oid, {z: wanderer(z, 1) for z in range(26, 31)}, "propagated")  # chunk 2
    s.end_undo_group()
    assert s.last_commit_info["skipped"] == [28]  # the slice the user touched is left alone
    np.testing.assert_array_equal(s.labels[28], painted)
    final = s.labels.copy()
    labels = [st.label for st in s.history._undo[-3:]]
    assert labels == ["propagated liver", "hand edit", "propagated liver"]
    # every undo is exact, in order
    assert s.undo()
    np.testing.assert_array_equal(s.labels, after_edit)
    assert s.undo()
    np.testing.assert_array_equal(s.labels, after_chunk1)
    assert s.undo()
    np.testing.assert_array_equal(s.labels, start)
    for _ in range(3):
        assert s.redo()
    np.testing.assert_array_equal(s.labels, final)


def test_retract_replaces_only_the_previous_runs_slices():
    s, oid = _session()
    s.set_status(oid, [18], "accepted")
    before17 = s.labels[17].copy()
    edited = before17.copy()
    edited[50:55, 30:35] = oid
    s.apply_edit(oid, {17: before17}, {17: edited})
    n_steps = len(s.history._undo)
    s.begin_undo_group("propagated liver")
    s.commit_slices(oid, {z: liver(z) for z in range(5, 12)}, "propagated")  # the new run ends at 11
    cleared = s.retract_propagated(oid, range(12, 21))
    s.end_undo_group()
    assert cleared == {12, 13, 14, 15, 16, 19, 20}
    assert not np.isin(s.labels[list(cleared)], [oid]).any()
    assert (s.labels[17] == oid).any() and (s.labels[18] == oid).any()  # user's slices kept
    assert s.status_of(oid, 18) == "accepted" and s.status_of(oid, 17) == "edited"
    assert all(s.status_of(oid, z) is None for z in cleared)
    assert len(s.history._undo) == n_steps + 1  # the run and its retraction: one undo step
    assert s.undo()
    assert all((s.labels[z] == oid).any() and s.status_of(oid, z) == "propagated" for z in cleared)
