"""Small synthetic images written by the tests themselves (no patient data)."""

from __future__ import annotations

import numpy as np

from napari_medprompt.io.volume import Volume


def ct_volume(shape=(8, 24, 20), spacing=(2.5, 0.8, 0.7), seed=0) -> Volume:
    """An oblique-free CT-like volume with a non-trivial affine (LPS index order, like DICOM)."""
    rng = np.random.default_rng(seed)
    data = rng.integers(-1000, 1500, shape).astype(np.int16)
    dz, dy, dx = spacing
    aff = np.array([[-dx, 0, 0, 100.0], [0, -dy, 0, 50.0], [0, 0, dz, -30.0], [0, 0, 0, 1]])
    return Volume(data, spacing, aff, modality="CT", name="synthetic")
