"""The one record for a loaded image: voxels in (z, y, x) order plus the geometry to place them.

Conventions (every reader and writer follows them):

- ``data`` is indexed ``[z, y, x]`` (slice, row, column); a 2D image has ``data.ndim == 2`` (``[y, x]``)
  or, for colour, ``[y, x, c]`` with ``is_rgb`` set.
- ``spacing`` is the voxel size in millimetres in the same order as ``data``'s spatial axes.
- ``affine`` is a 4x4 matrix in RAS+ world coordinates (NIfTI convention) that maps a voxel index
  given in *reversed* data order ``(x, y, z, 1)`` — i.e. the index order nibabel uses for
  ``data.transpose(2, 1, 0)`` — to millimetres. A NIfTI file therefore round-trips exactly: its
  affine is kept verbatim and its array is transposed on read and transposed back on write.
- Intensities are the real values (HU for CT after rescale slope/intercept), never rescaled.
- Display: every 3D volume is *shown* in the radiological convention (axial: anterior up, the
  patient's right on the viewer's left; coronal: superior up, right on the left; sagittal: superior
  up, anterior on the left) by a display-only flip of the axes that run the other way
  (:func:`radiological_flips`); ``data`` and ``affine`` are never changed for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Volume:
    """An image with its geometry and a few descriptive, non-identifying fields."""

    data: np.ndarray
    spacing: tuple[float, ...]
    affine: np.ndarray = field(default_factory=lambda: np.eye(4))
    modality: str = "OT"  # DICOM modality code: CT, MR, CR, DX, US, OT ...
    name: str = "image"
    source: str | None = None  # path the image was read from
    is_rgb: bool = False
    # Non-identifying description (series description, body part, kVp, slice thickness, ...).
    # Never patient name / id / birth date / accession number / institution.
    meta: dict[str, Any] = field(default_factory=dict)
    # Problems found while reading that the user should know about (uneven slices, gaps, ...).
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.affine = np.asarray(self.affine, dtype=float)
        if self.affine.shape != (4, 4):
            raise ValueError(f"{self.name}: affine must be 4x4, got {self.affine.shape}")
        if len(self.spacing) != self.spatial_ndim:
            raise ValueError(
                f"{self.name}: spacing has {len(self.spacing)} values for a "
                f"{self.spatial_ndim}D image"
            )

    @property
    def spatial_ndim(self) -> int:
        return self.data.ndim - (1 if self.is_rgb else 0)

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape[: self.spatial_ndim])

    @property
    def is_3d(self) -> bool:
        return self.spatial_ndim == 3

    @property
    def origin(self) -> np.ndarray:
        """World position (RAS, mm) of voxel index 0."""
        return self.affine[:3, 3].copy()

    @property
    def direction(self) -> np.ndarray:
        """3x3 matrix of unit axis directions (columns in x, y, z index order, RAS)."""
        m = self.affine[:3, :3]
        norms = np.linalg.norm(m, axis=0)
        norms[norms == 0] = 1.0
        return m / norms

    def radiological_flips(self) -> tuple[bool, ...]:
        """Which data axes to flip on screen for the radiological view (see :func:`radiological_flips`);
        no flip for 2D images (projection radiographs are shown as stored)."""
        if not self.is_3d:
            return (False,) * self.spatial_ndim
        return radiological_flips(self.affine)

    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (mm^3 / 1000)."""
        return float(np.prod(self.spacing[-3:])) / 1000.0


def radiological_flips(affine: np.ndarray) -> tuple[bool, bool, bool]:
    """For each data axis ``(z, y, x)``: whether it must be shown reversed so that increasing screen
    coordinates run towards the patient's Left, Posterior and Inferior (the radiological convention
    in napari, whose rows run down and columns run right).

    An axis is matched to the anatomical direction (R-L, A-P or S-I) it runs most along in the RAS+
    ``affine``, and flipped when it increases towards R, A or S. Oblique volumes get the flips of the
    nearest axis-aligned orientation (the display is never resampled). Axes are only flipped, never
    swapped, so the slices a user scrolls through stay the slices of the file.
    """
    m = np.asarray(affine, dtype=float)[:3, :3]
    flips = []
    for k in range(3):  # data axis k is affine column 2 - k (the affine takes (x, y, z) indices)
        col = m[:, 2 - k]
        a = int(np.argmax(np.abs(col)))
        flips.append(bool(col[a] > 0))
    return tuple(flips)  # type: ignore[return-value]
