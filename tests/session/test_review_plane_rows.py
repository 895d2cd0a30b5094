"""The Review panel's coronal / sagittal slice list, computed without Qt: one row per plane slice where
the object has voxels or a plane decision, with its voxel count on that plane slice and its status."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.session import AnnotationSession
from napari_medprompt.session.review import plane_slice_rows, plane_voxels, slice_rows
from tests.session._synthetic import KEY, SHAPE, SPACING, kidney, liver


def _session():
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="ct")
    oid = s.new_object("liver").id
    s.commit_slices(oid, {z: liver(z) for z in range(5, 21)}, "propagated")
    kid = s.new_object("kidney").id  # another object: never counted for the liver
    s.commit_slices(kid, {z: kidney(z) for z in range(8, 30)}, "propagated")
    return s, oid


@pytest.mark.parametrize("plane, axes", [("coronal", (0, 2)), ("sagittal", (0, 1))])
def test_rows_are_the_plane_slices_with_the_objects_voxel_counts(plane, axes):
    s, oid = _session()
    counts = np.count_nonzero(s.labels == oid, axis=axes)
    rows = plane_slice_rows(s, s.objects[oid], plane)
    assert [r.slice for r in rows] == [int(i) for i in np.flatnonzero(counts)]
    assert [r.voxels for r in rows] == [int(counts[r.slice]) for r in rows]
    assert all(r.status == "" for r in rows)  # nobody decided a plane slice yet
    assert sum(r.voxels for r in rows) == int((s.labels == oid).sum())
    np.testing.assert_array_equal(plane_voxels(s, oid, plane), counts)
    assert plane_slice_rows(s, oid, plane) == rows  # an id works as well as the object


def test_rows_carry_the_plane_decisions_and_rejected_slices_stay_listed():
    s, oid = _session()
    rows = plane_slice_rows(s, oid, "coronal")
    mid = rows[len(rows) // 2].slice
    s.set_plane_status(oid, "coronal", [mid], "accepted")
    s.set_plane_status(oid, "coronal", [mid + 1, mid + 2], "rejected")
    by = {r.slice: r for r in plane_slice_rows(s, oid, "coronal")}
    assert by[mid].status == "accepted" and by[mid].voxels == rows[len(rows) // 2].voxels
    for i in (mid + 1, mid + 2):  # cleared, but the decision is listed
        assert by[i].status == "rejected" and by[i].voxels == 0
    todo = [r.slice for r in plane_slice_rows(s, oid, "coronal", "To review")]
    assert mid not in todo and mid + 1 not in todo and todo  # undecided ones are to review
    assert [r.slice for r in plane_slice_rows(s, oid, "coronal", "Accepted")] == [mid]
    assert [r.slice for r in plane_slice_rows(s, oid, "coronal", "Rejected")] == [mid + 1, mid + 2]
    assert plane_slice_rows(s, oid, "sagittal", "Accepted") == []  # decisions stay in their plane


def test_axial_rows_are_the_slice_rows_and_an_unknown_plane_is_refused():
    s, oid = _session()
    assert plane_slice_rows(s, oid, "axial", "To review") == slice_rows(s, oid, "To review")
    with pytest.raises(ValueError, match="unknown plane 'oblique'"):
        plane_slice_rows(s, oid, "oblique")
