"""No patient-identifying DICOM field reaches Volume.meta, layer metadata, warnings, logs, the saved
label map or its sidecar (only an explicit DICOM SEG export carries the patient module)."""

from __future__ import annotations

import gzip
import json
import logging
import warnings

import numpy as np
import pydicom
import pytest

from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.napari_hooks import get_reader, write_labels
from napari_medprompt.io.read import read_image
from tests.io._factory import ct_volume

PHI = {
    "PatientName": "Zyxwort^Amalthea",
    "PatientID": "MRN-7731-QX",
    "PatientBirthDate": "19470921",
    "AccessionNumber": "ACC99017Q",
    "InstitutionName": "Saint Quillon Infirmary",
    "ReferringPhysicianName": "Vantablack^Orrin",
    "OtherPatientIDs": "ALT-44187-QX",
    "PatientAddress": "17 Marrowgate Lane",
    "InstitutionAddress": "3 Quillon Square",
    "StationName": "QXSTATION07",
}
NEEDLES = [v.split("^")[0] for v in PHI.values()] + ["1947-09-21", "19470921"]


def _with_phi(path, **extra):
    ds = pydicom.dcmread(path)
    for k, v in {**PHI, **extra}.items():
        setattr(ds, k, v)
    ds.save_as(path)


def _no_needle(text: str, where: str) -> None:
    found = [n for n in NEEDLES if n.lower() in text.lower()]
    assert not found, f"patient-identifying value(s) {found} found in {where}"


@pytest.fixture
def phi_files(tmp_path):
    series = write_dicom_series(ct_volume(shape=(5, 16, 16)), tmp_path / "series")
    for p in series:
        _with_phi(p)
    (src,) = write_dicom_series(ct_volume(shape=(1, 24, 20), seed=3), tmp_path / "cr")
    ds = pydicom.dcmread(src)
    ds.Modality = "CR"
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.save_as(src)
    _with_phi(src)
    return tmp_path / "series", series, src


def test_reading_copies_no_patient_fields(phi_files, tmp_path, caplog):
    folder, series, radiograph = phi_files
    caplog.set_level(logging.DEBUG)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        vols = read_image(folder) + read_image(series[2]) + read_image(radiograph)
        layers = [*get_reader(str(folder))(str(folder)), *get_reader(str(radiograph))(str(radiograph))]
    assert [v.data.shape for v in vols] == [(5, 16, 16), (5, 16, 16), (24, 20)]
    for v in vols:
        _no_needle(json.dumps(v.meta, default=str), f"Volume.meta of {v.name}")
        _no_needle(" ".join([v.name, *v.warnings]), "Volume name/warnings")
    for data, kwargs, kind in layers:
        _no_needle(json.dumps(kwargs, default=str), "layer kwargs (metadata, name)")
    _no_needle(" ".join(str(w.message) for w in caught), "warnings")
    _no_needle(caplog.text, "log records")

    # A label map saved from the layer (the napari writer) and its sidecar carry none either.
    data, kwargs, _ = layers[0]
    labels = (data > 0).astype(np.uint8)
    written = write_labels(str(tmp_path / "out" / "seg.nii.gz"), labels,
                           {"name": kwargs["name"], "metadata": kwargs["metadata"], "scale": kwargs["scale"]})
    nifti, sidecar = (tmp_path / "out" / "seg.nii.gz"), (tmp_path / "out" / "seg.json")
    assert written == [str(nifti), str(sidecar)]
    _no_needle(sidecar.read_text(), "the JSON sidecar")
    _no_needle(gzip.decompress(nifti.read_bytes()).decode("latin-1"), "the NIfTI label map")
    _no_needle(caplog.text, "log records")


def test_a_broken_file_error_names_the_file_not_the_patient(phi_files):
    _, series, _ = phi_files
    raw = series[0].read_bytes()
    series[0].write_bytes(raw[: len(raw) - 300])  # pixel data cut short
    with pytest.raises(ValueError) as ei:
        read_image(series[0])
    assert str(series[0]) in str(ei.value) or series[0].name in str(ei.value)
    _no_needle(str(ei.value), "the error message")


def test_meta_is_whitelisted():
    """Every key of a DICOM Volume.meta comes from the whitelist (or is the reader's own)."""
    from napari_medprompt.io._dicom_common import SAFE_FIELDS

    banned = {"PatientName", "PatientID", "PatientBirthDate", "AccessionNumber", "InstitutionName",
              "ReferringPhysicianName", "OtherPatientIDs", "PatientAddress", "StationName", "StudyID"}
    assert not banned & set(SAFE_FIELDS)
    from pydicom.data import get_testdata_file

    path = get_testdata_file("CT_small.dcm")
    if path is None:
        pytest.skip("pydicom test data not available")
    (vol,) = read_image(path)
    own = {"transfer_syntax", "photometric", "dicom_files", "n_slices", "spacing_source", "n_frames"}
    assert set(vol.meta) <= set(SAFE_FIELDS.values()) | own, set(vol.meta)
    assert "CompressedSamples^CT1" not in json.dumps(vol.meta, default=str)  # its PatientName
    assert volume_to_layer_data(vol)[1]["name"] == vol.name
