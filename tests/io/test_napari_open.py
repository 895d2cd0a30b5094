"""Through napari's own open path (ViewerModel, no Qt): files this plugin does not recognise are
refused so other readers can try; a recognised but broken file raises an error that names the file
and the problem, adds no layer, and the viewer opens the next file normally."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io.napari_hooks import get_reader

from napari import components as napari_components
PLUGIN = "napari-medprompt"


@pytest.fixture(scope="module")
def viewer_model():
    from napari.plugins import _initialize_plugins, _npe2

    _initialize_plugins()
    if PLUGIN not in [m.name for m in _npe2.pm.iter_manifests()]:  # pragma: no cover
        pytest.skip("napari-medprompt is not installed (pip install -e .)")
    return napari_components.ViewerModel


def _nifti(path, shape=(8, 8, 4)):
    nib.save(nib.Nifti1Image(np.arange(np.prod(shape), dtype=np.int16).reshape(shape),
                             np.diag([0.5, 0.5, 2.0, 1.0])), str(path))
    return path


def test_unrecognised_paths_get_no_reader(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image\n")
    texts = tmp_path / "reports"
    texts.mkdir()
    for i in range(3):
        (texts / f"report_{i}.txt").write_text(f"report {i}\n")
    (texts / "table.csv").write_text("a,b\n1,2\n")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    for p in (notes, texts, tmp_path / "table.csv", tmp_path / "missing.nii.gz"):
        assert get_reader(str(p)) is None, p
    assert get_reader([str(notes), str(_nifti(tmp_path / "ok.nii.gz"))]) is None  # all or nothing


@pytest.mark.parametrize("breakage", ["truncated", "not_gzip", "4d"])
def test_broken_file_through_napari_names_the_file_and_viewer_carries_on(tmp_path, viewer_model, breakage):
    bad = tmp_path / "patient_scan.nii.gz"
    if breakage == "truncated":
        raw = _nifti(tmp_path / "src.nii.gz", (40, 40, 20)).read_bytes()
        bad.write_bytes(raw[: len(raw) // 2])
        problem = "truncated"
    elif breakage == "not_gzip":
        bad.write_bytes(b"this is not a gzip file at all" * 10)
        problem = "gzip"
    else:
        _nifti(bad, (8, 8, 4, 3))
        problem = "4d"
    before = bad.read_bytes()
    viewer = viewer_model()
    with pytest.raises(Exception) as ei:  # what napari's GUI shows as an error notification
        viewer.open(str(bad), plugin=PLUGIN)
    err = ei.value
    msg = str(getattr(err, "original_error", None) or err)
    assert str(bad) in msg and problem in msg.lower(), msg
    assert len(viewer.layers) == 0  # nothing half-opened
    assert bad.read_bytes() == before  # the file is not touched
    good = _nifti(tmp_path / "good.nii.gz")
    viewer.open(str(good), plugin=PLUGIN)
    assert [layer.name for layer in viewer.layers] == ["good"]
    assert tuple(viewer.layers[0].scale) == (2.0, 0.5, 0.5)


def test_napari_new_labels_layer_saves_with_the_image_geometry(tmp_path, viewer_model):
    """The layer napari's "new labels" button makes has no metadata, only the image's scale; the
    writer still saves it with the source affine (the one opened image of that shape/voxel size)
    and says so; with two candidate images it refuses to guess and warns."""
    aff = np.array([[-0.7, 0, 0, 100.0], [0, -0.8, 0, 50.0], [0, 0, 2.5, -30.0], [0, 0, 0, 1]])
    src = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 8), np.int16), aff), str(src))
    viewer = viewer_model()
    viewer.open(str(src), plugin=PLUGIN)
    viewer._new_labels()  # what the layer-list button calls
    labels = viewer.layers[-1]
    assert not labels.metadata.get("medprompt")
    labels.data[2:4, 3:6, 3:6] = 1
    with pytest.warns(UserWarning, match=r"carries no image geometry; saved with the geometry of 'ct'"):
        labels.save(str(tmp_path / "seg.nii.gz"), plugin=PLUGIN)
    saved = nib.load(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(saved.affine, nib.load(str(src)).affine)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj).T, labels.data)

    other = tmp_path / "ct_flipped.nii.gz"  # same shape and voxel size, other orientation
    nib.save(nib.Nifti1Image(np.zeros((20, 24, 8), np.int16), np.diag([0.7, 0.8, 2.5, 1.0])), str(other))
    viewer.open(str(other), plugin=PLUGIN)
    with pytest.warns(UserWarning, match="2 opened images have its shape and voxel size"):
        labels.save(str(tmp_path / "seg2.nii.gz"), plugin=PLUGIN)


def test_dicom_seg_writer_finds_the_series_of_a_plain_labels_layer(tmp_path, viewer_model):
    from napari_medprompt.io.dicom_seg import read_dicom_seg
    from napari_medprompt.io.dicom_write import write_dicom_series
    from napari_medprompt.io.volume import Volume

    vol = Volume(np.full((4, 12, 10), -1000, np.int16), (2.0, 0.8, 0.7),
                 np.diag([-0.7, -0.8, 2.0, 1.0]), modality="CT")
    write_dicom_series(vol, tmp_path / "series")
    viewer = viewer_model()
    viewer.open(str(tmp_path / "series"), plugin=PLUGIN)
    viewer._new_labels()
    labels = viewer.layers[-1]
    labels.data[1:3, 2:6, 2:6] = 1
    with pytest.warns(UserWarning, match="saved with the geometry of"):
        labels.save(str(tmp_path / "seg.dcm"), plugin=PLUGIN)
    back, _ = read_dicom_seg(tmp_path / "seg.dcm", viewer.layers[0].metadata["medprompt"]["dicom_files"])
    np.testing.assert_array_equal(back, labels.data)


def test_sample_data_opens_through_napari(viewer_model):
    viewer = viewer_model()
    viewer.open_sample(PLUGIN, "abdominal_ct")
    image, labels = viewer.layers
    assert image.data.dtype == np.int16 and image.data.min() < -900  # HU kept
    assert tuple(image.contrast_limits) == (-160.0, 240.0)
    assert type(labels).__name__ == "Labels" and labels.data.shape == image.data.shape
    assert tuple(labels.scale) == tuple(image.scale) == (2.5, 1.5, 1.5)
