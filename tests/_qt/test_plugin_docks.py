"""The docks opened as napari opens them (Plugins > MedPrompt): each gets its own viewer proxy, and
both must still share one controller, one session and one segmentation layer."""

from __future__ import annotations

from napari_medprompt._qt.controller import controller_for
from napari_medprompt._qt.review.widget import ReviewWidget
from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    make_widget,
    stop_workers_after_test,
)


def test_review_opened_from_plugins_menu_follows_segment(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    from napari.utils._proxies import PublicOnlyProxy

    viewer, segment = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    review = dock_plugin_widget(viewer, "Review")
    assert isinstance(review, ReviewWidget)
    assert isinstance(segment.viewer, PublicOnlyProxy) or segment.viewer is viewer
    # one controller for the viewer, whichever handle (proxy or viewer) asks for it
    assert segment.ctrl is review.ctrl is controller_for(viewer)
    assert segment.ctrl.session is not None
    assert review.session is segment.ctrl.session
    assert "No image is being annotated" not in review.header.text()
    liver = segment.new_object("liver")
    qtbot.waitUntil(lambda: review.objects.rowCount() == 1, timeout=5000)
    assert review.objects.item(0, 0).text() == "liver"
    assert segment.ctrl.current_object == liver


def test_review_from_plugins_menu_shows_a_failed_autosave(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    import pytest

    from napari_medprompt.session.store import SessionSaveError

    viewer, segment = make_widget(make_napari_viewer, monkeypatch, tmp_path)
    review = dock_plugin_widget(viewer, "Review")
    session = segment.ctrl.session
    segment.new_object("liver")

    def disk_full(*_a, **_k):
        raise SessionSaveError(f"{session.folder}: no space left on device")

    monkeypatch.setattr(session._store, "write", disk_full)
    with pytest.raises(SessionSaveError):
        session.save()
    qtbot.waitUntil(lambda: "AUTOSAVE FAILED" in review.header.text(), timeout=5000)
    assert any("Autosave failed" in m for _lv, m in review.messages)
