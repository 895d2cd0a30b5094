"""Training pairs for SAM2 adapters: simulated clinician prompts, pairs from a session, grouped splits."""

from __future__ import annotations

import numpy as np
import pytest

from tests.seg_adapters.sam2_synthetic import synthetic_pairs

from napari_medprompt.seg_adapters.pairs import (
    PairError,
    Sam2PairData,
    error_clicks,
    fixed_prompt,
    mask_box,
    pairs_from_session,
    simulate_prompt,
    split_pairs,
)


def _disk(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_box_jitter_stays_within_ten_percent_and_the_cap():
    target = _disk((200, 200), 100, 100, 40)  # box 81 px: 10% = 8.1 px
    r0, c0, r1, c1 = mask_box(target)
    rng = np.random.default_rng(0)
    shifts = []
    for _ in range(200):
        p = simulate_prompt(target, None, rng, max_clicks=0)
        shifts.append(np.abs(np.subtract(p.box, (r0, c0, r1, c1))))
    shifts = np.array(shifts)
    assert shifts.max() <= 8.1 + 1e-6 and shifts.max() > 4  # jittered, never beyond 10 %
    big = _disk((600, 600), 300, 300, 250)  # box 501 px: 10 % = 50 px, capped at 20
    shifts = [np.abs(np.subtract(simulate_prompt(big, None, rng, max_clicks=0).box, mask_box(big))).max()
              for _ in range(100)]
    assert max(shifts) <= 20 + 1e-6 and max(shifts) > 10


def test_clicks_are_positive_in_the_miss_and_negative_in_the_leak():
    target = _disk((100, 100), 50, 40, 20)
    original = np.roll(target, 12, axis=1)  # misses the left part, leaks on the right
    clicks = error_clicks(target, original, 3)
    assert {lab for _, lab in clicks} == {0, 1}
    for (r, c), lab in clicks:
        if lab == 1:
            assert target[r, c] and not original[r, c]
        else:
            assert original[r, c] and not target[r, c]
    # training prompts draw 0..3 clicks, all of them on error regions
    rng = np.random.default_rng(1)
    counts = set()
    for _ in range(40):
        p = simulate_prompt(target, original, rng)
        counts.add(len(p.labels))
        for (r, c), lab in zip(p.points.astype(int), p.labels):
            assert (target & ~original)[r, c] if lab == 1 else (original & ~target)[r, c]
    assert counts == {0, 1, 2}  # two error regions here: at most two clicks
    # validation prompt: the tight box and the click in the largest error region, every time
    a, b = fixed_prompt(target, original, 1), fixed_prompt(target, original, 1)
    assert a.box == mask_box(target) and np.array_equal(a.points, b.points) and len(a.labels) == 1
    # without an original mask: one positive click at the structure's deepest point
    (r, c), lab = error_clicks(target, None, 2)[0]
    assert lab == 1 and (r, c) == (50, 40)


def test_pairs_from_a_session(tmp_path):
    from napari_medprompt.session import AnnotationSession

    vol = np.random.default_rng(0).normal(0, 30, (4, 64, 64)).astype(np.float32)
    s = AnnotationSession((4, 64, 64), (2.0, 1.0, 1.0), image_key="ct-0001", image_name="ct", autosave=False)
    liver = s.new_object("liver")
    kidney = s.new_object("kidney")
    m1, m2 = _disk((64, 64), 30, 30, 10), _disk((64, 64), 20, 40, 6)
    s.commit_slices(liver.id, {1: m1, 2: m1}, "prompted")
    s.record_prompt(liver.id, 1, points=[(30, 30)], labels=[1], box=None)
    s.set_status(liver.id, [1], "accepted")
    s.commit_slices(kidney.id, {3: m2}, "accepted")
    orig = np.roll(m1, 5, axis=0)
    pairs = pairs_from_session(s, vol, (-100, 200), originals={(liver.id, 1): orig})
    assert len(pairs) == 2  # liver slice 2 is only "prompted": not a training pair
    assert pairs.groups == ["ct-0001", "ct-0001"]
    assert np.array_equal(pairs.masks[0], m1) and np.array_equal(pairs.originals[0], orig)
    assert pairs.prompts[0]["points"] == [[30.0, 30.0]] and pairs.originals[1] is None
    assert np.array_equal(pairs.images[1], vol[3])
    pairs.validate()
    with pytest.raises(PairError, match="accept"):
        pairs_from_session(s, vol, (-100, 200), statuses=("rejected",))


def test_grouped_split_and_bad_input():
    data = synthetic_pairs(10, seed=0)
    tr, va = split_pairs(data, 0.3, seed=1)
    assert len(tr) + len(va) == 10 and len(va) >= 2
    assert not set(tr.groups) & set(va.groups)
    one = Sam2PairData(data.images[:2], data.masks[:2], data.windows[:2], groups=["a", "a"])
    with pytest.raises(PairError, match="one image/series"):
        split_pairs(one, 0.5)
    with pytest.raises(PairError, match="no training pairs"):
        Sam2PairData([], [], []).validate()
    empty = Sam2PairData([data.images[0]], [np.zeros_like(data.masks[0])], [(0, 1)])
    with pytest.raises(PairError, match="mask is empty"):
        empty.validate()
    with pytest.raises(PairError, match="does not match"):
        Sam2PairData([data.images[0]], [data.masks[0][:10]], [(0, 1)]).validate()
    assert data.fingerprint() != synthetic_pairs(10, seed=1).fingerprint()
    assert data.fingerprint() == synthetic_pairs(10, seed=0).fingerprint()
