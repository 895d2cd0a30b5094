"""Propagation in the Segment widget never undoes the clinician (classic backend, real CT):
rejected and erased slices stay as they are and stop the run, a re-run replaces what the previous
run left, doubted slices are committed as "needs review", edits during a run are respected and undo
on their own, and switching the image or closing during a run commits to the right session."""

from __future__ import annotations

import time

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    click_and_preview,
    deepest_point,
    load_backend,
    make_widget,
    press,
    reference_mask,
    stop_workers_after_test,
)
from napari_medprompt.session import AnnotationSession


@pytest.fixture(scope="module")
def liver():
    mask = reference_mask("liver")
    z = int(np.argmax(mask.sum(axis=(1, 2))))
    return mask, z, deepest_point(mask[z])


@pytest.fixture
def accepted(make_napari_viewer, qtbot, tmp_path, monkeypatch, liver):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    load_backend(qtbot, widget)
    _, z, (r, c) = liver
    click_and_preview(qtbot, widget, z, r, c)
    press(qtbot, widget.ui.accept)
    return viewer, widget, widget.ctrl.current_object, z


def _propagate(qtbot, widget, timeout=120000):
    with qtbot.waitSignal(widget.propagation_finished, timeout=timeout) as blocker:
        press(qtbot, widget.ui.propagate)
    return blocker.args[0]


def _slow_engine(monkeypatch, widget, seconds=0.05):
    """The real engine, with a pause after each slice so the test can act while it runs."""
    seg = widget.ctrl.segmenter
    real = seg.propagate

    def slow(seeds, settings):
        for result in real(seeds, settings):
            time.sleep(seconds)
            yield result

    monkeypatch.setattr(seg, "propagate", slow)


def _with(oid, session):
    return {z for z in range(session.shape[0]) if (session.labels[z] == oid).any()}


def test_rejected_and_erased_slices_stop_a_rerun_which_replaces_the_old_run(accepted, qtbot):
    viewer, widget, oid, z = accepted
    s = widget.ctrl.session
    _propagate(qtbot, widget)
    first = _with(oid, s)
    zr, ze = z + 2, z - 4
    assert {zr, ze, zr + 2, ze - 3} <= first
    s.set_status(oid, [zr], "rejected")  # as the Review dock does
    before = s.labels[ze].copy()
    erased = before.copy()
    erased[erased == oid] = 0
    s.apply_edit(oid, {ze: before}, {ze: erased})  # the user erased the liver on slice ze
    state = s.labels.copy()
    run = _propagate(qtbot, widget)
    assert zr not in run.results and ze not in run.results
    assert s.status_of(oid, zr) == "rejected" and s.status_of(oid, ze) == "edited"
    now = _with(oid, s)
    # the barriers end the run; what the first run left beyond them is gone, nothing else changed
    assert now == {zz for zz in first if ze < zz < zr}
    assert all(s.status_of(oid, zz) is None for zz in first - now - {zr, ze})
    np.testing.assert_array_equal(widget.ctrl.labels_layer.data, s.labels)
    press(qtbot, widget.ui.undo)  # the re-run, retraction included, is one undo step
    np.testing.assert_array_equal(s.labels, state)
    assert s.status_of(oid, zr) == "rejected"


def _gap_volume(viewer):
    """A bright disc on slices 4-25 that is missing on slice 15 (where a segmenter would lose it)."""
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 10, size=(30, 96, 96)).astype(np.float32)
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - 48) ** 2 + (xx - 48) ** 2 <= 15**2
    for z in range(4, 26):
        if z != 15:
            vol[z][disc] += 300
    return viewer.add_image(vol, name="gap")


def test_doubted_slices_are_committed_as_needs_review(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari_medprompt.session.review import object_rows, slice_rows

    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=_gap_volume)
    load_backend(qtbot, widget)
    click_and_preview(qtbot, widget, 10, 48, 48)
    press(qtbot, widget.ui.accept)
    oid = widget.ctrl.current_object
    run = _propagate(qtbot, widget)
    s = widget.ctrl.session
    assert set(run.flags) == {15}  # doubted (object score 0, nothing found), then released by slice 16
    assert s.status_of(oid, 15) == "needs review" and not (s.labels[15] == oid).any()
    assert all(s.status_of(oid, z) == "propagated" for z in set(range(4, 26)) - {10, 15})
    assert [r.slice for r in slice_rows(s, oid, "Needs review")] == [15]
    assert [r.slice for r in slice_rows(s, oid, "To review")][:1] == [4]
    assert "1 slice(s) need review" in widget.ui.status.text()
    assert "1 needs review" in object_rows(s)[0].status  # the Review dock's object table


def test_edits_during_a_run_are_respected_and_undo_on_their_own(accepted, qtbot, monkeypatch, liver):
    viewer, widget, oid, z = accepted
    _, _, (r, c) = liver
    s = widget.ctrl.session
    _slow_engine(monkeypatch, widget)
    zb = z - 30  # reached late by the backward pass, which runs after the forward one
    with qtbot.waitSignal(widget.propagation_finished, timeout=120000) as blocker:
        press(qtbot, widget.ui.propagate)
        qtbot.waitUntil(lambda: s.history.undo_label == "propagated liver", timeout=60000)  # a chunk is in
        assert zb not in widget.run.results
        before = s.labels[zb].copy()
        painted = before.copy()
        painted[r - 6:r + 6, c - 6:c + 6] = oid  # the user paints a small patch while the run goes on
        s.apply_edit(oid, {zb: before}, {zb: painted})
        after_edit = s.labels.copy()
    run = blocker.args[0]
    assert zb in run.results  # the engine predicted it, but the commit left the user's slice alone
    np.testing.assert_array_equal(s.labels[zb], painted)
    assert s.status_of(oid, zb) == "edited"
    labels = [step.label for step in s.history._undo[-3:]]
    assert labels[1] == "hand edit" and labels[0] == labels[2] == "propagated liver"
    press(qtbot, widget.ui.undo)  # the run's part after the edit
    np.testing.assert_array_equal(s.labels, after_edit)
    press(qtbot, widget.ui.undo)  # the edit itself
    np.testing.assert_array_equal(s.labels[zb], before)


@pytest.mark.parametrize("how", ["switch image", "quit"])
def test_switching_image_or_quitting_during_a_run_commits_to_its_own_session(accepted, qtbot, monkeypatch, how):
    viewer, widget, oid, z = accepted
    old = widget.ctrl.session
    _slow_engine(monkeypatch, widget)
    press(qtbot, widget.ui.propagate)
    run = widget.run
    qtbot.waitUntil(lambda: len(run.results) >= 8, timeout=60000)
    if how == "switch image":
        image = widget.ctrl.image_layer
        other = viewer.add_image(np.ascontiguousarray(image.data[:, ::-1]), name="other",
                                 scale=image.scale, translate=image.translate)
        widget.bind_image(other)
        assert widget.ctrl.session is not old and widget.ctrl.image_layer is other
        assert not widget.ctrl.session.labels.any()  # nothing of the old run reached the new image
    else:
        widget.shutdown()
    assert widget.run is None and run.detached
    delivered = dict(run.results)
    assert len(delivered) >= 8
    for zz, mask in delivered.items():  # every slice the run delivered is in its own session
        np.testing.assert_array_equal(old.labels[zz] == oid, mask, err_msg=f"slice {zz}")
    assert not old.history.grouping and old.autosave and not old.unsaved_slices
    on_disk = AnnotationSession.load(old.folder)
    np.testing.assert_array_equal(on_disk.labels, old.labels)
    # whatever the engine still yields after the switch changes nothing
    from napari_medprompt._qt.workers import wait_for_workers

    snapshot = old.labels.copy()
    wait_for_workers(60000)
    qtbot.wait(200)
    np.testing.assert_array_equal(old.labels, snapshot)
    if how == "switch image":
        assert not widget.ctrl.session.labels.any()


def test_rerun_replaces_only_within_its_own_reach():
    from napari_medprompt._qt.segment.propagation import run_reach

    seed = np.ones((4, 4), bool)
    barrier = np.zeros((4, 4), bool)
    assert run_reach({10: seed}, 0, 29, ("forward",)) == set(range(11, 30))
    assert run_reach({10: seed, 14: barrier}, 0, 29, ("forward", "backward")) == set(range(30)) - {10}
    both = run_reach({10: seed, 20: seed}, 0, 29, ("forward", "backward"))
    assert both == set(range(30)) - {10, 20}
    assert run_reach({10: seed}, 5, 12, ("backward",)) == set(range(5, 10))
