"""DICOM SEG export referencing the source series, read back with the same segments."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from napari_medprompt.io.dicom_seg import export_dicom_seg, read_dicom_seg
from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.errors import LabelWriteError
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file
from tests.io._factory import ct_volume


def test_seg_round_trip_same_segments_and_references(tmp_path):
    write_dicom_series(ct_volume(shape=(8, 24, 20)), tmp_path / "series")
    (vol,) = read_image(tmp_path / "series")
    files = vol.meta["dicom_files"]
    labels = np.zeros(vol.data.shape, np.uint8)
    labels[1:4, 3:12, 4:10] = 5
    labels[4:8, 14:22, 10:18] = 12
    labels[6, 0:2, 0:2] = 2
    info = {5: {"name": "liver", "color": [220, 120, 40]}, 12: {"name": "spleen"}}
    out = export_dicom_seg(tmp_path / "seg.dcm", labels, files, info)

    back, info2 = read_dicom_seg(out, files)
    np.testing.assert_array_equal(back, labels)
    assert info2[5]["name"] == "liver" and info2[12]["name"] == "spleen" and info2[2]["name"] == "label 2"
    assert np.abs(np.subtract(info2[5]["color"], [220, 120, 40])).max() <= 2  # CIELab round trip

    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.NumberOfFrames >= 1
    src = pydicom.dcmread(files[0])
    assert ds.FrameOfReferenceUID == src.FrameOfReferenceUID
    assert ds.StudyInstanceUID == src.StudyInstanceUID
    ref = {item.ReferencedSOPInstanceUID for s in ds.ReferencedSeriesSequence for item in s.ReferencedInstanceSequence}
    assert ref == {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert ds.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID

    # The SEG file is not taken for an image when its folder is opened.
    (again,) = read_image(tmp_path)
    np.testing.assert_array_equal(again.data, vol.data)
    assert any("Segmentation (SEG)" in w for w in again.warnings)


def test_seg_export_refuses_shape_mismatch_and_empty(tmp_path):
    write_dicom_series(ct_volume(shape=(4, 10, 10)), tmp_path / "s")
    (vol,) = read_image(tmp_path / "s")
    with pytest.raises(LabelWriteError, match="does not match the source series"):
        export_dicom_seg(tmp_path / "seg.dcm", np.ones((3, 10, 10), np.uint8), vol.meta["dicom_files"])
    with pytest.raises(LabelWriteError, match="empty"):
        export_dicom_seg(tmp_path / "seg.dcm", np.zeros((4, 10, 10), np.uint8), vol.meta["dicom_files"])
    assert not (tmp_path / "seg.dcm").exists()


def test_seg_export_of_series_without_uids_says_why(tmp_path):
    """The shared DICOM series was anonymised without UIDs: SEG cannot reference it."""
    (vol,) = read_image(shared_file("totalsegmentator/example_ct_dicom"))
    labels = np.zeros(vol.data.shape, np.uint8)
    labels[5, 100:120, 100:120] = 1
    with pytest.raises(LabelWriteError, match="no .*SOPInstanceUID.*NIfTI instead"):
        export_dicom_seg(tmp_path / "seg.dcm", labels, vol.meta["dicom_files"])


def test_seg_writer_hook_uses_the_image_metadata(tmp_path):
    from napari_medprompt.io.layers import volume_to_layer_data
    from napari_medprompt.io.napari_hooks import LabelSaveError, write_labels_dicom_seg

    write_dicom_series(ct_volume(shape=(6, 16, 16)), tmp_path / "series")
    (vol,) = read_image(tmp_path / "series")
    _, kw, _ = volume_to_layer_data(vol)
    labels = np.zeros(vol.data.shape, np.uint8)
    labels[2:4, 4:9, 4:9] = 1
    attrs = {"name": "tumour", "metadata": {"medprompt": kw["metadata"]["medprompt"], "label_names": {1: "lesion"}}}
    (out,) = write_labels_dicom_seg(str(tmp_path / "seg.dcm"), labels, attrs)
    back, info = read_dicom_seg(out, vol.meta["dicom_files"])
    np.testing.assert_array_equal(back, labels)
    assert info[1]["name"] == "lesion"
    with pytest.raises(LabelSaveError, match="needs a label layer drawn on an image read from a DICOM"):
        write_labels_dicom_seg(str(tmp_path / "x.dcm"), labels, {"metadata": {}})


def test_seg_export_of_a_multiframe_image_says_it_is_not_supported(tmp_path):
    import highdicom as hd

    paths = write_dicom_series(ct_volume(shape=(4, 12, 10)), tmp_path / "series")
    mf = hd.legacy.LegacyConvertedEnhancedCTImage(
        legacy_datasets=[pydicom.dcmread(p) for p in paths], series_instance_uid=hd.UID(),
        series_number=9, sop_instance_uid=hd.UID(), instance_number=1)
    mf.save_as(tmp_path / "enhanced.dcm")
    (vol,) = read_image(tmp_path / "enhanced.dcm")
    labels = np.zeros(vol.data.shape, np.uint8)
    labels[1, 2:5, 2:5] = 1
    with pytest.raises(LabelWriteError, match="multi-frame .* not supported.*NIfTI"):
        export_dicom_seg(tmp_path / "seg.dcm", labels, vol.meta["dicom_files"])
    assert not (tmp_path / "seg.dcm").exists()
