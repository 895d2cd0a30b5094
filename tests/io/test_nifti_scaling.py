"""NIfTI intensity scaling (scl_slope / scl_inter) is applied: HU and MR values are the real ones.

nibabel resets the scaling fields in a loaded image's header, so a reader that takes them from
``img.header`` silently shows the stored integers; these tests fail on such a reader.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.read import read_image
from tests.conftest import shared_file


def _save_scaled(path, raw, slope, inter):
    img = nib.Nifti1Image(raw, np.diag([0.7, 0.7, 2.5, 1.0]))
    img.header.set_data_dtype(raw.dtype)
    img.header.set_slope_inter(slope, inter)
    nib.save(img, str(path))
    back = nib.load(str(path))
    assert float(back.dataobj.slope) == slope and float(back.dataobj.inter) == inter  # really scaled
    return np.asanyarray(back.dataobj)


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_ct_stored_unsigned_with_intercept_reads_in_hu(tmp_path, suffix):
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 3000, (24, 20, 6)).astype(np.uint16)
    raw[:4, :4, :] = 0  # air corner: stored 0 -> -1024 HU
    ref = _save_scaled(tmp_path / f"ct{suffix}", raw, 1.0, -1024.0)
    (vol,) = read_image(tmp_path / f"ct{suffix}")
    np.testing.assert_array_equal(vol.data, ref.T)
    assert vol.data.dtype.kind == "i" and vol.data.min() == -1024  # HU, still integer
    assert vol.modality == "CT"
    assert volume_to_layer_data(vol)[1]["contrast_limits"] == [-160.0, 240.0]


def test_float_slope_gives_the_scaled_values(tmp_path):
    raw = (np.arange(10 * 12 * 4) % 256).astype(np.uint8).reshape(10, 12, 4)
    ref = _save_scaled(tmp_path / "mr.nii.gz", raw, 6.5, 3.0)
    (vol,) = read_image(tmp_path / "mr.nii.gz")
    np.testing.assert_array_equal(vol.data, ref.T)
    assert vol.data.max() == pytest.approx(255 * 6.5 + 3.0)


def test_real_scaled_mri_matches_nibabel():
    """MR_Gd.nii.gz stores uint8 with scl_slope 6.48: the values go up to ~1653, as float64."""
    p = shared_file("niivue_images/MR_Gd.nii.gz")
    (vol,) = read_image(p)
    ref = np.asanyarray(nib.load(str(p)).dataobj)
    assert vol.data.dtype == ref.dtype == np.float64
    np.testing.assert_array_equal(vol.data, ref.T)
    assert vol.data.max() == pytest.approx(1653.0, abs=0.01)
