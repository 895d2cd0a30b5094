"""Building blocks of the classic backend: fast morphology, tissue-aware bands, the grown region."""

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medprompt.segment.region_grow import (
    GrowParams,
    PixelParams,
    _fill_small_holes,
    boundary_support,
    choose_band,
    dilate,
    disk,
    erode,
    grow,
    opening,
    reference_band,
)


@pytest.mark.parametrize("seed", range(5))
def test_distance_transform_morphology_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    for _ in range(20):
        m = ndi.gaussian_filter(rng.random((40, 50)), 1.5) > 0.48
        r = int(rng.integers(1, 6))
        np.testing.assert_array_equal(dilate(m, r), ndi.binary_dilation(m, disk(r)))
        np.testing.assert_array_equal(erode(m, r), ndi.binary_erosion(m, disk(r)))
        np.testing.assert_array_equal(opening(m, r), ndi.binary_opening(m, disk(r)))
        np.testing.assert_array_equal(_fill_small_holes(m, m.size), ndi.binary_fill_holes(m))


def test_small_holes_only():
    m = np.ones((30, 30), bool)
    m[5:7, 5:7] = False  # 4 px hole
    m[15:25, 15:25] = False  # 100 px hole
    out = _fill_small_holes(m, 10)
    assert out[5:7, 5:7].all() and not out[15:25, 15:25].any()


def test_ct_tissue_classes():
    params = GrowParams()
    s = np.zeros((20, 20), np.float32)
    seeds = np.zeros((20, 20), bool)
    seeds[10, 10] = True
    air = choose_band(s, seeds, (-800.0, 30.0), is_ct=True, params=params, spread_floor=10, allowed=None)
    assert air.tissue == "air" and air.hi == pytest.approx(-400.0) and air.lo == -np.inf
    bone = choose_band(s, seeds, (700.0, 80.0), is_ct=True, params=params, spread_floor=10, allowed=None)
    assert bone.tissue == "dense" and bone.lo == pytest.approx(150.0) and bone.hi == np.inf
    soft = reference_band(np.array([40.0, 42, 44, 46, 48]), is_ct=True, spread_floor=10)
    assert soft.tissue == "soft" and soft.lo == pytest.approx(19.0) and soft.hi == pytest.approx(69.0)
    other = choose_band(s, seeds, (-800.0, 30.0), is_ct=False, params=params, spread_floor=10, allowed=None)
    assert other.tissue == "other"  # HU classes only on CT


def test_grow_cuts_a_narrow_bridge_to_a_neighbour_of_the_same_intensity():
    s = np.zeros((60, 90), np.float32)
    yy, xx = np.mgrid[:60, :90]
    a = (yy - 30) ** 2 + (xx - 22) ** 2 <= 15**2
    b = (yy - 30) ** 2 + (xx - 68) ** 2 <= 15**2
    bridge = (np.abs(yy - 30) <= 1) & (xx > 30) & (xx < 60)
    s[a | b | bridge] = 50.0
    seeds = np.zeros_like(a)
    seeds[30, 22] = True
    band = reference_band(np.array([50.0]), is_ct=True, spread_floor=10)
    px = PixelParams.from_mm(GrowParams(), (1.0, 1.0))
    out = grow(s, seeds, band, px)
    assert out[a].all() and not out[b].any()
    assert boundary_support(s, out, band) < 1.0  # cut inside same-intensity tissue at the bridge
    whole = grow(s, seeds, band, PixelParams(px.smooth_sigma, px.seed_radius, 0, px.hole_px))
    assert whole[b].all()  # without the leak cut the neighbour is taken
