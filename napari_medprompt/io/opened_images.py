"""The geometry of the images opened in this process, for label layers that do not carry it.

A Labels layer made with napari's "new labels" button (or by any code that does not copy the image
layer's ``metadata["medprompt"]``) has only a ``scale``. Saved with that alone, the label map would
line up with its image in napari but not in ITK-SNAP or 3D Slicer (no orientation, no origin).
The reader hook records the geometry of every image it returns here; the writers look up the image
whose shape and voxel size match the label layer, and use its geometry when exactly one does.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_MAX_KEPT = 64
_OPENED: list[dict[str, Any]] = []


def remember(md: dict[str, Any]) -> None:
    """Record the ``metadata["medprompt"]`` dict of an image layer (newest last)."""
    if not isinstance(md, dict) or "affine" not in md or "shape" not in md:
        return
    _OPENED.append(md)
    del _OPENED[:-_MAX_KEPT]


def forget_all() -> None:
    _OPENED.clear()


def matching(shape: tuple[int, ...], scale=None) -> list[dict[str, Any]]:
    """Distinct geometries of opened images with this spatial ``shape`` (and voxel size ``scale``
    when given), newest first."""
    out: list[dict[str, Any]] = []
    for md in reversed(_OPENED):
        if tuple(int(n) for n in md["shape"]) != tuple(int(n) for n in shape):
            continue
        if scale is not None:
            spacing = [float(s) for s in md.get("spacing") or ()]
            sc = [float(s) for s in scale][-len(spacing):] if spacing else []
            if len(sc) != len(spacing) or not np.allclose(sc, spacing, rtol=1e-4, atol=1e-6):
                continue
        if any(_same_geometry(md, o) for o in out):
            continue
        out.append(md)
    return out


def _same_geometry(a: dict, b: dict) -> bool:
    return (np.allclose(np.asarray(a["affine"], float), np.asarray(b["affine"], float), atol=1e-6)
            and (a.get("dicom_files") or None) == (b.get("dicom_files") or None))
