"""Every 3D volume is displayed radiologically whatever its storage order (napari's ViewerModel, no
Qt): the layer's display affine only flips axes, so data and file affine are untouched, and a voxel
to the patient's right-anterior-superior lands up and to the left on screen (smaller world
coordinates on every axis: rows run down, columns run right, axis 0 is shown top-down in coronal
and sagittal views)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io.layers import display_affine, volume_to_layer_data
from napari_medprompt.io.read import read_image
from napari_medprompt.io.volume import Volume, radiological_flips
from tests.io._orientation import SHAPE_ZYX, affine_of, write_nifti, write_nrrd

from napari import components as napari_components
PLUGIN = "napari-medprompt"
KINDS = ["RAS", "LPS", "LPI", "oblique", "coronal"]


@pytest.fixture(scope="module")
def viewer_model():
    from napari.plugins import _initialize_plugins, _npe2

    _initialize_plugins()
    if PLUGIN not in [m.name for m in _npe2.pm.iter_manifests()]:  # pragma: no cover
        pytest.skip("napari-medprompt is not installed (pip install -e .)")
    return napari_components.ViewerModel


def test_flips_follow_the_dominant_direction_of_each_axis():
    assert radiological_flips(affine_of("RAS")) == (True, True, True)
    assert radiological_flips(affine_of("LPS")) == (True, False, False)
    assert radiological_flips(affine_of("LPI")) == (False, False, False)
    assert radiological_flips(affine_of("coronal")) == (False, True, True)
    vol2d = Volume(np.zeros((5, 6)), (1.0, 1.0), np.diag([1.0, 1.0, 1.0, 1.0]))
    assert display_affine(vol2d) == np.eye(3).tolist()  # radiographs are shown as stored


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
@pytest.mark.parametrize("kind", KINDS)
def test_marker_right_anterior_superior_is_shown_up_left(tmp_path, viewer_model, kind, fmt):
    path, marker = (write_nifti(tmp_path / "m.nii.gz", kind) if fmt == "nifti"
                    else write_nrrd(tmp_path / "m.nrrd", kind))
    viewer = viewer_model()
    viewer.open(str(path), plugin=PLUGIN)
    (image,) = viewer.layers
    assert image.data.shape == SHAPE_ZYX and image.data[marker] == 1500  # data as stored
    centre = np.asarray(image.data_to_world((np.asarray(SHAPE_ZYX) - 1) / 2.0))
    at = np.asarray(image.data_to_world(marker))
    # axis 0 up (superior in coronal/sagittal views), axis 1 up (anterior), axis 2 left (patient's right)
    assert (at < centre).all(), (kind, at, centre)
    # the world box is the same as without the flip (scale kept, extent unchanged)
    np.testing.assert_allclose(sorted(np.asarray(image.extent.world)[:, 0]),
                               sorted([0.0, (SHAPE_ZYX[0] - 1) * image.scale[0]]))
    # world -> data gives the marker's voxel back (what a click does)
    np.testing.assert_allclose(image.world_to_data(at), marker, atol=1e-6)


def test_saved_labels_still_overlay_the_source(tmp_path, viewer_model):
    """A label drawn on the flipped display is saved in the file's own voxel order and affine."""
    path, marker = write_nifti(tmp_path / "ras.nii.gz", "RAS")
    viewer = viewer_model()
    viewer.open(str(path), plugin=PLUGIN)
    image = viewer.layers[0]
    viewer.layers.selection.active = image
    viewer._new_labels()  # napari's "new labels" button copies the image's scale and affine
    labels = viewer.layers[-1]
    np.testing.assert_allclose(labels.affine.affine_matrix, image.affine.affine_matrix)
    z, y, x = marker
    labels.data[z, y, x] = 3
    with pytest.warns(UserWarning, match="saved with the geometry of"):
        labels.save(str(tmp_path / "seg.nii.gz"), plugin=PLUGIN)
    saved = nib.load(str(tmp_path / "seg.nii.gz"))
    np.testing.assert_allclose(saved.affine, nib.load(str(path)).affine)
    arr = np.asanyarray(saved.dataobj)
    assert arr[x, y, z] == 3 and arr.sum() == 3  # the marker voxel of the source, nothing else


def test_real_ct_spine_down_liver_left(shared_data):
    """The TotalSegmentator CT (stored RAS): the vertebrae are shown below the body's centre and the
    liver on the viewer's left, as in a radiological axial view."""
    import json

    ct = read_image(shared_data / "totalsegmentator/example_ct.nii.gz")[0]
    seg = read_image(shared_data / "totalsegmentator/example_seg_fast_force_split.nii.gz")[0]
    names = json.loads((shared_data / "totalsegmentator/label_names_total_and_total_mr.json").read_text())["total"]
    ids = {v: int(k) for k, v in names.items()}
    _, kw, _ = volume_to_layer_data(ct)
    aff = np.asarray(kw["affine"])
    scale = np.asarray(kw["scale"])

    def world_centroid(mask):
        idx = np.argwhere(mask).mean(axis=0)
        return (aff @ np.r_[idx * scale, 1.0])[:3]

    lab = np.asarray(seg.data)
    vertebrae = np.isin(lab, [i for n, i in ids.items() if n.startswith("vertebrae_")])
    body = np.asarray(ct.data) > -300
    assert vertebrae.any() and (lab == ids["liver"]).any()
    spine, liver, middle = world_centroid(vertebrae), world_centroid(lab == ids["liver"]), world_centroid(body)
    assert spine[1] > middle[1] + 20  # rows run down: the spine is at the bottom of the axial view
    assert liver[2] < middle[2] - 20  # the liver (patient's right) on the viewer's left


def test_world_grid_labels_layer_is_saved_in_the_image_voxel_order(tmp_path, viewer_model):
    """A labels layer on napari's world grid (what "new labels" makes from the world extent when a
    non-image layer is active, or another tool adds with the image's scale only) is the flipped
    image's grid mirrored: the writer flips it back (and says so), so the saved file still overlays
    the source; a layer moved off the grid is refused."""
    path, marker = write_nifti(tmp_path / "ras.nii.gz", "RAS")
    viewer = viewer_model()
    viewer.open(str(path), plugin=PLUGIN)
    image = viewer.layers[0]
    labels = viewer.add_labels(np.zeros(image.data.shape, np.uint8), scale=image.scale, name="drawn")
    assert labels.data.shape == image.data.shape
    world = image.data_to_world(marker)  # draw where the marker is shown
    idx = tuple(int(round(v)) for v in labels.world_to_data(world))
    assert idx != tuple(marker)  # the world grid runs the other way
    labels.data[idx] = 2
    viewer.layers.selection.active = labels
    with pytest.warns(UserWarning, match="saved in the image's own voxel order"):
        labels.save(str(tmp_path / "seg.nii.gz"), plugin=PLUGIN)
    arr = np.asanyarray(nib.load(str(tmp_path / "seg.nii.gz")).dataobj)
    z, y, x = marker
    assert arr[x, y, z] == 2 and arr.sum() == 2

    labels.translate = (0.0, 3.3, 0.0)  # moved by the user: not the image's grid any more
    from napari_medprompt.io.napari_hooks import LabelSaveError

    with pytest.raises(LabelSaveError, match="not drawn on the voxel grid"):
        labels.save(str(tmp_path / "moved.nii.gz"), plugin=PLUGIN)
    assert not (tmp_path / "moved.nii.gz").exists()
