"""Through napari's own open path (ViewerModel, no Qt): files this plugin does not recognise are
refused so other readers can try; a recognised but broken file raises an error that names the file
and the problem, adds no layer, and the viewer opens the next file normally."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io.napari_hooks import get_reader

napari_components = pytest.importorskip("napari.components")
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
