"""The Learn dock's "Segmentation adapter" tab, as a clinician uses it: objects accepted in the Segment
panel are listed with their slice counts, a cached SAM2 decoder (random-init SAM2.1-tiny, real config,
reduced input size) trains in the background from the checked ones, the held-out comparison appears,
the version is activated. Then the same on the real CT of ../shared/data (skipped when absent)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tests._qt._helpers import (  # noqa: F401 (autouse fixture)
    dock_plugin_widget,
    make_widget,
    press,
    reference_mask,
    stop_workers_after_test,
)
from tests.learn.seg_synthetic import organ_volume

import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
pytestmark = pytest.mark.gui
SHOTS = os.environ.get("MEDPROMPT_SCREENSHOTS")
SIZE = 128


def _shot(widget, name):
    if SHOTS:
        widget.grab().save(os.path.join(SHOTS, f"{name}.png"))


def _open_tab(viewer):
    learn = dock_plugin_widget(viewer, "Learn")
    learn.tabs.setCurrentWidget(learn.seg_page)
    return learn, learn.seg_tab


def _items(tab):
    return [tab.objects.item(i).text() for i in range(tab.objects.count())]


def _train(qtbot, tab, timeout=240000):
    with qtbot.waitSignal(tab.trained, timeout=timeout) as blocker:
        press(qtbot, tab.train)
        assert tab.job is not None, tab.learn.messages
    return blocker.args[0]


def _organ_session(make_napari_viewer, monkeypatch, tmp_path):
    """The synthetic CT in the Segment dock, with "liver" and "left kidney" accepted on every slice."""
    vol, organs = organ_volume(0)
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                              add_image=lambda v: v.add_image(vol, name="synthetic CT", scale=(2.0, 0.8, 0.8)))
    session = seg.ctrl.session
    for name in ("liver", "left kidney"):
        session.commit_slices(session.new_object(name=name).id, organs[name], "accepted")
    return viewer, session


def test_train_compare_and_activate_a_sam2_decoder(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    viewer, session = _organ_session(make_napari_viewer, monkeypatch, tmp_path)
    one = session.new_object(name="cyst")
    yy, xx = np.mgrid[:64, :64]
    session.commit_slices(one.id, {5: (yy - 8) ** 2 + (xx - 54) ** 2 <= 9}, "accepted")
    learn, tab = _open_tab(viewer)
    qtbot.waitUntil(lambda: tab.objects.count() == 3, timeout=5000)
    texts = _items(tab)
    assert texts[0] == "liver — 8 slices" and texts[1] == "left kidney — 7 slices"
    assert "one slice only" in texts[2] and tab.checked_objects() == [1, 2]  # the one-slice object cannot train
    # the method chooser: the registry's methods, cached ones marked, random weights said
    names = [tab.method.itemData(i) for i in range(tab.method.count())]
    assert {"sam2-decoder", "sam2-adapter", "clipseg-decoder", "vlsm-shallow-vlc"} <= set(names)
    assert tab.method.itemText(names.index("sam2-decoder")).startswith("⚡")
    assert not tab.method.itemText(names.index("sam2-adapter")).startswith("⚡")
    assert "RANDOM" in tab.note.text() and "RANDOM" in tab.base_label.text()
    tab.method.setCurrentIndex(names.index("sam2-decoder"))
    assert tab.lr.value() == pytest.approx(1e-5)  # the recipe's decoder learning rate
    tab.image_size.setValue(SIZE)
    tab.epochs.setValue(4)
    tab.lr.setValue(1e-3)
    job = _train(qtbot, tab)
    res = job.result
    assert job.error is None and res is not None and res.status == "finished", learn.messages
    assert res.random_weights and any("RANDOM" in m for _lv, m in learn.messages)
    assert "held out" in tab.split_label.text() and "liver: slices 7-8" in tab.split_label.text()
    assert any(e.kind == "epoch" and e.epoch == 4 for e in job.events)
    assert tab.curves.n_points() >= 4
    rows = tab.comparison_rows()
    assert [r[0] for r in rows] == ["liver", "left kidney"] and [r[1] for r in rows] == ["2", "2"]
    comp = {c.name: c for c in res.comparison}
    for r in rows:  # the table shows the run's Dice figures
        assert float(r[2]) == pytest.approx(comp[r[0]].base, abs=1e-3)
        assert float(r[3]) == pytest.approx(comp[r[0]].adapted, abs=1e-3)
    # random-init SAM2, but the synthetic structures are learnable: held-out Dice rises
    assert np.mean([c.adapted for c in comp.values()]) > np.mean([c.base for c in comp.values()]) + 0.2, comp
    print("synthetic held-out Dice (random-init SAM2, 4 epochs):",
          {c.name: (c.n_heldout, round(c.base, 3), round(c.adapted, 3)) for c in res.comparison})
    store = learn.workspace.seg_store
    layer = viewer.layers["synthetic CT"]
    assert store.get(res.version)["seg"]["window"] == pytest.approx(list(layer.contrast_limits))  # display window
    assert store.active is None  # nothing is activated by training
    assert tab.versions.rowCount() == 1 and tab.selected_version() == res.version
    assert "RANDOM" in tab.versions.item(0, 2).text()
    viewer.window._qt_window.resize(1400, 1100)
    _shot(learn, "learn_seg_adapter_trained")
    _shot(tab, "learn_seg_adapter_tab_full")
    with qtbot.waitSignal(tab.activated, timeout=5000):
        press(qtbot, tab.activate)
    assert store.active == res.version and tab.versions.item(0, 0).text() == "✔"
    assert json.loads((store.root / "index.json").read_text())["active"] == res.version
    with qtbot.waitSignal(tab.activated, timeout=5000):
        press(qtbot, tab.use_base)
    assert store.active is None and tab.versions.item(0, 0).text() == ""
    # Cancel while it trains: stops within a step; a run with no completed epoch saves nothing
    tab.epochs.setValue(200)
    with qtbot.waitSignal(tab.trained, timeout=240000) as blocker:
        press(qtbot, tab.train)
        qtbot.waitUntil(lambda: any(e.kind == "step" for e in tab.job.events), timeout=120000)
        assert tab.cancel.isEnabled() and not tab.train.isEnabled()
        press(qtbot, tab.cancel)
    res2 = blocker.args[0].result
    assert res2.cancelled and res2.metrics["epochs_completed"] < 200
    if res2.version is None:
        assert res2.status == "stopped-before-first-epoch" and tab.versions.rowCount() == 1
    else:
        assert res2.status == "stopped" and tab.versions.rowCount() == 2
    assert store.active is None and tab.progress.format() == "cancelled"
    # unchecking every object: nothing to train, a message instead of a run
    tab.set_checked([])
    assert not tab.train.isEnabled()
    assert tab.start_training() is None and "Check at least one" in learn.messages[-1][1]


def test_edits_while_training_do_not_change_the_run(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The run is built (its split shown) and its slices copied when Train is pressed: a clinician who
    rejects a slice and deletes an object while it trains neither breaks it nor changes what it learns
    from and measures on; the comparison table says RANDOM weights in its Dice headers."""
    viewer, session = _organ_session(make_napari_viewer, monkeypatch, tmp_path)
    learn, tab = _open_tab(viewer)
    qtbot.waitUntil(lambda: tab.objects.count() == 2, timeout=5000)
    tab.method.setCurrentIndex(tab.method.findData("sam2-decoder"))
    tab.image_size.setValue(SIZE)
    tab.epochs.setValue(1)
    with qtbot.waitSignal(tab.trained, timeout=240000) as blocker:
        press(qtbot, tab.train)
        assert tab.job is not None, learn.messages
        shown = tab.split_label.text()
        session.set_status(1, [3, 8], "rejected")  # a training and a held-out liver slice erased
        session.delete_object(2)  # the kidney deleted while the base model loads
    job = blocker.args[0]
    res = job.result
    assert job.error is None and res is not None and res.version, (job.error, learn.messages)
    assert shown == "Held out: " + job.run.split_note and "liver: slices 7-8" in shown
    rec = learn.workspace.seg_store.get(res.version)["seg"]
    assert rec["train_slices"] == {"liver": [1, 2, 3, 4, 5], "left kidney": [3, 4, 5]}
    assert rec["heldout_slices"] == {"liver": [7, 8], "left kidney": [8, 9]}
    assert [c.name for c in res.comparison] == ["liver", "left kidney"]
    assert all(c.n_heldout == 2 for c in res.comparison)
    assert res.random_weights
    for c in (2, 3):
        assert "RANDOM" in tab.compare.horizontalHeaderItem(c).text()
    _shot(tab, "learn_seg_adapter_random_header")


def test_real_ct_organs_train_an_adapter_through_the_dock(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    """The real CT with its organ labels: liver and spleen accepted on their slices, a SAM2 decoder trains
    for a few steps (3 short epochs) from them through the tab, the comparison is shown and the version is written."""
    viewer, seg = make_widget(make_napari_viewer, monkeypatch, tmp_path)  # skips without ../shared/data
    session = seg.ctrl.session
    for name in ("liver", "spleen"):
        mask = reference_mask(name)
        zs = [z for z in range(mask.shape[0]) if mask[z].any()]
        obj = session.new_object(name=name)
        session.commit_slices(obj.id, {z: mask[z] for z in zs}, "accepted")
    learn, tab = _open_tab(viewer)
    qtbot.waitUntil(lambda: tab.objects.count() == 2, timeout=5000)
    counts = {t.split(" — ")[0]: int(t.split(" — ")[1].split()[0]) for t in _items(tab)}
    assert counts["liver"] >= 4 and counts["spleen"] >= 2, counts
    tab.method.setCurrentIndex(tab.method.findData("sam2-decoder"))
    tab.image_size.setValue(SIZE)
    tab.epochs.setValue(3)
    tab.lr.setValue(1e-3)
    job = _train(qtbot, tab)
    res = job.result
    assert job.error is None and res is not None and res.version, learn.messages
    assert res.random_weights and res.metrics["epochs_completed"] == 3
    steps = [e for e in job.events if e.kind == "step"]
    assert steps and all(np.isfinite(e.loss) for e in steps if e.loss is not None)
    rows = tab.comparison_rows()
    assert {r[0] for r in rows} == {"liver", "spleen"}
    assert all(0.0 <= float(r[2]) <= 1.0 and 0.0 <= float(r[3]) <= 1.0 for r in rows)
    rec = learn.workspace.seg_store.get(res.version)
    assert rec["seg"]["objects"] == ["liver", "spleen"] and rec["seg"]["random_weights"]
    held, trained = rec["seg"]["heldout_slices"], rec["seg"]["train_slices"]
    assert all(not set(held[k]) & set(trained[k]) for k in held)
    print("real CT held-out Dice (random-init SAM2, 3 epochs):",
          {c.name: (c.n_heldout, round(c.base, 3), round(c.adapted, 3)) for c in res.comparison})
    viewer.window._qt_window.resize(1400, 1100)
    _shot(learn, "learn_seg_adapter_real_ct")
