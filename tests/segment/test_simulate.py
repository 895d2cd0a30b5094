"""The simulated clinician: where each click lands, its polarity, Dice after each click and NoC."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.segment import create_segmenter
from napari_medprompt.segment.simulate import (
    deepest_point,
    dice,
    first_click,
    next_click,
    noc,
    simulate_slice,
    simulate_volume,
)


def rect(shape, r0, c0, r1, c1) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[r0:r1, c0:c1] = True
    return m


def test_first_click_is_the_deepest_point_of_the_target():
    truth = rect((40, 60), 5, 10, 25, 50)  # 20 x 40: the centre row band is deepest
    c = first_click(truth)
    assert c.positive and c.region_size == 800
    r, col = c.point
    assert 14 <= r <= 15 and 19 <= col <= 40  # 10 px from the top and bottom edges
    # the image border counts as an edge: a target against the border is clicked away from it
    edge = rect((40, 60), 0, 0, 10, 60)
    assert deepest_point(edge)[0] in (4, 5)
    assert first_click(np.zeros((5, 5), bool)) is None


def test_next_click_goes_to_the_largest_miss_as_a_positive_click():
    truth = rect((50, 50), 10, 10, 40, 40)
    pred = rect((50, 50), 10, 10, 40, 25)  # the right half (30 x 15) missed
    pred |= rect((50, 50), 0, 0, 3, 3)  # and a small leak (9 px)
    c = next_click(pred, truth)
    assert c.positive and c.region_size == 30 * 15
    assert truth[c.point] and not pred[c.point]
    assert 30 <= c.point[1] <= 34  # the middle of the missed half (cols 25-39)


def test_next_click_goes_to_the_largest_leak_as_a_negative_click():
    truth = rect((50, 50), 10, 10, 30, 30)
    pred = truth | rect((50, 50), 10, 30, 30, 48)  # leaked 18 columns to the right
    pred &= ~rect((50, 50), 10, 10, 12, 12)  # and missed a 2 x 2 corner
    c = next_click(pred, truth)
    assert not c.positive and c.label == 0 and c.region_size == 20 * 18
    assert pred[c.point] and not truth[c.point]
    assert next_click(truth, truth) is None  # nothing left to correct


def test_largest_region_is_by_connected_component_not_by_total_error():
    truth = rect((60, 60), 0, 0, 60, 60) & ~rect((60, 60), 0, 0, 60, 60)  # empty target
    pred = rect((60, 60), 2, 2, 6, 6) | rect((60, 60), 20, 20, 30, 30) | rect((60, 60), 40, 2, 44, 6)
    c = next_click(pred, truth)
    assert not c.positive and c.region_size == 100 and 20 <= c.point[0] < 30


def test_3d_errors_are_found_in_3d():
    truth = np.zeros((9, 30, 30), bool)
    truth[1:8, 5:25, 5:25] = True
    pred = truth.copy()
    pred[6:8] = False  # the last two slices were missed
    c = next_click(pred, truth, sampling=(4.0, 1.0, 1.0))
    assert c.positive and c.point[0] in (6, 7) and c.region_size == 2 * 400
    assert truth[c.point] and not pred[c.point]


def test_noc_counts_clicks_to_reach_the_target_capped():
    assert noc([0.5, 0.86, 0.95], 0.85) == (2, True)
    assert noc([0.5, 0.86, 0.95], 0.90) == (3, True)
    assert noc([0.5, 0.6], 0.85, cap=5) == (5, False)
    assert dice(np.ones((2, 2), bool), np.zeros((2, 2), bool)) == 0.0
    assert dice(np.zeros((2, 2), bool), np.zeros((2, 2), bool)) == 1.0


def _two_blobs() -> tuple[np.ndarray, np.ndarray]:
    """An image with a target joined to a same-intensity neighbour by a wide bridge."""
    img = np.full((80, 120), 20.0, np.float32)
    truth = rect(img.shape, 20, 15, 60, 55)
    img[truth] = 200.0
    img[20:60, 70:110] = 200.0  # a neighbour of the same intensity
    img[30:50, 55:70] = 200.0  # joined to it by a 20-px bridge: one click takes both
    return img, truth


def test_a_real_backend_gets_corrected_by_the_simulated_user():
    img, truth = _two_blobs()
    seg = create_segmenter("classic")
    seg.bind(img, modality="MR", spacing=(1.0, 1.0))
    trace = simulate_slice(seg, 0, truth, max_clicks=5)
    assert trace.clicks[0].positive and truth[trace.clicks[0].point]
    assert len(trace.dice) == len(trace.clicks) <= 5
    if trace.dice[0] < 0.95:  # the first click leaked into the neighbour: the user says "not this"
        assert not trace.clicks[1].positive and not truth[trace.clicks[1].point]
    assert max(trace.dice) >= 0.9
    assert trace.noc(0.85) <= 3


def test_volume_protocol_propagates_and_corrects_in_3d():
    rng = np.random.default_rng(0)
    zz, yy, xx = np.indices((12, 60, 60))
    truth = ((yy - 30) ** 2 + (xx - 30) ** 2 < (14 - abs(zz - 6)) ** 2) & (abs(zz - 6) < 6)
    img = (20 + 180 * truth + rng.normal(0, 5, truth.shape)).astype(np.float32)
    seg = create_segmenter("classic")
    seg.bind(img, modality="MR", spacing=(2.0, 1.0, 1.0))
    trace = simulate_volume(seg, truth, max_clicks=3, spacing=(2.0, 1.0, 1.0))
    assert trace.clicks[0].point[0] == 6 and trace.clicks[0].positive
    assert 1 <= len(trace.dice) <= 3 and not trace.errors
    assert trace.dice[0] >= 0.7  # one click + propagation covers most of the blob (measured 0.75)
    with pytest.raises(ValueError, match="z, y, x"):
        simulate_volume(seg, truth[0])
