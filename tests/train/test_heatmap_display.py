"""A heat map overlays the image voxel for voxel when the image is shown flipped (radiological display)."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.volume import Volume
from napari_medprompt.train.explain import heatmap_layer_data


def test_heatmap_takes_the_image_layers_display_affine():
    from napari import layers
    vol = Volume(np.zeros((6, 20, 24), np.int16), (3.0, 0.8, 0.7), np.diag([0.7, 0.8, 3.0, 1.0]), modality="CT")
    data, img_kw, _ = volume_to_layer_data(vol)  # stored RAS: shown with all three axes flipped
    heat = np.zeros((20, 24), np.float32)
    heat[3, 5] = 1.0
    hdata, kw, _ = heatmap_layer_data(heat, vol.data.shape, scale=img_kw["scale"], affine=img_kw["affine"],
                                      slice_index=2)
    image = layers.Image(data, scale=img_kw["scale"], affine=img_kw["affine"])
    overlay = layers.Image(hdata, **{k: v for k, v in kw.items() if k != "colormap"})
    np.testing.assert_allclose(overlay.data_to_world((2, 3, 5)), image.data_to_world((2, 3, 5)))
    assert not np.allclose(image.data_to_world((2, 3, 5)), np.multiply((2, 3, 5), img_kw["scale"]))  # flipped
    with pytest.raises(ValueError, match="affine"):
        heatmap_layer_data(heat, vol.data.shape, affine=np.eye(3), slice_index=2)
