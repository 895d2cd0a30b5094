"""Text prompts in the Segment dock: a structure name -> a preview on the slice shown, or a proposal
over the whole volume committed as one "needs review" undo step that keeps the user's slices.

CLIPSeg is the real rd64-refined config with random weights (no weights can be downloaded; the dock
says RANDOM WEIGHTS), at 64 px input to stay cheap. Its random-weight probabilities sit just above
0.5, so the mask it gives covers the slice: that is the model's real output, and enough to check
where results land and what is protected.
"""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt._qt.segment import text_prompt
from tests._qt._helpers import load_backend, make_widget, stop_workers_after_test  # noqa: F401 - autouse fixture

SHAPE = (7, 40, 56)  # non-square slices


def _volume():
    rng = np.random.default_rng(0)
    vol = rng.normal(0, 30, SHAPE).astype(np.int16)
    vol[:, 10:30, 15:40] += 200
    return vol


_MODELS: dict = {}


@pytest.fixture
def text_widget(make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(text_prompt, "TEXT_IMAGE_SIZE", 64)
    real = text_prompt.load_text_model

    def cached(version, store, device="cpu"):  # one random CLIPSeg per test module for the stock model
        if version is not None:
            return real(version, store, device)
        if "stock" not in _MODELS:
            _MODELS["stock"] = real(None, None, device)
        return _MODELS["stock"]

    monkeypatch.setattr(text_prompt, "load_text_model", cached)
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(_volume(), name="CT"))
    return viewer, widget


def _run(qtbot, widget, text, scope, timeout=120000):
    worker = widget.segment_text(text, scope)
    assert worker is not None, widget.messages
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=timeout)
    return worker


def test_text_on_a_slice_previews_that_slice_only_then_accept_and_undo(qtbot, text_widget):
    viewer, widget = text_widget
    session = widget.ctrl.session
    widget.ctrl.jump_to_slice(3)
    before = session.labels.copy()
    with qtbot.waitSignal(widget.preview_updated, timeout=120000) as sig:
        widget.segment_text("liver", "slice")
    assert sig.args == [3]
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=30000)
    prev = widget.preview_layer.data
    assert prev[3].any()
    assert not np.delete(prev, 3, axis=0).any()  # the right slice only
    assert np.array_equal(session.labels, before)  # a preview changes no label yet
    # on random weights the dock says so next to the text box
    assert not widget.text_panel.banner.isHidden() and "RANDOM WEIGHTS" in widget.text_panel.banner.text()
    assert any("RANDOM weights" in m for _lv, m in widget.messages)

    widget.accept()
    oid = widget.ctrl.current_object
    obj = session.objects[oid]
    assert obj.name == "liver"
    assert (session.labels[3] == oid).any() and not np.delete(session.labels, 3, axis=0).any()
    assert np.array_equal(np.asarray(widget.ctrl.labels_layer.data)[3], session.labels[3])
    assert obj.slice_status == {3: "prompted"}
    prov = obj.provenance
    text = prov.get("text_prompt") or (prov.get("last") or {}).get("text_prompt") or str(prov)
    assert "liver" in text and "random_weights" in str(prov)
    lo, hi = viewer.layers["CT"].contrast_limits  # stock CLIPSeg sees what the display shows
    assert prov["model_window"] == pytest.approx([lo, hi])

    assert widget._session_call("undo")
    assert np.array_equal(session.labels, before)


def test_text_over_the_volume_keeps_the_users_slices_and_undoes_in_one_step(qtbot, text_widget):
    viewer, widget = text_widget
    session = widget.ctrl.session
    liver = session.new_object(name="liver").id
    spleen = session.new_object(name="spleen").id
    sq = np.zeros(SHAPE[1:], bool)
    sq[5:12, 5:20] = True
    session.commit_slices(liver, {1: sq}, "prompted")
    session.commit_slices(liver, {2: np.roll(sq, 3, 0)}, "edited")
    session.commit_slices(liver, {4: np.roll(sq, 6, 1)}, "accepted")
    session.commit_slices(liver, {5: sq}, "prompted")
    assert session.set_status(liver, [5], "rejected") == {5}  # the user said "not here"
    session.commit_slices(spleen, {0: np.roll(sq, 20, 0)}, "prompted")
    session.commit_slices(liver, {6: sq}, "prompted")
    before6 = session.labels[6].copy()
    session.labels[6][session.labels[6] == liver] = 0  # the user erases the object there (hand edit)
    session.apply_edit(liver, {6: before6})
    assert session.status_of(liver, 6) == "edited" and not (session.labels[6] == liver).any()
    widget.select_object(liver)
    labels0, status0 = session.labels.copy(), {k: dict(o.slice_status) for k, o in session.objects.items()}

    _run(qtbot, widget, "liver", "volume")
    lab = session.labels
    lab_after = lab.copy()
    st = session.objects[liver].slice_status
    for z in (1, 2, 4, 5, 6):  # prompted, edited, accepted, rejected, erased: exactly as they were
        assert np.array_equal(lab[z], labels0[z]), z
        assert st[z] == status0[liver][z]
    assert st[0] == st[3] == "needs review"  # what Review lists as to be checked
    assert (lab[3] == liver).all()
    assert (lab[0] == spleen).sum() == (labels0[0] == spleen).sum()  # the other object keeps its voxels
    assert ((lab[0] == liver) | (lab[0] == spleen)).all()
    assert any("needs review" in m and "kept" in m for _lv, m in widget.messages)

    assert widget._session_call("undo")  # one step takes the whole proposal back
    assert np.array_equal(session.labels, labels0)
    assert {k: dict(o.slice_status) for k, o in session.objects.items()} == status0
    assert widget._session_call("redo")  # ... and redo brings all of it back
    assert np.array_equal(session.labels, lab_after)


def test_cancelled_volume_run_changes_nothing(qtbot, text_widget):
    viewer, widget = text_widget
    load_backend(qtbot, widget, "classic")
    session = widget.ctrl.session
    before = session.labels.copy()
    worker = widget.segment_text("left kidney", "volume")
    assert widget.text_panel.cancel_button.isEnabled() and not widget.text_panel.run_button.isEnabled()
    widget.propagate()  # no propagation (its own undo group) beside a text run
    assert widget.run is None and "text segmentation is running" in widget.messages[-1][1]
    assert widget.segment_text("liver", "slice") is None  # one text run at a time
    widget.cancel_text()
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=120000)
    assert worker is not None
    assert np.array_equal(session.labels, before)
    assert "cancelled" in widget.ui.status.text() and "nothing was changed" in widget.ui.status.text()
    assert widget.text_panel.run_button.isEnabled()


@pytest.mark.parametrize("text, expected", [("", "Empty text prompt"), ("   ", "Empty text prompt"),
                                            (" ".join(["hepatic"] * 90), "too long")])
def test_bad_text_is_refused_with_nothing_changed(qtbot, text_widget, text, expected):
    viewer, widget = text_widget
    session = widget.ctrl.session
    before, n_obj = session.labels.copy(), len(session.objects)
    assert widget.segment_text(text, "volume") is None
    level, msg = widget.messages[-1]
    assert level == "error" and expected in msg and "Nothing was changed" in msg
    assert widget._text_run is None
    assert np.array_equal(session.labels, before) and len(session.objects) == n_obj


def test_text_without_an_image_says_so(qtbot, make_napari_viewer, monkeypatch, tmp_path):
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path, add_image=None)
    assert widget.segment_text("liver", "slice") is None
    level, msg = widget.messages[-1]
    assert level == "error" and "No image" in msg
    assert widget._text_run is None


def test_text_on_a_2d_image_previews_it_and_volume_means_the_image(qtbot, make_napari_viewer, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(text_prompt, "TEXT_IMAGE_SIZE", 64)
    real = text_prompt.load_text_model
    monkeypatch.setattr(text_prompt, "load_text_model",
                        lambda v, s, d="cpu": _MODELS.get("stock") or _MODELS.setdefault("stock", real(None, None, d)))
    xray = np.random.default_rng(3).integers(0, 4000, (52, 36)).astype(np.uint16)  # portrait, non-square
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(xray, name="DX"))
    with qtbot.waitSignal(widget.preview_updated, timeout=120000) as sig:
        widget.segment_text("left lung", "volume")
    assert sig.args == [0]
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=30000)
    assert widget.preview_layer.data.shape == xray.shape and widget.preview_layer.data.any()
    widget.accept()
    session = widget.ctrl.session
    oid = widget.ctrl.current_object
    assert session.objects[oid].name == "left lung" and session.objects[oid].slice_status == {0: "prompted"}
    assert (session.labels[0] == oid).any()
