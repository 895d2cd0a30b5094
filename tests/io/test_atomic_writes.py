"""Every save is atomic: a failure at any point leaves the previous files byte for byte, and no
temporary file behind (label map + sidecar as a pair, DICOM SEG, read-only folders)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from napari_medprompt.io import atomic
from napari_medprompt.io.dicom_seg import export_dicom_seg
from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.labels_io import load_label_map, save_label_map
from napari_medprompt.io.napari_hooks import write_labels
from napari_medprompt.io.read import read_image
from tests.io._factory import ct_volume


def _snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _labels(vol, value=1):
    lab = np.zeros(vol.data.shape, np.uint8)
    lab[1:4, 3:12, 4:10] = value
    return lab


def _fail_on_call(monkeypatch, n):
    """os.fsync raises ENOSPC on its n-th call (1-based): the disk fills up during a save."""
    real, calls = os.fsync, []

    def fsync(fd):
        calls.append(fd)
        if len(calls) == n:
            raise OSError(28, "No space left on device")
        return real(fd)

    monkeypatch.setattr(atomic.os, "fsync", fsync)


@pytest.mark.parametrize("failing_fsync", [1, 2])  # 1: the label map, 2: its sidecar
def test_label_map_and_sidecar_are_replaced_together_or_not_at_all(tmp_path, monkeypatch, failing_fsync):
    vol = ct_volume()
    out = save_label_map(tmp_path / "seg.nii.gz", _labels(vol), vol, {1: {"name": "liver"}})
    before = _snapshot(tmp_path)
    _fail_on_call(monkeypatch, failing_fsync)
    with pytest.raises(OSError, match="No space") as ei:
        save_label_map(out, _labels(vol, 2), vol, {2: {"name": "spleen"}})
    monkeypatch.undo()
    assert str(out) in str(ei.value) and "unchanged" in str(ei.value)  # says what was not saved
    assert _snapshot(tmp_path) == before  # both files untouched, no temporary file left
    labels, _, info = load_label_map(out)
    assert set(np.unique(labels)) == {0, 1} and info[1]["name"] == "liver"


def test_label_info_that_cannot_be_stored_changes_nothing(tmp_path):
    vol = ct_volume()
    out = save_label_map(tmp_path / "seg.nii.gz", _labels(vol), vol, {1: {"name": "liver"}})
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError):
        save_label_map(out, _labels(vol, 2), vol, {"two": {"name": "spleen"}})  # id is not a number
    assert _snapshot(tmp_path) == before
    # numpy values (as napari layers hold them) are stored as plain JSON numbers
    save_label_map(out, _labels(vol, 2), vol,
                   {2: {"name": "spleen", "color": np.array([10, 20, 30]), "volume_ml": np.float32(2.5)}})
    side = json.loads((tmp_path / "seg.json").read_text())
    assert side["labels"] == [{"id": 2, "name": "spleen", "color": [10, 20, 30], "volume_ml": 2.5}]


def test_read_only_folder_refuses_and_keeps_the_previous_save(tmp_path, monkeypatch):
    """Simulated (works as root too): the folder does not let a temporary file be created."""
    vol = ct_volume()
    out = save_label_map(tmp_path / "seg.nii.gz", _labels(vol), vol)
    before = _snapshot(tmp_path)

    def mkstemp(*a, **k):
        raise PermissionError(13, "Permission denied", str(tmp_path))

    monkeypatch.setattr(atomic.tempfile, "mkstemp", mkstemp)
    with pytest.raises(PermissionError) as ei, pytest.warns(UserWarning, match="no image geometry"):
        write_labels(str(out), _labels(vol, 3), {"name": "seg", "metadata": {}, "scale": vol.spacing})
    assert str(out) in str(ei.value)  # names the file the user tried to save, not a temp file
    assert _snapshot(tmp_path) == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root ignores folder permissions")
def test_real_read_only_folder(tmp_path):
    vol = ct_volume()
    folder = tmp_path / "ro"
    out = save_label_map(folder / "seg.nii.gz", _labels(vol), vol)
    before = _snapshot(folder)
    folder.chmod(0o555)
    try:
        with pytest.raises(PermissionError):
            save_label_map(out, _labels(vol, 2), vol)
        assert _snapshot(folder) == before
    finally:
        folder.chmod(0o755)


def test_failed_dicom_seg_export_keeps_the_previous_seg(tmp_path, monkeypatch):
    write_dicom_series(ct_volume(shape=(6, 16, 16)), tmp_path / "series")
    (vol,) = read_image(tmp_path / "series")
    files = vol.meta["dicom_files"]
    out_dir = tmp_path / "out"
    out = export_dicom_seg(out_dir / "seg.dcm", _labels(vol), files, {1: {"name": "liver"}})
    before = _snapshot(out_dir)
    _fail_on_call(monkeypatch, 1)
    with pytest.raises(OSError, match="No space"):
        export_dicom_seg(out, _labels(vol, 4), files, {4: {"name": "kidney"}})
    monkeypatch.undo()
    assert _snapshot(out_dir) == before

    import highdicom as hd

    def broken_save(self, fp, *a, **k):  # the encoder dies half way through the file
        fp.write(b"\0" * 200)
        raise RuntimeError("encoder crashed")

    monkeypatch.setattr(hd.seg.Segmentation, "save_as", broken_save)
    with pytest.raises(RuntimeError, match="encoder crashed"):
        export_dicom_seg(out, _labels(vol, 4), files)
    assert _snapshot(out_dir) == before
