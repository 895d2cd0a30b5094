"""A saved label map overlays its source image in other tools: nibabel sees the source affine, and
SimpleITK (the reader ITK-SNAP and 3D Slicer build on) sees the source's origin, direction and
spacing, for NIfTI, NRRD and DICOM sources of ../shared/data."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from napari_medprompt.io.labels_io import load_label_map, save_label_map
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file

import SimpleITK as sitk

SOURCES = [
    ("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz"),  # RAS
    ("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz"),  # LPS
    ("pyradiomics/brain1_image.nii.gz", "pyradiomics/brain1_label.nii.gz"),  # LAS
    ("pyradiomics/breast1_image.nrrd", "pyradiomics/breast1_label.nrrd"),  # NRRD, LPS
    ("niivue_images/MR_Gd.nii.gz", None),  # float64
]


def _sitk_geometry(img):
    return np.array(img.GetOrigin()), np.array(img.GetDirection()), np.array(img.GetSpacing())


def _assert_same_sitk_geometry(a, b):
    for x, y in zip(_sitk_geometry(a), _sitk_geometry(b)):
        np.testing.assert_allclose(x, y, atol=1e-4)


@pytest.mark.parametrize("source,label", SOURCES, ids=[s.split("/")[-1] for s, _ in SOURCES])
def test_saved_labels_overlay_the_source_in_nibabel_and_itk(tmp_path, source, label):
    src = shared_file(source)
    (vol,) = read_image(src)
    if label:
        labels = read_image(shared_file(label))[0].data
    else:
        labels = (vol.data > np.percentile(vol.data, 95)).astype(np.uint8)
    out = save_label_map(tmp_path / "seg.nii.gz", labels, vol)
    back, geom, _ = load_label_map(out)
    np.testing.assert_array_equal(back, labels)  # voxel for voxel
    np.testing.assert_allclose(geom.affine, vol.affine)
    saved = sitk.ReadImage(str(out))
    _assert_same_sitk_geometry(saved, sitk.ReadImage(str(src)))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(saved), labels)
    if source.endswith(".nii.gz"):
        ref = nib.load(str(src))
        img = nib.load(str(out))
        np.testing.assert_allclose(img.affine, ref.affine)
        assert int(img.header["sform_code"]) == int(ref.header["sform_code"])  # e.g. 2 (aligned)


def test_labels_on_the_dicom_series_overlay_it_like_a_dcm2niix_conversion(tmp_path):
    """The DICOM CT's label map saves with the LPS->RAS flip of the series geometry (the affine a
    dcm2niix conversion describes), ITK places it exactly on the series, and TotalSegmentator's
    own NIfTI label map, resampled onto the series by ITK, is the same map voxel for voxel."""
    folder = shared_file("totalsegmentator/example_ct_dicom")
    seg_path = shared_file("totalsegmentator/example_seg_dicom.nii.gz")
    (vol,) = read_image(folder)
    seg = nib.load(str(seg_path))
    t = ornt_transform(io_orientation(seg.affine), io_orientation(vol.affine))
    labels = apply_orientation(np.asanyarray(seg.dataobj), t).T
    out = save_label_map(tmp_path / "seg.nii.gz", labels, vol)

    dss = [pydicom.dcmread(f, stop_before_pixels=True) for f in vol.meta["dicom_files"]]
    iop = np.asarray(dss[0].ImageOrientationPatient, float)
    row_sp, col_sp = (float(v) for v in dss[0].PixelSpacing)
    first, last = (np.asarray(d.ImagePositionPatient, float) for d in (dss[0], dss[-1]))
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * col_sp, iop[3:] * row_sp
    lps[:3, 2], lps[:3, 3] = (last - first) / (len(dss) - 1), first
    np.testing.assert_allclose(nib.load(str(out)).affine, np.diag([-1, -1, 1, 1.0]) @ lps, atol=1e-4)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    ct = reader.Execute()
    saved = sitk.ReadImage(str(out))
    _assert_same_sitk_geometry(saved, ct)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(ct), vol.data)  # same voxels as ITK's read
    ts = sitk.ReadImage(str(seg_path))
    on_series = sitk.Resample(ts, ct, sitk.Transform(), sitk.sitkNearestNeighbor, 0, ts.GetPixelID())
    np.testing.assert_array_equal(sitk.GetArrayFromImage(on_series), sitk.GetArrayFromImage(saved))
    np.testing.assert_array_equal(load_label_map(out)[0], labels)


def test_source_with_disagreeing_qform_and_sform(tmp_path):
    """nibabel uses the sform, ITK the qform: the label map keeps both forms of its source, so it
    overlays the image in each tool; the user is told the two forms disagree."""
    from napari_medprompt.io.layers import volume_to_layer_data
    from napari_medprompt.io.napari_hooks import write_labels

    q = np.diag([0.8, 0.8, 2.0, 1.0])
    q[:3, 3] = [5, 6, 7]
    s = np.diag([0.8, 0.8, 2.0, 1.0])
    s[:3, 3] = [-50, -60, -70]
    src = nib.Nifti1Image(np.zeros((10, 12, 6), np.int16), s)
    src.set_qform(q, code=1)
    src.set_sform(s, code=2)
    nib.save(src, str(tmp_path / "img.nii.gz"))
    (vol,) = read_image(tmp_path / "img.nii.gz")
    assert any("qform and sform place the image differently" in w for w in vol.warnings)
    data, kw, _ = volume_to_layer_data(vol)
    labels = np.zeros(vol.data.shape, np.uint8)
    labels[2, 3:5, 4:7] = 1
    out, _ = write_labels(str(tmp_path / "seg.nii.gz"), labels, {"name": "seg", **kw})
    np.testing.assert_allclose(nib.load(out).affine, nib.load(str(tmp_path / "img.nii.gz")).affine)
    _assert_same_sitk_geometry(sitk.ReadImage(out), sitk.ReadImage(str(tmp_path / "img.nii.gz")))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(out)), labels)
