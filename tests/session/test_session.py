"""Session core: commits, lock protection, review, undo/redo exactness, hand edits, stats, events."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.session import AnnotationSession, ObjectLockedError
from tests.session._synthetic import KEY, SHAPE, SPACING, disc, kidney, liver


@pytest.fixture
def session():
    return AnnotationSession(SHAPE, SPACING, image_key=KEY)


def test_undo_redo_restore_label_map_exactly(session):
    a = session.new_object("liver")
    b = session.new_object("kidney")
    states = [session.labels.copy()]
    session.commit_slices(a.id, {z: liver(z) for z in range(5, 15)}, "propagated")
    states.append(session.labels.copy())
    session.commit_slices(b.id, {z: kidney(z) for z in range(8, 20)}, "prompted")
    states.append(session.labels.copy())
    session.set_status(a.id, range(5, 9), "rejected")
    states.append(session.labels.copy())
    before_edit = {12: session.labels[12].copy()}
    session.labels[12][0:30, 0:30] = b.id  # napari paint on the shared array
    session.apply_edit(b.id, before_edit)
    states.append(session.labels.copy())
    assert all(not np.array_equal(states[i], states[i + 1]) for i in range(len(states) - 1))

    for want in reversed(states[:-1]):
        assert session.undo()
        np.testing.assert_array_equal(session.labels, want)
    for want in states[1:]:
        assert session.redo()
        np.testing.assert_array_equal(session.labels, want)
    assert not session.redo()
    # object records follow too: undoing the reject brings its status back
    session.undo()
    session.undo()
    assert session.objects[a.id].slice_status[5] == "propagated"


def test_undo_object_creation_and_deletion(session):
    a = session.new_object("liver")
    session.commit_slices(a.id, {7: liver(7)}, "prompted")
    filled = session.labels.copy()
    session.delete_object(a.id)
    assert a.id not in session.objects and not session.labels.any()
    session.undo()
    assert session.objects[a.id].name == "liver"
    np.testing.assert_array_equal(session.labels, filled)


def test_locked_object_survives_overlapping_commit(session):
    a = session.new_object("liver")
    session.commit_slices(a.id, {z: liver(z) for z in range(5, 15)}, "propagated")
    session.set_locked(a.id, True)
    locked_before = session.labels == a.id
    b = session.new_object("tumour")
    big = disc((45, 40), 40)  # covers the liver entirely
    session.commit_slices(b.id, {z: big for z in range(0, 20)}, "propagated", overwrite=True)
    np.testing.assert_array_equal(session.labels == a.id, locked_before)
    assert session.last_commit_info["blocked_voxels"] == int(
        sum(np.count_nonzero(big & locked_before[z]) for z in range(20)))
    assert ((session.labels == b.id) == (big[None] & ~locked_before) * (np.arange(SHAPE[0]) < 20)[:, None, None]).all()
    with pytest.raises(ObjectLockedError, match="locked"):
        session.commit_slices(a.id, {5: big}, "edited")
    with pytest.raises(ObjectLockedError):
        session.set_status(a.id, [5], "rejected")


def test_unlocked_objects_kept_unless_overwrite(session):
    a = session.new_object("liver")
    session.commit_slices(a.id, {10: liver(10)}, "prompted")
    b = session.new_object("other")
    session.commit_slices(b.id, {10: disc((45, 40), 40)}, "prompted")
    np.testing.assert_array_equal(session.labels[10] == a.id, liver(10))
    session.commit_slices(b.id, {10: disc((45, 40), 40)}, "prompted", overwrite=True)
    assert not (session.labels == a.id).any()


def test_propagation_skips_accepted_slices_of_same_object(session):
    a = session.new_object("liver")
    session.commit_slices(a.id, {z: liver(z) for z in range(5, 10)}, "propagated")
    session.set_status(a.id, [6, 7], "accepted")
    changed = session.commit_slices(a.id, {z: disc((10, 10), 5) for z in range(5, 10)}, "propagated")
    assert changed == {5, 8, 9}
    assert session.last_commit_info["skipped_accepted"] == [6, 7]
    np.testing.assert_array_equal(session.labels[6] == a.id, liver(6))


def test_reject_clears_only_that_object_on_those_slices(session):
    a = session.new_object("liver")
    b = session.new_object("kidney")
    session.commit_slices(a.id, {z: liver(z) for z in range(5, 20)}, "propagated")
    session.commit_slices(b.id, {z: kidney(z) for z in range(5, 20)}, "propagated")
    kid_before = session.labels == b.id
    marked = session.set_status(a.id, range(8, 12), "rejected")
    assert marked == {8, 9, 10, 11}
    assert not (session.labels[8:12] == a.id).any()
    for z in [5, 6, 7, 12, 19]:
        np.testing.assert_array_equal(session.labels[z] == a.id, liver(z) & ~kidney(z))
    np.testing.assert_array_equal(session.labels == b.id, kid_before)
    assert session.objects[a.id].slices_with("rejected") == [8, 9, 10, 11]
    assert session.objects[b.id].slices_with("propagated") == list(range(5, 20))


def test_stats_volume_ml_from_spacing(session):
    a = session.new_object("cube")
    m = np.zeros(SHAPE[1:], bool)
    m[10:30, 20:45] = True  # 20 x 25 voxels
    session.commit_slices(a.id, {z: m for z in range(3, 11)}, "propagated")
    st = session.object_stats(a.id)
    assert st["slices_covered"] == 8 and st["slice_range"] == (3, 10)
    assert st["n_voxels"] == 8 * 20 * 25
    # 4000 voxels of 2.5 x 0.8 x 0.8 mm = 6400 mm^3 = 6.4 mL
    assert st["volume_ml"] == pytest.approx(6.4)
    session.set_status(a.id, [3], "rejected")
    assert session.object_stats(a.id)["volume_ml"] == pytest.approx(5.6)


def test_hand_edit_marks_edited_and_protects_locked(session):
    a = session.new_object("liver")
    session.commit_slices(a.id, {10: liver(10)}, "propagated")
    session.set_locked(a.id, True)
    b = session.new_object("lesion")
    before = {10: session.labels[10].copy()}
    after = session.labels.copy()
    after[10][40:50, 35:45] = b.id  # paints over the locked liver too
    after[10][80:90, 90:100] = b.id
    session.apply_edit(b.id, before, after)
    np.testing.assert_array_equal(session.labels[10] == a.id, liver(10))  # liver untouched
    assert (session.labels[10][80:90, 90:100] == b.id).all()
    assert session.last_commit_info["protected_voxels"] > 0
    assert session.objects[b.id].slice_status == {10: "edited"}
    assert a.id in session.objects and session.objects[a.id].slice_status[10] == "propagated"


def test_paint_with_unknown_label_creates_object(session):
    before = {4: session.labels[4].copy()}
    session.labels[4][1:3, 1:3] = 9
    session.apply_edit(9, before)
    assert session.objects[9].slice_status == {4: "edited"}


def test_provenance_records_model_user_and_time(session):
    a = session.new_object("liver")
    session.record_prompt(a.id, 7, points=[[40, 30], [10, 10]], labels=[1, 0], box=[20, 20, 60, 60])
    session.commit_slices(a.id, {7: liver(7)}, "prompted", {
        "backend": "sam2", "model": "sam2.1-hiera-tiny", "version": "1.1.0", "device": "cpu",
        "random_weights": True})
    p = session.objects[a.id].provenance
    assert p["backend"] == "sam2" and p["model"] == "sam2.1-hiera-tiny" and p["random_weights"] is True
    assert p["user"] and p["created"].endswith("Z") and p["log"][-1]["action"] == "prompted"
    assert session.objects[a.id].prompts[7]["labels"] == [1, 0]


def test_change_callbacks_and_unsubscribe(session):
    events = []
    off = session.on_change(events.append)
    a = session.new_object("x")
    session.commit_slices(a.id, {3: liver(3)}, "prompted")
    assert [e.kind for e in events] == ["objects", "labels"]
    assert events[-1].slices == frozenset({3}) and events[-1].object_id == a.id
    off()
    session.undo()
    assert len(events) == 2


def test_bad_input_messages(session):
    a = session.new_object("x")
    with pytest.raises(ValueError, match="shape"):
        session.commit_slices(a.id, {3: np.ones((5, 5), bool)}, "prompted")
    with pytest.raises(ValueError, match="outside the image"):
        session.commit_slices(a.id, {99: liver(1)}, "prompted")
    with pytest.raises(KeyError, match="no object"):
        session.commit_slices(77, {3: liver(1)}, "prompted")
    with pytest.raises(ValueError, match="status"):
        session.commit_slices(a.id, {3: liver(1)}, "done")
    assert not session.labels.any()
