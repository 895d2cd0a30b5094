"""Segment and Review panels together on the real CT: propagate the liver, review it, reject the
slices past its end, undo; then the session on disk says what happened."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt._qt.review.widget import ReviewWidget
from napari_medprompt.session import AnnotationSession
from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    click_and_preview,
    deepest_point,
    dice,
    load_backend,
    make_widget,
    press,
    reference_mask,
    stop_workers_after_test,
)


def test_review_a_propagated_liver(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    ref = reference_mask("liver")
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    r, c = deepest_point(ref[z])
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    review = ReviewWidget(viewer)
    viewer.window.add_dock_widget(review, name="Review", tabify=True)
    load_backend(qtbot, seg)
    seg.objects.name.setCurrentText("liver")
    click_and_preview(qtbot, seg, z, r, c)
    press(qtbot, seg.ui.accept)
    with qtbot.waitSignal(seg.propagation_finished, timeout=120000):
        press(qtbot, seg.ui.propagate)
    session, oid = seg.ctrl.session, seg.ctrl.current_object
    qtbot.waitUntil(lambda: review.objects.rowCount() == 1, timeout=3000)
    stats = session.object_stats(oid)
    qtbot.waitUntil(lambda: review.objects.item(0, 3).text() == f"{stats['volume_ml']:.1f}", timeout=3000)
    assert review.objects.item(0, 0).text() == "liver"
    vox_ml = float(np.prod(session.spacing)) / 1000
    assert stats["volume_ml"] == pytest.approx((session.labels == oid).sum() * vox_ml)
    print(f"liver {stats['volume_ml']:.1f} mL over {stats['slices_covered']} slices "
          f"(reference {ref.sum() * vox_ml:.1f} mL)")
    statuses = [review.slices.item(i, 1).text() for i in range(review.slices.rowCount())]
    assert statuses.count("prompted") == 1 and statuses.count("propagated") == stats["slices_covered"] - 1
    assert "classic" in review.provenance.toPlainText()

    # the clinician accepts the core of the organ and rejects the last three slices at one end
    lo, hi = stats["slice_range"]
    review.range_from.setValue(lo + 3)
    review.range_to.setValue(hi)
    press(qtbot, review.accept_range)
    before = session.labels.copy()
    review.range_from.setValue(lo)
    review.range_to.setValue(lo + 2)
    press(qtbot, review.reject_range)
    assert not (session.labels[lo:lo + 3] == oid).any()
    np.testing.assert_array_equal(session.labels[lo + 3:], before[lo + 3:])
    np.testing.assert_array_equal(seg.ctrl.labels_layer.data, session.labels)
    qtbot.waitUntil(lambda: "rejected" in review.objects.item(0, 4).text(), timeout=3000)

    press(qtbot, seg.ui.undo)  # the Segment panel's undo takes the rejection back, exactly
    np.testing.assert_array_equal(session.labels, before)
    qtbot.waitUntil(lambda: "rejected" not in review.objects.item(0, 4).text(), timeout=3000)
    press(qtbot, seg.ui.redo)

    saved = AnnotationSession.load(session.folder, image_key=session.image_key, shape=session.shape)
    np.testing.assert_array_equal(saved.labels, session.labels)
    assert saved.objects[oid].slices_with("rejected") == [lo, lo + 1, lo + 2]
    assert saved.objects[oid].slices_with("accepted")[0] == lo + 3
    assert dice(saved.labels == oid, ref) > 0.75
