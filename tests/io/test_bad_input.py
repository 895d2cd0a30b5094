"""Recognised-but-broken input gives a clear error naming the file; unknown input is left alone."""

from __future__ import annotations

import gzip
import warnings

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.encaps import encapsulate

from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.errors import ImageReadError, UnsupportedFormat
from napari_medprompt.io.napari_hooks import get_reader
from napari_medprompt.io.read import read_image
from tests.io._factory import ct_volume


def _nifti(tmp_path, data, name="img.nii.gz"):
    p = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.diag([0.8, 0.8, 2.0, 1.0])), str(p))
    return p


def _fails(path, *patterns):
    """The reader hook recognises ``path`` but reading it raises ImageReadError naming it."""
    reader = get_reader(str(path))
    assert reader is not None, "a recognised file must get a reader"
    with pytest.raises(ImageReadError) as ei:
        reader(str(path))
    msg = str(ei.value)
    assert str(path) in msg
    for pat in patterns:
        assert pat in msg.lower(), msg
    return msg


def test_truncated_gzip(tmp_path):
    p = _nifti(tmp_path, np.arange(40 * 40 * 20, dtype=np.int16).reshape(40, 40, 20))
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    _fails(p, "truncated")


def test_corrupt_nifti_header(tmp_path):
    p = _nifti(tmp_path, np.zeros((8, 8, 4), np.int16), "img.nii")
    raw = bytearray(p.read_bytes())
    raw[70:72] = np.int16(12345).tobytes()  # datatype code that does not exist
    p.write_bytes(bytes(raw))
    _fails(p, "nifti")
    q = tmp_path / "noise.nii.gz"
    q.write_bytes(gzip.compress(np.random.default_rng(0).bytes(2000)))
    _fails(q)


def test_corrupt_nrrd_and_png(tmp_path):
    p = tmp_path / "vol.nrrd"
    p.write_bytes(b"NRRD0004\ntype: shorty\ndimension: banana\n\n" + b"\0" * 64)
    _fails(p, "corrupt")
    q = tmp_path / "xray.png"
    q.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    _fails(q, "png")


def test_corrupt_dicom(tmp_path):
    p = tmp_path / "slice.dcm"
    p.write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"\x01" * 20)
    _fails(p, "corrupt")


def test_unsupported_transfer_syntax_without_decoder(tmp_path):
    (src,) = write_dicom_series(ct_volume(shape=(1, 16, 16)), tmp_path / "s")
    ds = pydicom.dcmread(src)
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2 video: no decoder
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + b"\0" * 30])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    p = tmp_path / "mpeg2.dcm"
    ds.save_as(p, enforce_file_format=True)
    msg = _fails(p, "transfer syntax")
    assert "1.2.840.10008.1.2.4.100" in msg and "pylibjpeg" in msg


def test_4d_volume_is_refused_with_its_shape(tmp_path):
    p = _nifti(tmp_path, np.zeros((8, 8, 4, 5), np.int16))
    msg = _fails(p, "4d", "5 volumes")
    assert "(8, 8, 4, 5)" in msg
    q = _nifti(tmp_path, np.ones((8, 8, 4, 1), np.int16), "single.nii.gz")  # a singleton 4th axis is fine
    (vol,) = read_image(q)
    assert vol.data.shape == (4, 8, 8)


def test_nan_and_inf_voxels_are_replaced_and_reported(tmp_path):
    data = np.linspace(-5, 100, 8 * 8 * 4, dtype=np.float32).reshape(8, 8, 4)
    data[1, 2, 3] = np.nan
    data[4, 4, 0] = np.inf
    data[0, 0, 1] = -np.inf
    p = _nifti(tmp_path, data)
    before = p.read_bytes()
    with pytest.warns(UserWarning, match=r"3 voxel\(s\).*NaN or infinite") as rec:
        layers = get_reader(str(p))(str(p))
    assert str(p) in str(rec[0].message)
    arr = layers[0][0]
    assert np.isfinite(arr).all() and arr[3, 2, 1] == pytest.approx(-5.0)
    assert arr[0, 0, 0] == pytest.approx(-5.0) and arr[3, 3, 3] == data[3, 3, 3]
    assert p.read_bytes() == before  # the file is not touched
    allnan = _nifti(tmp_path, np.full((4, 4, 2), np.nan, np.float32), "nan.nii.gz")
    _fails(allnan, "nan")


def test_empty_and_image_less_dicom_folders(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert get_reader(str(empty)) is None  # not ours: napari may try another reader
    with pytest.raises(ImageReadError, match="no DICOM files") as ei:
        read_image(empty)
    assert str(empty) in str(ei.value)

    only_sr = tmp_path / "reports"
    (src,) = write_dicom_series(ct_volume(shape=(1, 8, 8)), tmp_path / "s")
    ds = pydicom.dcmread(src)
    del ds.PixelData
    ds.Modality, ds.SOPClassUID = "SR", "1.2.840.10008.5.1.4.1.1.88.22"
    only_sr.mkdir()
    ds.save_as(only_sr / "sr.dcm")
    msg = _fails(only_sr, "no dicom image series")
    assert "Enhanced SR" in msg


def test_unrecognised_paths_are_left_to_other_readers(tmp_path):
    txt = tmp_path / "notes.txt"
    txt.write_text("hello")
    assert get_reader(str(txt)) is None
    assert get_reader(str(tmp_path / "missing.nii.gz")) is None
    with pytest.raises(UnsupportedFormat):
        read_image(txt)
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.nii.gz")


def test_good_file_through_the_hook_emits_no_warning(tmp_path):
    p = _nifti(tmp_path, np.zeros((8, 8, 4), np.int16))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (layer,) = get_reader(str(p))(str(p))
    assert layer[0].shape == (4, 8, 8) and layer[2] == "image"
