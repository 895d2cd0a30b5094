"""A DICOM SEG that cannot be written tells the user why: napari drops a writer's ValueError as "not
a valid writer", so the plugin's writers raise LabelSaveError (an OSError), which napari shows as an
error notification, for File > Save with the SEG filter and for a plain save by extension."""

from __future__ import annotations

import re

import pytest

from napari_medprompt.io.napari_hooks import LabelSaveError
from tests.io._factory import ct_volume
from tests.io._orientation import write_nifti

PLUGIN = "napari-medprompt"


def _multiframe(tmp_path):
    import highdicom as hd
    import pydicom

    from napari_medprompt.io.dicom_write import write_dicom_series

    paths = write_dicom_series(ct_volume(shape=(4, 12, 10)), tmp_path / "series")
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=[pydicom.dcmread(p) for p in paths], series_instance_uid=hd.UID(),
        series_number=9, sop_instance_uid=hd.UID(), instance_number=1)
    mf.save_as(tmp_path / "enhanced.dcm")
    return tmp_path / "enhanced.dcm"


def _save_dialog_error(viewer, monkeypatch, out):
    """File > Save Selected Layers..., the user types ``out`` and picks the DICOM SEG filter; returns
    the error's text and the message of the notification napari makes of it (napari's excepthook)."""
    from napari._qt import qt_viewer as qv
    from napari.plugins import _npe2
    from napari.utils.notifications import notification_manager

    ext_str, _writers = _npe2.file_extensions_string_for_layers(list(viewer.layers.selection))
    seg_filter = next(e for e in ext_str.split(";;") if "DICOM SEG" in e)
    monkeypatch.setattr(qv.QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), seg_filter))
    with pytest.raises(LabelSaveError) as err:
        viewer.window._qt_viewer._save_layers_dialog(selected=True)
    monkeypatch.setattr(notification_manager, "catch_error", True)
    seen = []
    n_records = len(notification_manager.records)
    notification_manager.notification_ready.connect(seen.append)
    try:
        notification_manager.receive_error(err.type, err.value, err.tb)  # napari's excepthook
    finally:
        notification_manager.notification_ready.disconnect(seen.append)
        del notification_manager.records[n_records:]  # they hold the traceback, hence the viewer
    text, message = str(err.value), seen[-1].message
    err.value.__traceback__ = None
    del err, seen
    assert not out.exists()
    return text, message


@pytest.mark.parametrize("source", ["nifti", "multiframe"])
def test_seg_export_error_reaches_the_user(make_napari_viewer, tmp_path, monkeypatch, source):
    path = write_nifti(tmp_path / "ct.nii.gz", "RAS")[0] if source == "nifti" else _multiframe(tmp_path)
    reason = "needs a label layer drawn on an image read from a DICOM" if source == "nifti" else \
        "multi-frame .* not supported"
    viewer = make_napari_viewer()
    viewer.open(str(path), plugin=PLUGIN)
    viewer.layers.selection.active = viewer.layers[0]
    viewer._new_labels()
    labels = viewer.layers[-1]
    labels.data[1, 2:5, 2:5] = 1
    viewer.layers.selection.active = labels

    err, note = _save_dialog_error(viewer, monkeypatch, tmp_path / "seg.dcm")
    assert re.search(reason, err) and str(tmp_path / "seg.dcm") in err
    assert re.search(reason, note), note
    assert "valid writer" not in note

    # a plain save by extension (no filter chosen) raises the reason too instead of "No data written"
    try:
        viewer.layers.save(str(tmp_path / "again.dcm"), selected=True)
    except LabelSaveError as e:
        plain = str(e)
    else:
        plain = ""
    assert re.search(reason, plain), plain
    assert not (tmp_path / "again.dcm").exists()
