"""Grouped undo: changes committed in chunks (a propagation saved as it runs) undo as one step."""

from __future__ import annotations

import numpy as np

from napari_medprompt.session import AnnotationSession
from napari_medprompt.session.history import SliceDiff
from tests.session._synthetic import KEY, SHAPE, SPACING, kidney, liver


def test_chunked_commits_in_a_group_are_one_exact_undo_step(tmp_path):
    session = AnnotationSession(SHAPE, SPACING, image_key=KEY, folder=tmp_path / "s")
    a = session.new_object("liver")
    b = session.new_object("kidney")
    session.commit_slices(b.id, {z: kidney(z) for z in range(8, 20)}, "prompted")
    session.commit_slices(a.id, {10: liver(10)}, "prompted")
    before, status_before = session.labels.copy(), dict(session.objects[a.id].slice_status)
    n_steps = len(session.history._undo)

    session.begin_undo_group("propagated liver")
    session.commit_slices(a.id, {z: liver(z) for z in range(11, 15)}, "propagated")
    session.commit_slices(a.id, {z: liver(z) for z in range(15, 20)}, "propagated")
    # the same slice again, with a different mask: the group keeps the first "before"
    session.commit_slices(a.id, {14: np.roll(liver(14), 3, axis=1)}, "propagated")
    session.end_undo_group()
    after, status_after = session.labels.copy(), dict(session.objects[a.id].slice_status)

    assert len(session.history._undo) == n_steps + 1
    assert session.history.undo_label == "propagated liver"
    assert not np.array_equal(before, after)
    assert session.unsaved_slices == set()  # every chunk was autosaved as it came
    reloaded = AnnotationSession.load(tmp_path / "s", image_key=KEY, shape=SHAPE)
    np.testing.assert_array_equal(reloaded.labels, after)

    assert session.undo()
    np.testing.assert_array_equal(session.labels, before)
    assert session.objects[a.id].slice_status == status_before
    assert session.redo()
    np.testing.assert_array_equal(session.labels, after)
    assert session.objects[a.id].slice_status == status_after
    # commits after the group are separate steps again
    session.commit_slices(a.id, {21: liver(21)}, "prompted")
    assert session.undo()
    np.testing.assert_array_equal(session.labels, after)


def test_undo_inside_a_group_ends_it():
    session = AnnotationSession(SHAPE, SPACING, image_key=KEY)
    a = session.new_object("liver")
    empty = session.labels.copy()
    session.begin_undo_group("propagated liver")
    session.commit_slices(a.id, {12: liver(12)}, "propagated")
    one = session.labels.copy()
    assert session.undo()
    np.testing.assert_array_equal(session.labels, empty)
    session.commit_slices(a.id, {13: liver(13)}, "propagated")  # a new step, not merged into the undone one
    session.end_undo_group()
    assert session.undo()
    np.testing.assert_array_equal(session.labels, empty)
    assert session.redo()
    assert session.labels[13].any() and not session.labels[12].any()
    assert not np.array_equal(session.labels, one)


def test_slice_diff_composition_restores_both_ends():
    rng = np.random.default_rng(0)
    p0 = rng.integers(0, 3, (16, 16)).astype(np.uint16)
    p1 = p0.copy()
    p1[rng.random((16, 16)) < 0.3] = 5
    p2 = p1.copy()
    p2[rng.random((16, 16)) < 0.3] = 0
    p2[0, 0] = p0[0, 0]
    both = SliceDiff.between(p0, p1).then(SliceDiff.between(p1, p2))
    plane = p0.copy()
    both.apply(plane, forward=True)
    np.testing.assert_array_equal(plane, p2)
    both.apply(plane, forward=False)
    np.testing.assert_array_equal(plane, p0)
    assert SliceDiff.between(p0, p1).then(SliceDiff.between(p1, p0)) is None
