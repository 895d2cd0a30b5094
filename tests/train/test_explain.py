"""Explain API: preprocessing that keeps intensities and proportions, maps back to the image's exact
pixel grid, napari layer data that lines up with the image layer, explanations of a trained model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medprompt.train.data import DataError
from napari_medprompt.train.explain import Explanation, explain, heatmap_layer_data
from napari_medprompt.train.preprocess import Geometry, Preprocess, image_to_input, images_to_tensor, masks_to_tensor, to_unit_rgb

torch.set_num_threads(2)
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def spec(size=64, **kw) -> Preprocess:
    return Preprocess(size, MEAN, STD, **kw)


def unit(x: torch.Tensor) -> np.ndarray:
    """Model input back to [0, 1] (channel 0)."""
    return (x[0] * STD[0] + MEAN[0]).numpy()


# --------------------------------------------------------------------------------- preprocessing
def test_spec_round_trips_through_json_and_reads_old_records():
    s = spec(intensity="window", window=(40, 400))
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d and Preprocess.from_dict(d) == s
    old = Preprocess.from_dict({"image_size": 224, "mean": [0.1, 0.2, 0.3], "std": [1, 1, 1]})
    assert old.intensity == "auto" and not old.pad_to_square  # what checkpoints before this option did
    assert s.differences(spec(intensity="window", window=(50, 400))) == ["window: (40.0, 400.0) vs (50.0, 400.0)"]
    with pytest.raises(ValueError, match="unknown intensity mode 'hu'"):
        spec(intensity="hu")
    with pytest.raises(ValueError, match="needs window"):
        spec(intensity="window")
    with pytest.raises(ValueError, match="width must be positive"):
        spec(intensity="window", window=(40, 0))
    assert spec().with_window("soft_tissue").window == (40.0, 400.0)
    with pytest.raises(ValueError, match="unknown window 'softtissue'"):
        spec().with_window("softtissue")


def test_ct_window_keeps_hounsfield_units_meaningful():
    """Soft tissue at 40 HU gets the same input value whatever else is in the slice (a metal implant,
    air); robust percentiles would move it."""
    rng = np.random.default_rng(0)
    base = rng.normal(40, 5, (48, 48)).astype(np.float32)
    implant = base.copy()
    implant[:20, :20] = 3000.0
    air = base.copy()
    air[:, :24] = -1000.0
    ct = spec(intensity="window", window=(40, 400))
    a, b, c = (to_unit_rgb(im, spec=ct)[..., 0] for im in (base, implant, air))
    np.testing.assert_allclose(a[30:, 30:], b[30:, 30:], atol=1e-6)
    np.testing.assert_allclose(a[30:, 30:], c[30:, 30:], atol=1e-6)
    np.testing.assert_allclose(a, np.clip((base + 160) / 400, 0, 1), atol=1e-6)
    assert b[:20, :20].min() == 1.0 and c[:, :24].max() == 0.0
    auto = [to_unit_rgb(im)[..., 0][30:, 30:].mean() for im in (base, implant)]
    assert abs(auto[0] - auto[1]) > 0.2  # percentiles: the same tissue looks different


def test_mr_percentiles_and_8bit_as_is():
    rng = np.random.default_rng(1)
    mr = rng.gamma(2.0, 100.0, (40, 40)).astype(np.float32)
    pct = spec(intensity="percentiles", percentiles=(1, 99))
    np.testing.assert_allclose(to_unit_rgb(mr, spec=pct), to_unit_rgb(mr * 3.7 + 20, spec=pct), atol=1e-5)
    u8 = np.full((10, 10), 128, np.uint8)
    assert to_unit_rgb(u8, spec=spec())[0, 0, 0] == pytest.approx(128 / 255)
    assert Preprocess.for_modality(type("B", (), {"image_size": 64, "mean": MEAN, "std": STD})(), "MR").intensity == "percentiles"


def test_anisotropic_pixels_are_resampled_and_padded_not_stretched():
    """A coronal plane of 3 mm x 0.8 mm pixels: a 30 mm disk stays a disk in the model input."""
    sy, sx = 3.0, 0.8
    h, w = 40, 120  # 120 mm x 96 mm
    yy, xx = np.mgrid[0:h, 0:w]
    disk = ((yy + 0.5) * sy - 60) ** 2 + ((xx + 0.5) * sx - 40) ** 2 <= 15.0**2
    s = spec(64)
    x, geo = image_to_input(disk.astype(np.float32), s, spacing=(sy, sx))
    assert geo.content == (64, round(96 / 120 * 64)) and geo.offset == (0, (64 - 51) // 2)
    u = unit(x) > 0.5
    rows, cols = np.flatnonzero(u.any(1)), np.flatnonzero(u.any(0))
    assert abs((rows[-1] - rows[0]) - (cols[-1] - cols[0])) <= 1  # round, 16 px across at 64/120 px per mm
    assert abs((rows[-1] - rows[0] + 1) - 30 * 64 / 120) <= 1.5
    assert np.all(unit(x)[:, : geo.offset[1]] == 0)  # padding is black
    stretched = unit(images_to_tensor([disk.astype(np.float32)], spec(64, pad_to_square=False))[0]) > 0.5
    rows, cols = np.flatnonzero(stretched.any(1)), np.flatnonzero(stretched.any(0))
    assert (cols[-1] - cols[0]) - (rows[-1] - rows[0]) >= 3  # what stretching did: an ellipse
    m = masks_to_tensor([disk], [disk.astype(np.float32)], s, spacings=[(sy, sx)])[0, 0].numpy()
    np.testing.assert_array_equal(m > 0.5, u)  # masks share the image's geometry
    with pytest.raises(DataError, match="pixel spacing"):
        image_to_input(disk, s, spacing=(0, 1))


@pytest.mark.parametrize(
    "shape,spacing,size",
    [((40, 70), None, 64), ((90, 30), None, 64), ((37, 120), (3.0, 0.8), 64), ((20, 24), (1.0, 1.0), 96),
     ((300, 200), (0.7, 0.7), 64), ((64, 64), None, 64)],
)
def test_maps_on_the_model_input_come_back_to_the_exact_pixel(shape, spacing, size):
    """A marker placed off-centre on the original grid, carried to the model input the way images are
    and brought back, peaks on the same pixel (to the model input's resolution); padding never comes back; the point maps agree."""
    s = spec(size)
    h, w = shape
    r, c = int(h * 0.7), int(w * 0.2)
    yy, xx = np.mgrid[0:h, 0:w]
    sig = 0.06 * max(h, w)
    marker = np.exp(-((yy - r) ** 2 + (xx - c) ** 2) / (2 * sig**2)).astype(np.float32)
    x, geo = image_to_input(marker, s, spacing)
    on_input = unit(x)
    back = geo.to_original(on_input)
    assert back.shape == shape and back.dtype == np.float32
    # exact where the model input is finer than the image; within half an input pixel where coarser
    tol = 0.5 * max(h / geo.content[0], w / geo.content[1]) + 0.5
    br, bc = np.unravel_index(np.argmax(back), shape)
    assert abs(br - r) < tol and abs(bc - c) < tol, f"peak at {(br, bc)}, marker at {(r, c)}"
    assert np.corrcoef(back.ravel(), marker.ravel())[0, 1] > 0.97
    ir, ic = np.unravel_index(np.argmax(on_input), on_input.shape)
    pr, pc = geo.input_point(r, c)
    assert abs(ir - pr) <= 1 and abs(ic - pc) <= 1
    assert np.allclose(geo.original_point(*geo.input_point(r, c)), (r, c))
    only_padding = np.ones((size, size), np.float32)
    top, left = geo.offset
    ch, cw = geo.content
    only_padding[top : top + ch, left : left + cw] = 0
    assert geo.to_original(only_padding).max() == 0.0
    with pytest.raises(ValueError, match="not on the model input"):
        geo.to_original(np.zeros((size + 1, size)))


# ------------------------------------------------------------------------------- napari layer data
def test_heatmap_layer_lines_up_with_the_image_layer():
    from napari_medprompt.io.layers import volume_to_layer_data
    from napari_medprompt.io.volume import Volume

    vol = Volume(data=np.zeros((12, 30, 40), np.int16), spacing=(3.0, 0.8, 0.7), affine=np.eye(4), modality="CT", name="ct")
    _, img_kw, _ = volume_to_layer_data(vol)
    translate = (10.0, -5.0, 2.5)
    rng = np.random.default_rng(0)
    coronal = rng.random((12, 40)).astype(np.float32)  # (z, x): a coronal slice
    data, kw, kind = heatmap_layer_data(coronal, vol.data.shape, scale=img_kw["scale"], translate=translate,
                                        plane="coronal", slice_index=7)
    assert kind == "image" and data.shape == vol.data.shape and data.dtype == np.float32
    np.testing.assert_array_equal(data[:, 7, :], coronal)
    assert not data[:, :7].any() and not data[:, 8:].any()
    assert kw["scale"] == img_kw["scale"] == (3.0, 0.8, 0.7) and kw["translate"] == translate
    assert kw["blending"] == "additive" and kw["colormap"] == "inferno" and kw["contrast_limits"] == [0.0, 1.0]
    assert 0 < kw["opacity"] < 1 and kw["metadata"]["medprompt_explanation"]["slice_index"] == 7
    axial = rng.random((30, 40)).astype(np.float32)
    data, kw, _ = heatmap_layer_data(axial, vol.data.shape, scale=img_kw["scale"], slice_index=3)
    np.testing.assert_array_equal(data[3], axial)
    assert kw["translate"] == (0.0, 0.0, 0.0)
    data, kw, _ = heatmap_layer_data(axial, (30, 40, 3), scale=(0.5, 0.5))  # an RGB image layer
    assert data.shape == (30, 40) and kw["scale"] == (0.5, 0.5)
    with pytest.raises(ValueError, match="does not match a coronal slice"):
        heatmap_layer_data(axial, vol.data.shape, plane="coronal", slice_index=0)
    with pytest.raises(ValueError, match="slice_index"):
        heatmap_layer_data(axial, vol.data.shape, slice_index=12)
    with pytest.raises(ValueError, match="3 values for a 2D layer"):
        heatmap_layer_data(axial, (30, 40), scale=(1, 1, 1))


# ----------------------------------------------------------------------------- explain() contract
@pytest.fixture(scope="module")
def untrained():
    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import method_class

    torch.manual_seed(0)
    return method_class("linear-probe")(create_backbone("test-vit-tiny"), ["a", "b", "c"])


def test_explanation_contract_and_bad_input(untrained):
    from napari_medprompt.train.predict import predict

    rgb = np.random.default_rng(0).integers(0, 255, (30, 50, 3), np.uint8)
    e = explain(untrained, rgb)
    assert isinstance(e, Explanation) and e.heatmap.shape == (30, 50) and e.mask is None
    np.testing.assert_allclose(e.probabilities, predict(untrained, rgb)[0], atol=1e-5)  # same as predict
    assert e.target == e.predicted and e.random_weights and any("RANDOM" in n for n in e.notes)
    json.dumps(e.summary())
    data, kw, _ = heatmap_layer_data(e, rgb.shape, scale=(0.5, 0.5))
    assert data.shape == (30, 50) and "RANDOM weights" in kw["name"]
    ct = np.full((40, 40), 40, np.int16)
    e = explain(untrained, ct, window=(40, 400), target=2)
    assert e.target == 2 and e.preprocess.window == (40.0, 400.0) and e.preprocess.intensity == "window"
    with pytest.raises(ValueError, match="one 2D image"):
        explain(untrained, np.zeros((5, 30, 30), np.float32))
    with pytest.raises(ValueError, match="target 3 is not a class index"):
        explain(untrained, ct, target=3)
    with pytest.raises(ValueError, match="unknown window"):
        explain(untrained, ct, window="bright")
