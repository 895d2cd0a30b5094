"""Scribbles, lassos and label objects as prompts; plane views and their coordinates (no Qt)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.segment.base import PromptError
from napari_medprompt.segment.planes import (
    axial_masks,
    from_plane,
    plane_shape,
    plane_view,
    sliced_data_axis,
    to_plane,
    view_plane,
)
from napari_medprompt.segment.prompts import (
    check_label_volume,
    ellipse_mask,
    label_object_mask,
    lasso_crosses_itself,
    lasso_mask,
    mask_prompt,
    scribble_points,
)
from napari_medprompt.segment.validate import check_prompt


def test_scribble_becomes_points_along_it_with_its_polarity():
    pts, lab = scribble_points([[10, 5], [10, 35]], (40, 60), positive=False)
    assert len(pts) >= 5 and set(lab.tolist()) == {0}
    assert np.all(pts[:, 0] == 10) and pts[0, 1] == 5 and pts[-1, 1] == 35  # both ends kept
    assert np.all(np.diff(pts[:, 1]) >= 2.9)  # spread along it, no duplicates
    long, _ = scribble_points([[0, 0], [0, 59], [39, 59]], (40, 60))
    assert len(long) == 12  # capped


def test_scribble_of_one_pixel_or_outside_is_refused():
    with pytest.raises(PromptError, match="single pixel"):
        scribble_points([[7, 7], [7.2, 7.3]], (20, 30))
    with pytest.raises(PromptError, match="single pixel"):
        scribble_points([[7, 7]], (20, 30))
    with pytest.raises(PromptError, match="outside"):
        scribble_points([[-50, -50], [-50, -10]], (20, 30))
    pts, _ = scribble_points([[5, -20], [5, 20]], (20, 30))  # partly outside: the inside part
    assert pts[:, 1].min() >= 0 and len(pts) > 2


def test_lasso_fills_its_inside_and_gives_a_box():
    poly = [[5, 10], [5, 40], [25, 40], [25, 10]]
    m = lasso_mask(poly, (30, 50))
    assert m.shape == (30, 50) and m[15, 25] and not m[2, 2] and not m[15, 45]
    p = check_prompt(mask_prompt(m), (30, 50))
    assert p.mask is not None and p.box == (5.0, 10.0, 25.0, 40.0)


def test_lasso_that_crosses_itself_or_is_degenerate_is_refused():
    bow_tie = [[0, 0], [20, 20], [0, 20], [20, 0]]
    assert lasso_crosses_itself(bow_tie)
    assert not lasso_crosses_itself([[0, 0], [0, 20], [20, 20], [20, 0]])
    with pytest.raises(PromptError, match="crosses itself"):
        lasso_mask(bow_tie, (30, 30))
    with pytest.raises(PromptError, match="three distinct"):
        lasso_mask([[1, 1], [5, 5], [1, 1]], (30, 30))
    with pytest.raises(PromptError, match="outside"):
        lasso_mask([[100, 100], [100, 120], [120, 120]], (30, 30))


def test_label_object_and_shape_check():
    lab = np.zeros((20, 30), np.uint8)
    lab[2:5, 2:5] = 3
    lab[10:18, 10:25] = 7
    assert label_object_mask(lab)[0] == 7  # the largest
    oid, m = label_object_mask(lab, 3)
    assert oid == 3 and m.sum() == 9
    with pytest.raises(PromptError, match="no object"):
        label_object_mask(np.zeros((4, 4), np.uint8))
    with pytest.raises(PromptError, match="shape"):
        check_label_volume((10, 20, 30), (10, 20, 31), "other")


def test_plane_of_a_view_through_flips_and_permutations():
    flip = np.diag([2.0, -0.8, -0.8])  # a radiological flip keeps the axis
    assert view_plane(2, [0], flip) == "axial"
    assert view_plane(2, [1], flip) == "coronal"
    assert view_plane(2, [2], flip) == "sagittal"
    assert view_plane(3, [], flip) == "3d"
    perm = np.array([[0, 0, 1.0], [0, 1.0, 0], [1.0, 0, 0]])
    assert sliced_data_axis(perm, 0) == 2


def test_plane_coordinates_and_axial_masks_round_trip():
    vol = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    for plane in ("axial", "coronal", "sagittal"):
        z, y, x = 3, 4, 5
        s, r, c = to_plane((z, y, x), plane)
        assert plane_view(vol, plane)[int(s), int(r), int(c)] == vol[z, y, x]
        assert from_plane(plane, s, r, c) == (z, y, x)
        assert plane_view(vol, plane).shape[1:] == plane_shape(vol.shape, plane)
    obj = np.zeros((5, 6, 7), bool)
    cor = np.zeros((5, 7), bool)
    cor[1:4, 2:6] = True  # rows = z 1..3, cols = x 2..5 on coronal slice y=4
    out = axial_masks(obj, "coronal", {4: cor})
    assert sorted(out) == [1, 2, 3]
    assert out[2][4, 2:6].all() and out[2].sum() == 4
    assert not obj.any()  # not modified
    with pytest.raises(ValueError, match="shape"):
        axial_masks(obj, "coronal", {4: np.zeros((6, 7), bool)})


def test_ellipse_is_a_mask_of_its_inside():
    m = ellipse_mask([[10, 10], [10, 50], [30, 50], [30, 10]], (40, 60))
    assert m[20, 30] and not m[11, 11] and not m[20, 55]
    with pytest.raises(PromptError, match="zero area"):
        ellipse_mask([[10, 10], [10, 50], [10, 50], [10, 10]], (40, 60))
