"""Screenshots of the Text prompt and Adapter controls (written to $MEDPROMPT_SCREENSHOT_DIR or tmp)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from napari_medprompt._qt.segment import text_prompt
from tests._qt._helpers import load_backend, make_widget, stop_workers_after_test  # noqa: F401
from tests._qt.test_segment_adapter import MEDSAM2, _sam2_adapter, _seg_store, _volume


def test_screenshot_text_and_adapter_controls(qtbot, make_napari_viewer, monkeypatch, tmp_path):
    from napari_medprompt.models.sam2_weights import write_random_checkpoint

    out = Path(os.environ.get("MEDPROMPT_SCREENSHOT_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(text_prompt, "TEXT_IMAGE_SIZE", 64)
    ckpt = write_random_checkpoint(MEDSAM2, tmp_path / "MedSAM2_latest.pt")
    viewer, widget = make_widget(make_napari_viewer, monkeypatch, tmp_path,
                                 add_image=lambda v: v.add_image(_volume(), name="CT"))
    load_backend(qtbot, widget, MEDSAM2, checkpoint=str(ckpt), timeout=180000)
    store = _seg_store(widget)
    m = _sam2_adapter(widget.ctrl.segmenter.net, ckpt, 0)
    vid = store.add(m, preprocess=m.preprocess, metrics={"val": {"dice": 0.5}}, activate=False)
    m.detach_adapters()
    widget.refresh_seg_models()
    qtbot.waitUntil(lambda: not widget.backend.adapter.isHidden(), timeout=60000)
    widget.choose_adapter(vid)
    qtbot.waitUntil(lambda: widget._seg_ready and widget.backend.adapter.isEnabled(), timeout=60000)
    widget.ctrl.jump_to_slice(2)
    widget.segment_text("liver", "volume")
    qtbot.waitUntil(lambda: widget._text_run is None, timeout=180000)
    viewer.window._qt_window.resize(1400, 1000)
    viewer.window._qt_window.show()
    qtbot.wait(300)
    for name, w in (("backend_adapter", widget.backend), ("text_panel", widget.text_panel.parentWidget()),
                    ("segment_dock", widget)):
        img = w.grab()
        assert not img.isNull() and img.width() > 50
        img.save(str(out / f"{name}.png"))
    shot = viewer.screenshot(canvas_only=False)
    assert np.asarray(shot).std() > 0
    from skimage.io import imsave

    imsave(str(out / "viewer.png"), np.asarray(shot), check_contrast=False)
