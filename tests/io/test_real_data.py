"""Round trips on the real files in ../shared/data (skipped when absent)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import apply_orientation, io_orientation, ornt_transform

from napari_medprompt.io.labels_io import load_label_map, save_label_map
from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file

TS = "totalsegmentator/"


def _nib_zyx(path):
    img = nib.load(str(path))
    return np.asanyarray(img.dataobj).T, img


@pytest.mark.parametrize("name", ["example_ct.nii.gz", "example_ct_sm.nii.gz", "example_mr_sm.nii.gz"])
def test_nifti_matches_nibabel(name):
    p = shared_file(TS + name)
    (vol,) = read_image(p)
    ref, img = _nib_zyx(p)
    np.testing.assert_array_equal(vol.data, ref)
    np.testing.assert_allclose(vol.affine, img.affine)
    assert vol.spacing == tuple(reversed([float(z) for z in img.header.get_zooms()]))
    assert vol.meta["orientation"] == "".join(nib.aff2axcodes(img.affine))


def test_ct_is_recognised_and_windowed_in_hu():
    (vol,) = read_image(shared_file(TS + "example_ct.nii.gz"))
    assert vol.modality == "CT"
    data, kw, kind = volume_to_layer_data(vol)
    assert kind == "image" and data is vol.data
    assert kw["contrast_limits"] == [-160.0, 240.0]  # soft-tissue window, values untouched
    assert kw["scale"] == (3.0, 3.0, 3.0)


def test_ct_label_map_saved_and_reloaded_voxel_for_voxel(tmp_path):
    (ct,) = read_image(shared_file(TS + "example_ct.nii.gz"))
    (seg,) = read_image(shared_file(TS + "example_seg_fast_force_split.nii.gz"))
    names = json.loads(shared_file(TS + "label_names_total_and_total_mr.json").read_text())["total"]
    info = {int(k): {"name": v} for k, v in names.items() if int(k) in np.unique(seg.data)}
    out = save_label_map(tmp_path / "seg.nii.gz", seg.data, ct, info)
    labels, geom, info2 = load_label_map(out)
    np.testing.assert_array_equal(labels, seg.data)
    np.testing.assert_allclose(geom.affine, ct.affine)  # overlays the image exactly
    assert geom.spacing == ct.spacing
    assert info2[5]["name"] == "liver"
    # Other tools (nibabel here) see the same affine and the same voxels.
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, nib.load(str(shared_file(TS + "example_ct.nii.gz"))).affine)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj).T, seg.data)


def _ts_names():
    return json.loads(shared_file(TS + "label_names_total_and_total_mr.json").read_text())["total"]


def test_dicom_series_against_its_label_map():
    """The JPEG 2000 DICOM series opens in HU; the NIfTI label map, reoriented with the two
    affines, has the same shape and its liver falls on liver-range HU."""
    (vol,) = read_image(shared_file(TS + "example_ct_dicom"))
    assert vol.modality == "CT" and vol.data.shape == (20, 512, 512)
    assert vol.spacing == pytest.approx((2.0, 0.9765625, 0.9765625))
    img = nib.load(str(shared_file(TS + "example_seg_dicom.nii.gz")))
    t = ornt_transform(io_orientation(img.affine), io_orientation(vol.affine))
    np.testing.assert_allclose(img.as_reoriented(t).affine, vol.affine, atol=1e-3)
    labels = apply_orientation(np.asanyarray(img.dataobj), t).T
    assert labels.shape == vol.data.shape
    liver_id = int(next(k for k, v in _ts_names().items() if v == "liver"))
    hu = vol.data[labels == liver_id]
    assert hu.size > 1000
    assert 30 <= np.median(hu) <= 130, np.median(hu)
    air = vol.data[0, :5, :5]
    assert air.max() < -900  # corners are air: rescale intercept applied
    # Slices ascend along the normal (z from -804.5 to -766.5): the names say otherwise.
    assert vol.affine[2, 3] == pytest.approx(-804.5)
    assert "PatientName" not in json.dumps(vol.meta) and all("patient" not in k.lower() for k in vol.meta)


def test_dicom_single_file_opens_its_series():
    folder = shared_file(TS + "example_ct_dicom")
    one = sorted(folder.iterdir())[7]
    (vol,) = read_image(one)
    (full,) = read_image(folder)
    np.testing.assert_array_equal(vol.data, full.data)
    assert len(vol.meta["dicom_files"]) == 20


def test_nrrd_matches_its_nifti_conversion():
    for name in ("brain1_image", "breast1_image", "brain1_label"):
        (a,) = read_image(shared_file(f"pyradiomics/{name}.nrrd"))
        (b,) = read_image(shared_file(f"pyradiomics/{name}.nii.gz"))
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
        np.testing.assert_allclose(a.spacing, b.spacing, rtol=1e-5)


def test_mri_volumes_open_with_percentile_window():
    (mr,) = read_image(shared_file(TS + "example_mr_sm.nii.gz"))
    (seg,) = read_image(shared_file(TS + "example_seg_mr.nii.gz"))
    assert mr.data.shape == seg.data.shape == (20, 91, 117)
    lo, hi = volume_to_layer_data(mr)[1]["contrast_limits"]
    assert mr.data.min() <= lo < hi <= mr.data.max()
    (brain,) = read_image(shared_file("niivue_images/MR_Gd.nii.gz"))
    assert brain.data.shape == (144, 188, 176)


def test_chest_xray_png_and_dicom():
    (png,) = read_image(shared_file("cxr_torchxrayvision/00000001_000.png"))
    assert png.data.shape == (512, 512) and not png.is_rgb and png.data.dtype == np.uint8
    (dcm,) = read_image(shared_file(
        "cxr_torchxrayvision/1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"))
    assert dcm.data.shape == (1024, 1024) and dcm.modality == "CR"
    assert dcm.spacing == pytest.approx((0.168, 0.168))
    assert "JPEG Baseline" in dcm.meta["transfer_syntax"]
    assert dcm.meta["photometric"] == "MONOCHROME2"
    assert 40 < dcm.data.mean() < 220 and dcm.data.std() > 20  # a real decoded radiograph
    flat = json.dumps(dcm.meta)
    assert "16d7f894" not in flat  # the (pseudonymised) patient name/id is not copied


def test_real_dicom_series_renamed_and_shuffled(tmp_path):
    import random
    import shutil

    folder = shared_file(TS + "example_ct_dicom")
    files = sorted(folder.iterdir())
    order = list(range(len(files)))
    random.Random(7).shuffle(order)
    for new_index, i in enumerate(order):
        shutil.copy(files[i], tmp_path / f"img_{new_index:02d}")  # names say nothing about order
    (orig,) = read_image(folder)
    (copy,) = read_image(tmp_path)
    np.testing.assert_array_equal(copy.data, orig.data)
    np.testing.assert_allclose(copy.affine, orig.affine)
    z = [float(__import__("pydicom").dcmread(f, stop_before_pixels=True).ImagePositionPatient[2])
         for f in copy.meta["dicom_files"]]
    assert z == sorted(z)  # ascending along the slice normal (+z here)
