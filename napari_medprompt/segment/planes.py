"""Segmenting along another slice axis: bind a view of the volume whose first axis is the slice axis.

The backends always slice along axis 0 of what they are bound to. For coronal or sagittal work, bind
``plane_view(volume, "coronal")`` (a NumPy view, no copy) with ``plane_spacing`` and a cache key that
names the plane; results come back in that view's slice order and are written into the (z, y, x)
label map with ``plane_index`` (or :func:`axial_masks`, which turns plane slices into the axial
slices an annotation session stores; a slice the user accepts in a plane goes to the session with
``AnnotationSession.commit_plane``, which also records it as that plane's decision).

Which plane a napari 2D view shows follows from the axis it slices across (``dims.not_displayed``,
whatever ``dims.order`` puts on screen) mapped through the layer's data -> world transform
(:func:`view_plane`; a radiological flip keeps the axis). Points convert with :func:`to_plane` /
:func:`from_plane`.
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


# ------------------------------------------------------------------------------ views and points
#: The plane a 2D view shows, by the data axis it slices across.
PLANE_OF_AXIS = {axis: name for name, axis in PLANES.items()}
VIEW_3D = "3d"


def sliced_data_axis(linear: np.ndarray, world_axis: int) -> int:
    """The data axis a layer steps through when the viewer slices across ``world_axis``.

    ``linear`` is the layer's data -> world linear map (scale, flips, rotation; ``(n, n)``): world
    axis ``w`` follows the data axis with the largest weight in row ``w`` (a radiological flip
    keeps the axis, a permutation moves it)."""
    row = np.abs(np.asarray(linear, dtype=float)[int(world_axis)])
    return int(np.argmax(row))


def view_plane(ndisplay: int, sliced_world_axes: Sequence[int], linear: np.ndarray) -> str:
    """The plane a viewer shows of a 3D layer: "axial", "coronal", "sagittal" or :data:`VIEW_3D`.

    ``sliced_world_axes`` are the layer's world axes that are not displayed (napari's
    ``dims.not_displayed`` shifted to the layer's own axes); ``linear`` its data -> world map."""
    if int(ndisplay) == 3:
        return VIEW_3D
    axes = [int(a) for a in sliced_world_axes]
    if len(axes) != 1:
        raise ValueError(f"a 2D view of a 3D volume slices across one axis, not {axes}")
    return PLANE_OF_AXIS[sliced_data_axis(linear, axes[0])]


def to_plane(point_zyx: Sequence[float], plane: str) -> tuple[float, float, float]:
    """A ``(z, y, x)`` data point as ``(slice, row, col)`` of :func:`plane_view`."""
    ax = plane_axis(plane)
    p = [float(v) for v in point_zyx]
    return (p[ax], *[v for i, v in enumerate(p) if i != ax])


def from_plane(plane: str, slice_index: float, row: float, col: float) -> tuple[float, float, float]:
    """The ``(z, y, x)`` data point of ``(slice, row, col)`` in :func:`plane_view` order."""
    ax = plane_axis(plane)
    rest = [float(row), float(col)]
    rest.insert(ax, float(slice_index))
    return tuple(rest)


def plane_shape(shape: Sequence[int], plane: str) -> tuple[int, int]:
    """``(rows, cols)`` of one slice of ``plane`` in a volume of ``shape`` (z, y, x)."""
    ax = plane_axis(plane)
    return tuple(int(n) for i, n in enumerate(shape) if i != ax)


def axial_masks(object_mask: np.ndarray, plane: str, plane_masks: dict) -> dict[int, np.ndarray]:
    """Axial slice masks of an object after replacing its slices ``plane_masks`` ({index: (rows, cols)
    bool}) of ``plane`` in ``object_mask`` (z, y, x bool, the object now): ``{z: (y, x) mask}`` for every
    axial slice that changes. ``object_mask`` is not modified."""
    new = np.array(object_mask, dtype=bool, copy=True)
    view = plane_view(new, plane)
    for idx, m in plane_masks.items():
        m = np.asarray(m, dtype=bool)
        if m.shape != view.shape[1:]:
            raise ValueError(f"a {plane} mask has shape {m.shape}; {plane} slices are {view.shape[1:]}")
        view[int(idx)] = m
    changed = np.flatnonzero((new != np.asarray(object_mask, dtype=bool)).any(axis=(1, 2)))
    return {int(z): new[z] for z in changed}
