"""What the Review panel lists, computed without Qt."""

from __future__ import annotations

from napari_medprompt.session import AnnotationSession
from napari_medprompt.session.review import object_rows, provenance_items, slice_rows
from tests.session._synthetic import KEY, SHAPE, SPACING, liver


def test_rows_follow_session_state():
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY)
    a = s.new_object("liver")
    s.record_prompt(a.id, 9, points=[[1, 2], [3, 4], [5, 6]], labels=[1, 1, 0], box=[0, 0, 9, 9])
    s.commit_slices(a.id, {z: liver(z) for z in range(5, 15)}, "propagated", {"backend": "classic"})
    s.set_status(a.id, [5, 6, 7, 9], "accepted")
    s.set_status(a.id, [14], "rejected")
    (row,) = object_rows(s)
    assert (row.name, row.slices_covered, row.slice_range) == ("liver", 9, (5, 13))
    assert row.status == "4/9 accepted, 1 rejected"
    rows = slice_rows(s, a.id)
    assert [r.slice for r in rows] == list(range(5, 15))
    assert rows[-1].status == "rejected" and rows[-1].voxels == 0
    assert rows[0].voxels == int(liver(5).sum())
    assert [r.slice for r in slice_rows(s, a.id, "To review")] == [8, 10, 11, 12, 13]
    items = dict(provenance_items(s.objects[a.id]))
    assert items["Backend"] == "classic" and items["Weights"] == "—"
    assert items["Prompts"] == "slice 9: 2 positive, 1 negative, box"
    assert items["Accepted slices"] == "5-7, 9" and items["Rejected slices"] == "14"
    assert items["Last change"].startswith("rejected slice 14 by ")
