"""DICOM series written by the tests: ordering, geometry, rescale, gaps, localizers, non-images."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pydicom
import pytest

from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.read import read_image
from tests.io._factory import ct_volume


def test_written_series_reads_back_exactly(tmp_path):
    vol = ct_volume()
    write_dicom_series(vol, tmp_path)
    (back,) = read_image(tmp_path)
    np.testing.assert_array_equal(back.data, vol.data)
    assert back.data.dtype == np.int16  # HU after rescale intercept, still integer
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    assert back.spacing == pytest.approx(vol.spacing)
    assert back.warnings == []
    assert "PHANTOM" not in str(back.meta.get("series_description")) and "patient_name" not in back.meta


def test_renamed_and_shuffled_series_opens_in_the_same_order(tmp_path):
    vol = ct_volume(shape=(12, 16, 16))
    src = tmp_path / "src"
    paths = write_dicom_series(vol, src)
    dst = tmp_path / "shuffled"
    dst.mkdir()
    names = [f"x{n:03d}" for n in random.Random(3).sample(range(100), len(paths))]
    order = list(range(len(paths)))
    random.Random(5).shuffle(order)
    for i, name in zip(order, names):
        shutil.copy(paths[i], dst / name)  # no suffix, random names
        ds = pydicom.dcmread(dst / name)
        ds.InstanceNumber = 1  # instance numbers are useless too
        ds.save_as(dst / name)
    (a,) = read_image(src)
    (b,) = read_image(dst)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_allclose(a.affine, b.affine)


def test_gap_and_uneven_spacing_are_reported(tmp_path):
    vol = ct_volume(shape=(10, 8, 8))
    paths = write_dicom_series(vol, tmp_path)
    paths[4].unlink()
    paths[5].unlink()
    (back,) = read_image(tmp_path)
    assert back.data.shape[0] == 8
    assert any("gap" in w and "2 slice(s) missing" in w for w in back.warnings), back.warnings


def test_localizer_and_non_image_objects_are_skipped(tmp_path):
    vol = ct_volume(shape=(6, 16, 16))
    paths = write_dicom_series(vol, tmp_path)
    loc = pydicom.dcmread(paths[0])
    loc.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    loc.SOPInstanceUID = pydicom.uid.generate_uid()
    loc.ImagePositionPatient = [0, 0, 0]
    loc.save_as(tmp_path / "localizer.dcm")
    sag = pydicom.dcmread(paths[1])  # a reformat in another orientation, same series
    sag.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
    sag.SOPInstanceUID = pydicom.uid.generate_uid()
    sag.save_as(tmp_path / "sagittal.dcm")
    sr = pydicom.dcmread(paths[2])
    del sr.PixelData
    sr.Modality = "SR"
    sr.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.22"
    sr.save_as(tmp_path / "report.dcm")
    (back,) = read_image(tmp_path)
    np.testing.assert_array_equal(back.data, vol.data)
    text = " ".join(back.warnings)
    assert "localizer" in text and "Enhanced SR" in text and "different orientation" in text


def test_two_series_in_one_folder_give_two_volumes(tmp_path):
    a, b = ct_volume(shape=(5, 16, 16), seed=1), ct_volume(shape=(7, 20, 18), seed=2)
    write_dicom_series(a, tmp_path / "s1", series_description="first")
    write_dicom_series(b, tmp_path / "s2", series_description="second")
    vols = read_image(tmp_path)
    assert sorted(v.data.shape for v in vols) == [(5, 16, 16), (7, 20, 18)]
    by_name = {v.name.split(" #")[0]: v for v in vols}
    np.testing.assert_array_equal(by_name["first"].data, a.data)
    np.testing.assert_array_equal(by_name["second"].data, b.data)


def test_oblique_series_geometry(tmp_path):
    vol = ct_volume(shape=(6, 12, 10))
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    vol.affine[:3, :3] = rot @ vol.affine[:3, :3]
    write_dicom_series(vol, tmp_path)
    (back,) = read_image(tmp_path)
    np.testing.assert_allclose(back.affine, vol.affine, atol=1e-4)
    np.testing.assert_array_equal(back.data, vol.data)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm", "MR_small_implicit.dcm", "MR_small_padded.dcm",
                                  "liver_1frame.dcm", "rtdose_1frame.dcm", "SC_rgb_small_odd.dcm", "JPEG2000.dcm"])
def test_native_fast_path_equals_pydicom(name):
    """The zero-copy path for uncompressed pixels gives exactly ds.pixel_array (or stands aside)."""
    from pydicom.data import get_testdata_file

    from napari_medprompt.io._dicom_common import native_pixels

    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"pydicom test file {name} not available")
    ds = pydicom.dcmread(path)
    fast = native_pixels(ds)
    if fast is None:
        return  # compressed, colour, multi-frame or sign-extended: pydicom decodes it
    ref = ds.pixel_array
    assert fast.dtype == ref.dtype
    np.testing.assert_array_equal(fast, ref)


def test_enhanced_multiframe_ct_matches_the_single_frame_series(tmp_path):
    """A legacy-converted enhanced CT (one multi-frame file, highdicom) opens like its series."""
    import highdicom as hd

    vol = ct_volume(shape=(8, 24, 20))
    c, s = np.cos(0.2), np.sin(0.2)
    vol.affine[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]) @ vol.affine[:3, :3]
    paths = write_dicom_series(vol, tmp_path / "series")
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=[pydicom.dcmread(p) for p in paths[::-1]], series_instance_uid=hd.UID(),
        series_number=9, sop_instance_uid=hd.UID(), instance_number=1)
    (tmp_path / "mf").mkdir()
    mf.save_as(tmp_path / "mf" / "enhanced.dcm")
    (single,) = read_image(tmp_path / "series")
    (multi,) = read_image(tmp_path / "mf" / "enhanced.dcm")
    assert multi.data.dtype == np.int16
    np.testing.assert_array_equal(multi.data, single.data)
    np.testing.assert_allclose(multi.affine, single.affine, atol=1e-4)
    assert multi.spacing == pytest.approx(single.spacing, rel=1e-5)
    (from_folder,) = read_image(tmp_path / "mf")
    np.testing.assert_array_equal(from_folder.data, single.data)


def test_raw_dicom_without_preamble_or_file_meta(tmp_path):
    vol = ct_volume(shape=(4, 12, 10))
    paths = write_dicom_series(vol, tmp_path / "p10")
    raw = tmp_path / "raw"
    raw.mkdir()
    for i, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.preamble = None
        del ds.file_meta
        pydicom.dcmwrite(raw / f"s{i}.dcm", ds, implicit_vr=True, little_endian=True)
    assert (raw / "s0.dcm").read_bytes()[128:132] != b"DICM"
    (back,) = read_image(raw)
    np.testing.assert_array_equal(back.data, vol.data)
    (one,) = read_image(raw / "s2.dcm")
    np.testing.assert_array_equal(one.data, vol.data)


def test_broken_neighbour_file_does_not_block_the_series(tmp_path):
    """Opening one file of a series (or its folder) works when the folder also holds files named
    .dcm that are not readable DICOM; the skipped files are named in the warnings."""
    vol = ct_volume(shape=(4, 12, 10))
    paths = write_dicom_series(vol, tmp_path)
    (tmp_path / "notes.dcm").write_text("scan notes, not DICOM\n")
    (tmp_path / "junk.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff" + b"\x01" * 20)
    (one,) = read_image(paths[1])
    np.testing.assert_array_equal(one.data, vol.data)
    assert any("unreadable file notes.dcm" in w for w in one.warnings), one.warnings
    (folder,) = read_image(tmp_path)
    np.testing.assert_array_equal(folder.data, vol.data)
    text = " ".join(folder.warnings)
    assert "unreadable file notes.dcm" in text and "junk.dcm" in text, text


def test_uneven_spacing_is_reported(tmp_path):
    vol = ct_volume(shape=(8, 8, 8), spacing=(2.5, 0.8, 0.7))
    paths = write_dicom_series(vol, tmp_path)
    ds = pydicom.dcmread(paths[3])
    ipp = [float(v) for v in ds.ImagePositionPatient]
    ds.ImagePositionPatient = [ipp[0], ipp[1], ipp[2] + 0.8]  # one slice 0.8 mm off its place
    ds.save_as(paths[3])
    (back,) = read_image(tmp_path)
    assert back.data.shape[0] == 8
    assert any("uneven slice spacing" in w and "median 2.500" in w for w in back.warnings), back.warnings
    assert not any("gap" in w for w in back.warnings)


def test_one_file_opens_only_its_own_series_when_series_share_a_folder(tmp_path):
    a, b = ct_volume(shape=(5, 16, 16), seed=1), ct_volume(shape=(7, 16, 16), seed=2)
    write_dicom_series(a, tmp_path, series_description="first", file_names=[f"a{i}.dcm" for i in range(5)])
    pb = write_dicom_series(b, tmp_path, series_description="second", file_names=[f"b{i}.dcm" for i in range(7)])
    (vol,) = read_image(pb[3])
    np.testing.assert_array_equal(vol.data, b.data)
    assert vol.name.startswith("second") and len(vol.meta["dicom_files"]) == 7
    assert len(read_image(tmp_path)) == 2


def test_fractional_and_per_slice_rescale(tmp_path):
    """Rescale slope/intercept are applied per slice; fractional values become float32."""
    vol = ct_volume(shape=(4, 8, 8))
    paths = write_dicom_series(vol, tmp_path)
    stored = []
    for k, p in enumerate(paths):
        ds = pydicom.dcmread(p)
        ds.RescaleSlope, ds.RescaleIntercept = f"{0.5 * (k + 1)}", "-10"
        ds.save_as(p)
        stored.append(ds.pixel_array.astype(np.float64))
    (back,) = read_image(tmp_path)
    assert back.data.dtype == np.float32
    expect = np.stack([s * 0.5 * (k + 1) - 10 for k, s in enumerate(stored)])
    np.testing.assert_allclose(back.data, expect, rtol=1e-6)
