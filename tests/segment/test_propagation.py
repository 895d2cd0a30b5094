"""The shared projection-propagation driver, with a fake predictor whose object score the test sets."""

import threading

import numpy as np
import pytest

from napari_medprompt.segment.base import PromptError, PropagationSettings
from napari_medprompt.segment.propagation import (
    mask_interior_points,
    mask_to_box,
    plan_runs,
    prompt_from_mask,
    propagate_by_projection,
)

H = W = 32


def disk(r: int = 6, cy: int = 16, cx: int = 16) -> np.ndarray:
    yy, xx = np.mgrid[:H, :W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


class FakePredictor:
    """Copies the previous mask onto the next slice while the object is 'present' there.

    ``present``: slices where the object exists (elsewhere the mask comes back empty);
    ``scores``: object score per slice (default 0.9 where present, 0.1 elsewhere).
    """

    def __init__(self, present=range(0, 1000), scores=None, cancel_after=None, cancel=None):
        self.present = set(present)
        self.scores = dict(scores or {})
        self.calls: list[tuple[int, int, int]] = []  # slice, object, prev area
        self.prev_masks: dict[tuple[int, int], np.ndarray] = {}
        self.cancel_after = cancel_after
        self.cancel = cancel

    def __call__(self, z, prev_mask, oid):
        self.calls.append((z, oid, int(prev_mask.sum())))
        self.prev_masks[(z, oid)] = prev_mask.copy()
        if self.cancel_after is not None and len(self.calls) >= self.cancel_after:
            self.cancel.set()
        here = z in self.present
        mask = prev_mask.copy() if here else np.zeros_like(prev_mask)
        return mask, 0.8, self.scores.get(z, 0.9 if here else 0.1)


def run(pred, seeds, n=30, **kw):
    return list(propagate_by_projection(pred, seeds, n, PropagationSettings(**kw)))


def test_both_directions_stop_where_the_object_ends():
    pred = FakePredictor(present=range(10, 21))
    out = run(pred, {1: {15: disk()}}, patience=2)
    good = sorted(r.slice_index for r in out if not r.lost)
    lost = sorted(r.slice_index for r in out if r.lost)
    assert good == [10, 11, 12, 13, 14, 16, 17, 18, 19, 20]
    assert lost == [8, 9, 21, 22]
    assert all(not r.mask.any() for r in out if r.lost)
    assert all(r.source == "propagated" and r.object_id == 1 for r in out)
    predicted = [c[0] for c in pred.calls]
    assert 15 not in predicted
    assert min(predicted) == 8 and max(predicted) == 22  # nothing beyond the stop


def test_low_object_score_alone_stops_it():
    # the mask stays the same size everywhere: only the object score says the object ended
    pred = FakePredictor(scores={18: 0.2, 19: 0.3, 20: 0.2})
    out = run(pred, {1: {12: disk()}}, patience=2, min_object_score=0.5, directions=("forward",))
    by_z = {r.slice_index: r for r in out}
    assert [z for z in sorted(by_z) if not by_z[z].lost] == [13, 14, 15, 16, 17]
    assert by_z[18].lost and by_z[19].lost and 20 not in by_z
    assert by_z[18].object_score == pytest.approx(0.2)


def test_one_bad_slice_within_patience_is_kept_and_propagation_goes_on():
    pred = FakePredictor(scores={17: 0.2})
    out = run(pred, {1: {15: disk()}}, patience=2, directions=("forward",))
    by_z = {r.slice_index: r for r in out}
    assert sorted(by_z) == list(range(16, 30))
    assert not any(r.lost for r in out)
    assert by_z[17].mask.any()
    # results come in slice order along the direction
    assert [r.slice_index for r in out] == list(range(16, 30))


def test_prediction_restarts_from_last_good_mask_after_a_bad_slice():
    # slice 17 vanishes (object absent) but 18 is present again: 18 is predicted from slice 16's mask
    pred = FakePredictor(present=[z for z in range(30) if z != 17])
    out = run(pred, {1: {15: disk()}}, patience=2, directions=("forward",))
    assert pred.prev_masks[(18, 1)].sum() == disk().sum()
    by_z = {r.slice_index: r for r in out}
    assert not by_z[17].lost and not by_z[17].mask.any()  # released as predicted (empty), not lost
    assert by_z[18].mask.any()


def test_pending_bad_slices_at_the_end_of_the_range_are_lost():
    pred = FakePredictor(scores={29: 0.1})
    out = run(pred, {1: {25: disk()}}, patience=3, directions=("forward",))
    by_z = {r.slice_index: r for r in out}
    assert by_z[29].lost and not by_z[28].lost


def test_two_seeds_fill_between_from_the_nearer_one():
    a, b = disk(4, 10, 10), disk(7, 20, 20)
    pred = FakePredictor()
    out = run(pred, {1: {5: a, 12: b}}, n=20)
    by_z = {r.slice_index: r for r in out}
    assert sorted(by_z) == [z for z in range(20) if z not in (5, 12)]
    # every slice predicted exactly once, seed slices never
    zs = [c[0] for c in pred.calls]
    assert sorted(zs) == sorted(by_z) and 5 not in zs and 12 not in zs
    for z in range(0, 9):
        if z != 5:
            assert np.array_equal(by_z[z].mask, a), z
    for z in range(9, 20):
        if z != 12:
            assert np.array_equal(by_z[z].mask, b), z


def test_corrected_mask_reenters_as_a_seed():
    first = run(FakePredictor(), {1: {10: disk(5)}}, n=20)
    assert {r.slice_index for r in first} == set(range(20)) - {10}
    corrected = disk(8)
    second = run(FakePredictor(), {1: {10: disk(5), 16: corrected}}, n=20)
    by_z = {r.slice_index: r for r in second}
    assert 16 not in by_z
    for z in (14, 15, 17, 18, 19):
        assert np.array_equal(by_z[z].mask, corrected)
    for z in (11, 12, 13):
        assert np.array_equal(by_z[z].mask, disk(5))


def test_empty_seed_is_a_barrier():
    pred = FakePredictor()
    out = run(pred, {1: {5: disk(), 10: np.zeros((H, W), bool)}}, n=20)
    zs = sorted(r.slice_index for r in out)
    assert zs == [0, 1, 2, 3, 4, 6, 7, 8, 9]
    assert max(c[0] for c in pred.calls) == 9


def test_several_objects():
    pred = FakePredictor()
    out = run(pred, {1: {3: disk(4, 8, 8)}, 2: {6: disk(4, 24, 24)}}, n=10)
    for oid, z0 in ((1, 3), (2, 6)):
        mine = [r for r in out if r.object_id == oid]
        assert sorted(r.slice_index for r in mine) == [z for z in range(10) if z != z0]
    assert {c[1] for c in pred.calls} == {1, 2}


def test_slice_range_limits_prediction_and_ignores_outside_seeds():
    pred = FakePredictor()
    out = run(pred, {1: {8: disk(), 25: disk(3)}}, slice_range=(4, 12))
    assert sorted(r.slice_index for r in out) == [4, 5, 6, 7, 9, 10, 11, 12]
    assert {c[0] for c in pred.calls} <= set(range(4, 13))
    with pytest.raises(PromptError, match="inside the slice range"):
        run(FakePredictor(), {1: {25: disk()}}, slice_range=(4, 12))


def test_cancel_stops_between_slices():
    cancel = threading.Event()
    pred = FakePredictor(cancel_after=3, cancel=cancel)
    out = run(pred, {1: {15: disk()}}, cancel=cancel)
    assert len(pred.calls) == 3  # the slice being predicted when cancel came finishes, then nothing
    assert len(out) <= 3
    cancel2 = threading.Event()
    cancel2.set()
    pred2 = FakePredictor()
    assert run(pred2, {1: {15: disk()}}, cancel=cancel2) == [] and pred2.calls == []


def test_bad_seeds_and_ranges_get_clear_errors():
    with pytest.raises(PromptError, match="out of range"):
        run(FakePredictor(), {1: {30: disk()}})
    with pytest.raises(PromptError, match="shape"):
        run(FakePredictor(), {1: {3: disk(), 4: np.ones((5, 5), bool)}})
    with pytest.raises(PromptError, match="at least one slice"):
        run(FakePredictor(), {})
    with pytest.raises(PromptError, match="empty"):
        run(FakePredictor(), {1: {3: np.zeros((H, W), bool)}})
    with pytest.raises(PromptError, match="outside the volume"):
        run(FakePredictor(), {1: {3: disk()}}, slice_range=(0, 40))
    with pytest.raises(PromptError, match="reversed"):
        run(FakePredictor(), {1: {3: disk()}}, slice_range=(10, 2))
    with pytest.raises(PromptError, match="direction"):
        run(FakePredictor(), {1: {3: disk()}}, directions=("up",))


def test_plan_runs_ties_go_to_the_lower_seed():
    assert plan_runs({0: True, 4: True}, 0, 4) == [(0, 1, 2), (4, -1, 3)]
    assert plan_runs({0: True, 1: True}, 0, 1) == []
    assert plan_runs({2: True}, 0, 5, ("backward",)) == [(2, -1, 0)]


def test_prompt_helpers_from_a_mask():
    m = np.zeros((40, 50), bool)
    m[10:20, 5:35] = True
    assert mask_to_box(m) == (10.0, 5.0, 19.0, 34.0)
    assert mask_to_box(m, margin=8) == (2.0, 0.0, 27.0, 42.0)
    assert mask_to_box(np.zeros((4, 4), bool)) is None
    pts = mask_interior_points(m, n=3)
    assert pts.shape == (3, 2)
    assert all(m[int(r), int(c)] for r, c in pts)
    assert 14 <= pts[0, 0] <= 15  # deepest point is on the middle rows
    assert np.min(np.hypot(*(pts[1] - pts[2]))) >= 2
    p = prompt_from_mask(m, n_points=2)
    assert len(p.points) == 2 and p.labels.tolist() == [1, 1] and p.box is not None
    assert p.mask is not None and p.mask.sum() == m.sum()
    assert len(mask_interior_points(np.zeros((5, 5), bool))) == 0


def test_errors_are_raised_at_the_call_before_any_prediction():
    pred = FakePredictor()
    with pytest.raises(PromptError, match="out of range"):
        propagate_by_projection(pred, {1: {40: disk()}}, 30, PropagationSettings())
    assert pred.calls == []


def test_regrowth_check_is_passed_to_the_stop_rule():
    # the object shrinks from radius 8 to 4 and then grows again (a neighbour): only stopped when asked
    radii = {11: 7, 12: 6, 13: 5, 14: 4, 15: 5, 16: 6, 17: 7, 18: 8}

    def predict_next(z, prev, oid):
        return disk(radii.get(z, 8)), 0.9, None

    settings = PropagationSettings(directions=("forward",), patience=2)
    plain = list(propagate_by_projection(predict_next, {1: {10: disk(8)}}, 19, settings))
    assert not any(r.lost for r in plain)
    checked = list(
        propagate_by_projection(predict_next, {1: {10: disk(8)}}, 19, settings, regrow_ratio=1.5)
    )
    assert [r.slice_index for r in checked if not r.lost] == [11, 12, 13, 14]
    assert [r.slice_index for r in checked if r.lost] == [15, 16]


def test_released_bad_slices_carry_the_stop_rules_reason():
    # slice 17: low object score; slice 21: the mask vanished; both followed by good slices
    pred = FakePredictor(present=[z for z in range(30) if z != 21], scores={17: 0.2, 21: 0.9})
    out = run(pred, {1: {15: disk()}}, patience=2, directions=("forward",))
    by_z = {r.slice_index: r for r in out}
    assert "object score" in by_z[17].flag and "vanished" in by_z[21].flag
    assert not by_z[17].lost and not by_z[21].lost
    assert all(not r.flag for z, r in by_z.items() if z not in (17, 21))
