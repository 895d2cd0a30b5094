"""Label maps: NIfTI + sidecar round trip, atomic writes, shape checks, napari writer hook."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io import atomic
from napari_medprompt.io.atomic import atomic_write, atomic_write_text
from napari_medprompt.io.errors import LabelWriteError
from napari_medprompt.io.labels_io import load_label_map, save_label_map, sidecar_path
from napari_medprompt.io.layers import volume_from_layer, volume_to_layer_data
from napari_medprompt.io.napari_hooks import LabelSaveError, write_labels
from tests.io._factory import ct_volume


def _labels(shape, seed=1):
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.uint8)
    lab[2:5, 4:12, 3:9] = 1
    lab[5:7, 10:20, 10:18] = 7
    lab[rng.random(shape) > 0.97] = 3
    return lab


def test_round_trip_voxel_for_voxel_and_same_affine(tmp_path):
    vol = ct_volume()
    lab = _labels(vol.data.shape)
    out = save_label_map(tmp_path / "seg.nii.gz", lab, vol, {1: {"name": "liver", "color": [200, 0, 0]}})
    assert sidecar_path(out) == tmp_path / "seg.json"
    back, geom, info = load_label_map(out)
    np.testing.assert_array_equal(back, lab)
    np.testing.assert_allclose(geom.affine, vol.affine)
    assert geom.spacing == pytest.approx(vol.spacing)  # NIfTI stores float32 zooms
    assert info[1] == {"name": "liver", "color": [200, 0, 0]}
    assert info[7]["name"] == "label 7" and len(info[7]["color"]) == 3
    side = json.loads((tmp_path / "seg.json").read_text())
    assert side["shape"] == list(lab.shape) and side["spacing"] == list(vol.spacing)
    hdr = nib.load(str(out)).header
    assert int(hdr["sform_code"]) == 1 and int(hdr["qform_code"]) == 1
    np.testing.assert_allclose(hdr.get_qform(), vol.affine, atol=1e-5)  # ITK/Slicer read qform too


def test_shape_mismatch_is_refused_and_nothing_written(tmp_path):
    vol = ct_volume()
    with pytest.raises(LabelWriteError, match=r"does not match the image .* nothing was written"):
        save_label_map(tmp_path / "seg.nii.gz", np.zeros((3, 4, 5), np.uint8), vol)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_leaves_previous_file_intact(tmp_path, monkeypatch):
    vol = ct_volume()
    lab = _labels(vol.data.shape)
    out = save_label_map(tmp_path / "seg.nii.gz", lab, vol)
    before = out.read_bytes()

    real_fsync = atomic.os.fsync

    def boom(fd):  # the disk fills up half way through the write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError, match="No space"):
        save_label_map(out, np.zeros_like(lab), vol)
    monkeypatch.setattr(atomic.os, "fsync", real_fsync)
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.json", "seg.nii.gz"]  # no temp left
    np.testing.assert_array_equal(load_label_map(out)[0], lab)


def test_atomic_write_exception_mid_write(tmp_path):
    p = tmp_path / "notes.txt"
    atomic_write_text(p, "first version\n")
    with pytest.raises(RuntimeError):
        with atomic_write(p, "w") as f:
            f.write("half of the second ver")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "first version\n"
    assert [q.name for q in tmp_path.iterdir()] == ["notes.txt"]


def test_layer_metadata_round_trip_and_writer_hook(tmp_path):
    vol = ct_volume()
    vol.meta["dicom_files"] = ["/a/1.dcm", "/a/2.dcm"]
    data, kw, kind = volume_to_layer_data(vol)
    json.dumps(kw["metadata"])  # serialisable
    assert kw["metadata"]["medprompt"]["dicom_files"] == ["/a/1.dcm", "/a/2.dcm"]
    back = volume_from_layer(data, kw["metadata"])
    np.testing.assert_allclose(back.affine, vol.affine)
    assert back.spacing == vol.spacing and back.meta["dicom_files"] == ["/a/1.dcm", "/a/2.dcm"]

    lab = _labels(vol.data.shape)
    attrs = {"name": "seg", "scale": kw["scale"], "metadata": {"medprompt": kw["metadata"]["medprompt"],
                                                              "label_names": {1: "liver"}}}
    written = write_labels(str(tmp_path / "seg.nii.gz"), lab, attrs)
    assert written == [str(tmp_path / "seg.nii.gz"), str(tmp_path / "seg.json")]
    back_lab, geom, info = load_label_map(written[0])
    np.testing.assert_array_equal(back_lab, lab)
    np.testing.assert_allclose(geom.affine, vol.affine)
    assert info[1]["name"] == "liver"

    with pytest.raises(LabelSaveError, match="does not match its image"):  # shown by napari
        write_labels(str(tmp_path / "bad.nii.gz"), lab[:-1], attrs)
    assert not (tmp_path / "bad.nii.gz").exists()


def test_writer_hook_without_image_metadata_uses_scale(tmp_path):
    lab = _labels((8, 24, 20))
    with pytest.warns(UserWarning, match="carries no image geometry.*not in other tools"):
        written = write_labels(str(tmp_path / "x.nii.gz"), lab,
                               {"name": "x", "scale": (2.0, 0.5, 0.25), "metadata": {}})
    img = nib.load(written[0])
    np.testing.assert_allclose(np.diag(img.affine)[:3], [0.25, 0.5, 2.0])
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).T, lab)
