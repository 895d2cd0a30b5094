"""Files that record no modality (NRRD/MHA/NIfTI, PNG) get one inferred from their data, marked as
inferred; "OT" stays when the data does not make it clear. Presets follow the inferred modality."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.modality import infer_modality, modality_from_dicom_tags
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file


def _ct_like(shape=(12, 64, 80), dtype=np.int16) -> np.ndarray:
    rng = np.random.default_rng(0)
    vol = np.full(shape, -1000, dtype=np.float32) + rng.normal(0, 10, shape)  # air around the body
    zz, yy, xx = np.indices(shape)
    body = (yy - 32) ** 2 / 28**2 + (xx - 40) ** 2 / 36**2 <= 1
    vol[body] = rng.normal(40, 15, int(body.sum()))  # soft tissue
    vol[body & ((yy - 45) ** 2 + (xx - 40) ** 2 < 25)] = 700  # a vertebra
    return vol.astype(dtype)


def _mr_like(shape=(12, 64, 80)) -> np.ndarray:
    rng = np.random.default_rng(1)
    zz, yy, xx = np.indices(shape)
    head = (yy - 32) ** 2 / 28**2 + (xx - 40) ** 2 / 34**2 <= 1
    vol = np.abs(rng.normal(0, 4, shape))  # Rician background noise near 0
    vol[head] = rng.normal(600, 80, int(head.sum()))
    return np.clip(vol, 0, None).astype(np.int16)


def _write_sitk(path, arr) -> None:
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.8, 0.8, 3.0))
    sitk.WriteImage(img, str(path))


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_nrrd_and_mha_ct_and_mr_are_inferred_and_marked(tmp_path, suffix):
    _write_sitk(tmp_path / f"a{suffix}", _ct_like())
    _write_sitk(tmp_path / f"b{suffix}", _mr_like())
    ct, mr = read_image(tmp_path / f"a{suffix}")[0], read_image(tmp_path / f"b{suffix}")[0]
    assert ct.modality == "CT" and ct.meta["modality_inferred"] is True
    assert "Hounsfield" in ct.meta["modality_reason"]
    assert mr.modality == "MR" and mr.meta["modality_inferred"] is True
    # the presets follow: soft-tissue window for CT, image percentiles for MR
    ct_kw, mr_kw = volume_to_layer_data(ct)[1], volume_to_layer_data(mr)[1]
    assert ct_kw["metadata"]["medprompt"]["window_preset"] == "soft_tissue"
    assert ct_kw["contrast_limits"] == [-160.0, 240.0]
    assert mr_kw["metadata"]["medprompt"]["window_preset"] == "auto"
    assert ct_kw["metadata"]["medprompt"]["meta"]["modality_inferred"] is True  # the UI can offer a change


def test_unclear_data_stays_ot(tmp_path):
    labels = np.zeros((6, 40, 50), np.uint16)
    labels[2:4, 10:20, 10:30] = 3
    _write_sitk(tmp_path / "labels.nrrd", labels)
    vol = read_image(tmp_path / "labels.nrrd")[0]
    assert vol.modality == "OT" and vol.meta["modality_inferred"] is True
    assert "label map" in vol.meta["modality_reason"]
    # normalised floats in [0, 1]: not raw scanner units, not HU -> unknown
    assert infer_modality(np.random.default_rng(0).random((8, 32, 32)).astype(np.float32))[0] == "OT"
    # a PET-named volume is never guessed to be MR
    assert infer_modality(_mr_like(), name="patient_pet_suv")[0] == "OT"
    # a CT-like range without air (a crop inside the body) is not called CT
    assert infer_modality(_ct_like()[:, 20:40, 30:50])[0] != "CT"


def test_float_ct_resampled_is_still_ct():
    vol = _ct_like(dtype=np.float32) + np.float32(0.25)
    assert infer_modality(vol)[0] == "CT"


def test_grey_png_is_an_x_ray_small_or_colour_is_not(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:300, :280]
    cxr = (120 + 80 * np.sin(xx / 40.0) * np.cos(yy / 50.0) + rng.normal(0, 10, yy.shape)).clip(0, 255)
    Image.fromarray(cxr.astype(np.uint8)).save(tmp_path / "film.png")
    Image.fromarray(cxr[:64, :64].astype(np.uint8)).save(tmp_path / "icon.png")
    rgb = np.stack([cxr, cxr[::-1], cxr[:, ::-1]], -1).astype(np.uint8)
    Image.fromarray(rgb).save(tmp_path / "photo.png")
    film = read_image(tmp_path / "film.png")[0]
    assert film.modality == "DX" and film.meta["modality_inferred"] is True
    assert volume_to_layer_data(film)[1]["metadata"]["medprompt"]["window_preset"] == "auto"
    assert read_image(tmp_path / "icon.png")[0].modality == "OT"
    assert read_image(tmp_path / "photo.png")[0].modality == "OT"


def test_nifti_without_hu_is_no_longer_called_other(tmp_path):
    import nibabel as nib

    nib.save(nib.Nifti1Image(_mr_like().T.copy(), np.diag([0.8, 0.8, 3.0, 1.0])), str(tmp_path / "t1.nii.gz"))
    nib.save(nib.Nifti1Image(_ct_like().T.copy(), np.diag([0.8, 0.8, 3.0, 1.0])), str(tmp_path / "ct.nii.gz"))
    assert read_image(tmp_path / "t1.nii.gz")[0].modality == "MR"
    assert read_image(tmp_path / "ct.nii.gz")[0].modality == "CT"


def test_dicom_tags_tell_the_modality_when_the_modality_tag_does_not():
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert modality_from_dicom_tags(ds)[0] == "MR"
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage (not CR)
    assert modality_from_dicom_tags(ds)[0] == "DX"
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"  # secondary capture: says nothing
    ds.EchoTime = "12"
    assert modality_from_dicom_tags(ds) == ("MR", "MR acquisition tag EchoTime")
    ds = Dataset()
    ds.RescaleType = "HU"
    assert modality_from_dicom_tags(ds)[0] == "CT"
    assert modality_from_dicom_tags(Dataset()) is None


def test_a_dicom_series_without_modality_is_inferred_from_its_tags(tmp_path):
    import pydicom

    from napari_medprompt.io.dicom_write import write_dicom_series
    from napari_medprompt.io.volume import Volume

    files = write_dicom_series(Volume(_mr_like((4, 32, 40)), (3.0, 0.8, 0.8), modality="MR"), tmp_path / "dcm")
    for f in sorted((tmp_path / "dcm").iterdir()):
        ds = pydicom.dcmread(f)
        ds.Modality = "OT"
        ds.save_as(f)
    vol = read_image(tmp_path / "dcm")[0]
    assert vol.modality == "MR" and vol.meta["modality_inferred"] is True, files


# ----------------------------------------------------------------------------------- real data
@pytest.mark.parametrize(
    "rel, expected",
    [
        ("pyradiomics/brain1_image.nrrd", "MR"),
        ("pyradiomics/brain2_image.nrrd", "MR"),
        ("pyradiomics/brain1_label.nrrd", "OT"),
        ("totalsegmentator/example_mr_sm.nii.gz", "MR"),
        ("totalsegmentator/example_ct.nii.gz", "CT"),
        ("totalsegmentator/example_seg_fast_force_split.nii.gz", "OT"),
        ("niivue_images/MR_Gd.nii.gz", "MR"),
        ("shenzhen_cxr_lungmasks/images/CHNCXR_0001_0.png", "DX"),
        ("shenzhen_cxr_lungmasks/masks/CHNCXR_0001_0_mask.png", "OT"),
        ("cxr_torchxrayvision/00000001_000.png", "DX"),
    ],
)
def test_real_files_get_the_right_modality(rel, expected):
    vol = read_image(shared_file(rel))[0]
    assert vol.modality == expected, vol.meta.get("modality_reason")
    assert vol.meta["modality_inferred"] is True


def test_real_dicom_keeps_its_recorded_modality():
    vol = read_image(shared_file("totalsegmentator/example_ct_dicom"))[0]
    assert vol.modality == "CT" and "modality_inferred" not in vol.meta
