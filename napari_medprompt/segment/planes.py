"""Segmenting along another slice axis: bind a view of the volume whose first axis is the slice axis.

The backends always slice along axis 0 of what they are bound to. For coronal or sagittal work, bind
``plane_view(volume, "coronal")`` (a NumPy view, no copy) with ``plane_spacing`` and a cache key that
names the plane; results come back in that view's slice order and are written into the (z, y, x)
label map with ``plane_index``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def plane_axis(plane: str) -> int:
    try:
        return PLANES[plane]
    except KeyError:
        raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(PLANES)}") from None


def plane_view(volume: np.ndarray, plane: str) -> np.ndarray:
    """``volume`` (z, y, x) seen as slices along ``plane``'s axis: a view, never a copy."""
    if volume.ndim != 3:
        raise ValueError(f"a {volume.ndim}D image has only one plane; plane views need a 3D volume")
    return np.moveaxis(volume, plane_axis(plane), 0)


def plane_spacing(spacing: Sequence[float], plane: str) -> tuple[float, float, float]:
    """Voxel spacing in the order of :func:`plane_view`'s axes."""
    ax = plane_axis(plane)
    sp = [float(s) for s in spacing]
    return (sp[ax], *[s for i, s in enumerate(sp) if i != ax])


def plane_index(plane: str, slice_index: int) -> tuple:
    """Index into the (z, y, x) volume that addresses slice ``slice_index`` of ``plane``."""
    idx: list = [slice(None)] * 3
    idx[plane_axis(plane)] = int(slice_index)
    return tuple(idx)
