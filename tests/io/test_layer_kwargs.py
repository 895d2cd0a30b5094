"""The layer tuples the reader hook and sample data return are accepted by napari's layer classes
(no viewer, no Qt), with physical scale and the HU values untouched."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from napari_medprompt._sample_data import make_sample_ct
from napari_medprompt.io.dicom_2d import read_dicom_2d
from napari_medprompt.io.dicom_write import write_dicom_series
from napari_medprompt.io.image2d import read_image2d
from napari_medprompt.io.layers import volume_to_layer_data
from tests.io._factory import ct_volume

from napari import layers


def _make(layer_tuple):
    data, kwargs, kind = layer_tuple
    return layers.Layer.create(data, kwargs, kind)


def test_sample_data_builds_napari_layers():
    image, labels = (_make(t) for t in make_sample_ct())
    assert isinstance(image, layers.Image) and isinstance(labels, layers.Labels)
    assert tuple(image.scale) == (2.5, 1.5, 1.5) == tuple(labels.scale)
    assert tuple(image.contrast_limits) == (-160.0, 240.0)
    assert image.data.dtype == np.int16 and image.data.min() < -900  # HU kept
    assert image.metadata["medprompt"]["modality"] == "CT"


def test_monochrome1_radiograph_keeps_values_and_inverts_display(tmp_path):
    (src,) = write_dicom_series(ct_volume(shape=(1, 32, 40)), tmp_path / "s")
    ds = pydicom.dcmread(src)
    ds.Modality = "DX"
    ds.PhotometricInterpretation = "MONOCHROME1"
    del ds.ImagePositionPatient, ds.ImageOrientationPatient
    ds.ImagerPixelSpacing = ds.PixelSpacing
    del ds.PixelSpacing
    ds.save_as(tmp_path / "dx.dcm")
    vol = read_dicom_2d(tmp_path / "dx.dcm")
    assert vol.data.shape == (32, 40) and vol.modality == "DX"
    np.testing.assert_array_equal(vol.data, ds.pixel_array.astype(np.int32) - 1024)  # not inverted
    assert vol.meta["photometric"] == "MONOCHROME1" and "ImagerPixelSpacing" in vol.meta["spacing_source"]
    layer = _make(volume_to_layer_data(vol))
    assert layer.colormap.name == "gray_r"
    lo, hi = layer.contrast_limits
    assert vol.data.min() <= lo < hi <= vol.data.max()


def test_png_rgb_and_grey(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    grey = rng.integers(0, 255, (30, 40), dtype=np.uint8)
    Image.fromarray(np.stack([grey] * 3, -1)).save(tmp_path / "grey_as_rgb.png")
    colour = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
    Image.fromarray(colour).save(tmp_path / "colour.png")
    g = read_image2d(tmp_path / "grey_as_rgb.png")
    assert g.data.shape == (30, 40) and not g.is_rgb
    np.testing.assert_array_equal(g.data, grey)
    c = read_image2d(tmp_path / "colour.png")
    assert c.is_rgb and c.data.shape == (30, 40, 3) and c.spacing == (1.0, 1.0)
    layer = _make(volume_to_layer_data(c))
    assert layer.rgb


def test_tiff_16bit_and_stack(tmp_path):
    import tifffile

    rng = np.random.default_rng(1)
    img16 = rng.integers(0, 4096, (20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "a.tif", img16)
    stack = rng.integers(0, 4096, (5, 20, 24), dtype=np.uint16)
    tifffile.imwrite(tmp_path / "b.tiff", stack)
    a = read_image2d(tmp_path / "a.tif")
    np.testing.assert_array_equal(a.data, img16)
    b = read_image2d(tmp_path / "b.tiff")
    assert b.data.shape == (5, 20, 24) and b.is_3d
    _make(volume_to_layer_data(b))


def test_jpeg_grey_and_colour(tmp_path):
    from PIL import Image

    yy, xx = np.mgrid[0:48, 0:64]
    grey = (yy * 4 + xx).astype(np.uint8)
    Image.fromarray(grey).save(tmp_path / "xray.jpg", quality=95)
    g = read_image2d(tmp_path / "xray.jpg")
    assert g.data.shape == (48, 64) and not g.is_rgb and g.data.dtype == np.uint8
    assert np.abs(g.data.astype(int) - grey).max() <= 8  # lossy, but the same picture
    colour = np.stack([grey, grey[::-1], np.full_like(grey, 200)], -1)
    Image.fromarray(colour).save(tmp_path / "photo.jpeg", quality=95)
    c = read_image2d(tmp_path / "photo.jpeg")
    assert c.is_rgb and c.data.shape == (48, 64, 3)
    assert _make(volume_to_layer_data(c)).rgb
