"""Classic backend: later positive clicks (corrections) on images without HU.

A correction click outside the region grows its own band from its own surroundings; on a missed
strip along the border (a wall, a blurred edge) that band also takes what lies beyond. Its region is
kept within ``correction_reach`` times the click's distance from the region so far.
"""

import numpy as np
import pytest

from napari_medprompt.segment import create_segmenter
from napari_medprompt.segment.base import Prompt
from napari_medprompt.segment.simulate import simulate_slice
from tests.conftest import shared_file


def _walled_object():
    """A dark lumen (100) in a bright wall (220, 3 px) on a brighter surrounding (400), noise sd 4."""
    yy, xx = np.mgrid[:80, :80]
    r = np.hypot(yy - 40, xx - 36)
    lumen = r <= 12
    wall = (r > 12) & (r <= 15)
    img = np.full((80, 80), 400.0, np.float32)
    img[lumen] = 100
    img[wall] = 220
    img += np.random.default_rng(0).normal(0, 4, img.shape).astype(np.float32)
    return img, lumen, wall


def test_a_click_on_a_missed_wall_adds_the_wall_not_the_surroundings():
    img, lumen, wall = _walled_object()
    seg = create_segmenter("classic")
    seg.bind(img, modality="MR", spacing=(1.0, 1.0))
    one = seg.predict(0, Prompt(points=[(40, 36)], labels=[1])).mask
    assert one[lumen].all() and one[wall].mean() < 0.3  # the first click takes the lumen
    two = seg.predict(0, Prompt(points=[(40, 36), (40, 22)], labels=[1, 1])).mask
    outside = two & ~(lumen | wall)
    # measured: wall 0.62, 61 px outside it (before: the same wall and 785 px of the surroundings)
    assert (two >= one).all() and two[wall].mean() >= 0.5
    assert outside.sum() < 0.5 * wall.sum()


@pytest.mark.parametrize("modality, offset", [("MR", 0.0), ("CT", -300.0)])
def test_the_reach_limit_is_for_images_without_hu(modality, offset):
    # the same clicks with the limit lifted: MR adds the surroundings, CT is unchanged by the limit
    from napari_medprompt.segment.region_grow import GrowParams

    img, lumen, wall = _walled_object()
    prompt = Prompt(points=[(40, 36), (40, 22)], labels=[1, 1])
    masks = []
    for reach in (2.0, 1e6):
        seg = create_segmenter("classic", params=GrowParams(correction_reach=reach))
        seg.bind(img + offset, modality=modality, spacing=(1.0, 1.0))
        masks.append(seg.predict(0, prompt).mask)
    if modality == "CT":
        assert np.array_equal(masks[0], masks[1])
    else:
        assert masks[1].sum() > masks[0].sum() + wall.sum()


@pytest.fixture(scope="module")
def mr_case():
    from napari_medprompt.io.read import read_image

    vol = read_image(shared_file("totalsegmentator/example_mr_sm.nii.gz"))[0]
    labels = np.asarray(read_image(shared_file("totalsegmentator/example_seg_mr.nii.gz"))[0].data)
    seg = create_segmenter("classic")
    seg.bind(vol.data, modality=vol.modality, spacing=vol.spacing)
    return seg, labels


def _largest_section(labels, label_id):
    ref = labels == label_id
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    return z, ref[z]


def test_mr_stomach_reaches_085_within_five_simulated_clicks(mr_case):
    # the stomach's wall is a missed strip round the lumen the first click takes; a click on it once
    # also took the tissue beyond (Dice per click before: 0.651 0.652 0.700 0.721 0.809, never 0.85);
    # measured now: 0.651 0.703 0.753 0.841 0.862
    seg, labels = mr_case
    z, truth = _largest_section(labels, 6)
    trace = simulate_slice(seg, z, truth, 5)
    assert trace.noc(0.85) <= 5 and max(trace.dice) >= 0.85, trace.dice


def test_mr_spleen_correction_click_does_not_spill_over(mr_case):
    # before: the fourth click (positive, on the border) took a neighbour, Dice 0.947 -> 0.883;
    # measured now: 0.937 0.940 0.947 0.931 0.935
    seg, labels = mr_case
    z, truth = _largest_section(labels, 1)
    trace = simulate_slice(seg, z, truth, 5)
    assert len(trace.dice) == 5 and min(trace.dice) >= 0.92, trace.dice
