"""A saved label map reopens in napari as a Labels layer over its image: same voxels, same scale
and geometry, its names and colours back, and saving it again writes the same file geometry."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io.labels_io import looks_like_label_map
from napari_medprompt.io.napari_hooks import get_reader, write_labels
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file
from tests.io._factory import ct_volume

from napari import layers


def _open(path):
    return get_reader(str(path))(str(path))


def test_saved_label_map_reopens_as_labels_over_its_image(tmp_path):
    vol = ct_volume()
    img_path = tmp_path / "ct.nii.gz"
    nib.save(nib.Nifti1Image(vol.data.T, vol.affine), str(img_path))
    (image,) = _open(img_path)
    lab = np.zeros(vol.data.shape, np.uint8)
    lab[2:5, 4:12, 3:9] = 1
    lab[5:7, 10:20, 10:18] = 7
    attrs = {"name": "organs", "scale": image[1]["scale"],
             "metadata": {**image[1]["metadata"], "label_info": {1: {"name": "liver", "color": [200, 10, 10]}},
                          "label_names": {7: "spleen"}}}
    seg_path, _ = write_labels(str(tmp_path / "organs.nii.gz"), lab, attrs)

    (reopened,) = _open(seg_path)
    data, kw, kind = reopened
    assert kind == "labels"
    np.testing.assert_array_equal(data, lab)  # voxel for voxel
    assert kw["scale"] == image[1]["scale"]  # overlays the image layer
    assert kw["metadata"]["medprompt"]["affine"] == image[1]["metadata"]["medprompt"]["affine"]
    assert kw["metadata"]["label_names"] == {1: "liver", 7: "spleen"}
    layer = layers.Layer.create(data, kw, kind)
    assert isinstance(layer, layers.Labels)
    np.testing.assert_allclose(layer.colormap.map(np.array([1]))[0][:3], np.array([200, 10, 10]) / 255, atol=1e-6)

    # Saving the reopened layer again keeps geometry, voxels and names.
    again, _ = write_labels(str(tmp_path / "again.nii.gz"), layer.data,
                            {"name": layer.name, "scale": tuple(layer.scale), "metadata": layer.metadata})
    a, b = nib.load(seg_path), nib.load(again)
    np.testing.assert_allclose(b.affine, a.affine)
    np.testing.assert_array_equal(np.asanyarray(b.dataobj), np.asanyarray(a.dataobj))
    assert _open(again)[0][1]["metadata"]["label_names"] == {1: "liver", 7: "spleen"}


def test_images_are_not_taken_for_label_maps(tmp_path):
    vol = ct_volume()  # int16 with negative HU
    vol.name = "ct_mask_study"
    assert not looks_like_label_map(vol)
    vol.name = "ct"
    vol.data = np.abs(vol.data)
    assert not looks_like_label_map(vol)
    vol.name = "liver_seg"
    assert looks_like_label_map(vol)
    vol.data = vol.data.astype(np.float32)
    assert not looks_like_label_map(vol)
    from PIL import Image

    mask = np.zeros((20, 30), np.uint8)
    mask[5:15, 5:25] = 255
    mask[5, 5:25] = 128  # anti-aliased edge, like the Shenzhen lung masks
    Image.fromarray(mask).save(tmp_path / "lung_mask.png")
    (png,) = _open(tmp_path / "lung_mask.png")
    assert png[2] == "image"  # a greyscale picture, thresholded by the user if wanted


@pytest.mark.parametrize("image,label", [
    ("totalsegmentator/example_ct_sm.nii.gz", "totalsegmentator/example_seg.nii.gz"),
    ("pyradiomics/breast1_image.nrrd", "pyradiomics/breast1_label.nrrd"),
])
def test_real_label_maps_open_as_labels(image, label):
    (img,) = _open(shared_file(image))
    (lab,) = _open(shared_file(label))
    assert img[2] == "image" and lab[2] == "labels"
    assert lab[0].shape == img[0].shape and lab[1]["scale"] == img[1]["scale"]
    assert lab[1]["metadata"]["medprompt"]["affine"] == img[1]["metadata"]["medprompt"]["affine"]
    (vol,) = read_image(shared_file(label))
    np.testing.assert_array_equal(lab[0], vol.data)
    assert isinstance(layers.Layer.create(*lab), layers.Labels)


def test_colours_as_napari_floats_or_0_255_integers(tmp_path):
    """napari gives colours as 0..1 floats; the sidecar and DICOM SEG store 0..255 integers."""
    from napari_medprompt.io.labels_io import load_label_map, save_label_map

    vol = ct_volume()
    lab = np.zeros(vol.data.shape, np.uint8)
    lab[1, 1, 1:4] = [1, 2, 3]
    info = {1: {"color": [1, 0.6, 0]}, 2: {"color": np.array([1.0, 0.0, 0.0, 1.0])}, 3: {"color": [0, 0, 200]}}
    out = save_label_map(tmp_path / "c.nii.gz", lab, vol, info)
    got = {i: d["color"] for i, d in load_label_map(out)[2].items()}
    assert got == {1: [255, 153, 0], 2: [255, 0, 0], 3: [0, 0, 200]}
