"""Window presets, the synthetic CT phantom and the napari sample-data contribution."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt._sample_data import make_sample_ct
from napari_medprompt.imaging.phantom import HU, make_abdominal_phantom
from napari_medprompt.imaging.window import PRESETS, contrast_limits, preset_names


def test_ct_presets_are_fixed_hu_windows():
    img = np.zeros((4, 4), np.int16)
    assert contrast_limits(img, "CT") == (-160.0, 240.0)  # soft tissue W400 L40 by default
    assert contrast_limits(img, "CT", "lung") == (-1350.0, 150.0)
    assert contrast_limits(img, "CT", "bone") == (-500.0, 1300.0)
    assert contrast_limits(img, "CT", "brain") == (0.0, 80.0)
    assert contrast_limits(img, "CT", "liver") == (-20.0, 140.0)
    assert contrast_limits(img, "CT", "mediastinum") == (-125.0, 225.0)
    names = preset_names("CT")
    assert names[0] == "soft_tissue" and {"lung", "bone", "brain", "liver", "mediastinum"} <= set(names)
    assert set(preset_names("MR")) == {"auto", "narrow", "full"} and "lung" not in preset_names("DX")
    with pytest.raises(ValueError, match="unknown window preset"):
        contrast_limits(img, "CT", "nonsense")


def test_percentile_presets_follow_the_image():
    rng = np.random.default_rng(0)
    mr = rng.normal(400, 50, (20, 64, 64)).astype(np.float32)
    mr[0, 0, 0] = 1e6  # one hot voxel must not blow the window
    mr[0, 0, 1] = np.nan
    lo, hi = contrast_limits(mr, "MR")
    assert 200 < lo < 300 and 500 < hi < 600
    assert contrast_limits(mr, "MR", "full")[1] == pytest.approx(1e6)
    nlo, nhi = contrast_limits(mr, "MR", "narrow")
    assert lo < nlo < nhi < hi
    flat = np.full((8, 8), 7, np.uint8)
    assert contrast_limits(flat, "DX") == (7.0, 8.0)  # never an empty window
    assert all(p.name == k for k, p in PRESETS.items())


def test_phantom_hu_ranges_per_tissue():
    vol, labels, names = make_abdominal_phantom(seed=0)
    assert vol.data.shape == labels.shape == (48, 192, 192) and vol.data.dtype == np.int16
    assert vol.spacing == (2.5, 1.5, 1.5) and vol.modality == "CT"
    expect = {  # median HU windows of the tissue each label stands for (portal venous phase)
        "liver": (80, 130), "spleen": (90, 140), "kidney_right": (120, 230), "kidney_left": (120, 230),
        "aorta": (150, 350), "inferior_vena_cava": (100, 200), "vertebrae": (200, 1000),
        "ribs": (250, 800), "lung_right": (-900, -700), "lung_left": (-900, -700),
    }
    for lid, name in names.items():
        hu = vol.data[labels == lid]
        assert hu.size > 500, name
        lo, hi = expect[name]
        assert lo <= np.median(hu) <= hi, (name, np.median(hu))
    outside = vol.data[:, :4, :4]
    assert outside.mean() < -950  # air
    body = vol.data[labels == 0]
    fat = body[(body > -200) & (body < -30)]
    assert fat.size > 10000 and -130 < np.median(fat) < -70  # subcutaneous and visceral fat
    noise = vol.data[labels == 1].std()
    assert 5 < noise < 40  # noisy like a scan, not flat
    assert HU["aorta"] > HU["liver"] > HU["fat"] > HU["lung"]


def test_phantom_is_deterministic_and_seeded():
    a, la, _ = make_abdominal_phantom(seed=3)
    b, lb, _ = make_abdominal_phantom(seed=3)
    c, lc, _ = make_abdominal_phantom(seed=4)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(la, lb)
    assert not np.array_equal(a.data, c.data)


def test_phantom_partial_volume_edges():
    vol, labels, _ = make_abdominal_phantom(seed=0, noise_hu=0.0)
    row = vol.data[30, 100].astype(float)  # across the body wall: blurred, not a step
    jumps = np.abs(np.diff(row))
    assert jumps.max() < 900  # air -> fat edge is spread over more than one voxel


def test_sample_data_layers():
    image, labels = make_sample_ct()
    data, kw, kind = image
    assert kind == "image" and kw["contrast_limits"] == [-160.0, 240.0] and kw["scale"] == (2.5, 1.5, 1.5)
    ldata, lkw, lkind = labels
    assert lkind == "labels" and ldata.shape == data.shape and lkw["scale"] == kw["scale"]
    assert lkw["metadata"]["label_names"][1] == "liver"
    assert lkw["metadata"]["medprompt"]["affine"] == kw["metadata"]["medprompt"]["affine"]
