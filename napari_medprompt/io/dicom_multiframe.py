"""Enhanced (multi-frame) CT/MR/PET DICOM with per-frame geometry, through highdicom.

highdicom sorts the frames into a regular volume from the functional groups (Plane Position /
Plane Orientation / Pixel Measures) and applies the modality transform; this module turns its
(slice, row, column) LPS affine into this package's convention: (x=column, y=row, z=slice) index
order, RAS, slices ascending along the normal of the row and column directions.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medprompt.io._dicom_common import safe_meta
from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_SRC_TO_XYZ = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1.0]])


def has_frame_geometry(ds) -> bool:
    return int(ds.get("NumberOfFrames", 1) or 1) > 1 and (
        "PerFrameFunctionalGroupsSequence" in ds or "SharedFunctionalGroupsSequence" in ds
    )


def read_dicom_multiframe(path: str | Path, ds=None) -> Volume:
    """One enhanced multi-frame file as a 3D :class:`Volume` (HU for CT)."""
    import highdicom as hd

    path = Path(path)
    try:
        img = hd.Image.from_dataset(ds, copy=False) if ds is not None else hd.imread(str(path))
        hv = img.get_volume(dtype=np.float32, apply_modality_transform=True)
    except (ValueError, RuntimeError, AttributeError, KeyError) as e:
        raise ImageReadError(
            path, f"the frames of this multi-frame image do not form a regular 3D volume ({e})"
        ) from e
    arr = np.asarray(hv.array)
    if arr.ndim != 3:
        raise ImageReadError(path, f"multi-frame volume of shape {arr.shape} is not a greyscale 3D image")
    lps = np.asarray(hv.affine, dtype=float) @ _SRC_TO_XYZ  # columns now: x (col), y (row), z (slice)
    cols = lps[:3, :3]
    normal = np.cross(cols[:, 0], cols[:, 1])
    if cols[:, 2] @ normal < 0 and arr.shape[0] > 1:  # ascending along the normal, like series
        arr = arr[::-1]
        lps[:3, 3] = lps[:3, 3] + lps[:3, 2] * (arr.shape[0] - 1)
        lps[:3, 2] = -lps[:3, 2]
    if np.all(np.mod(arr, 1) == 0) and arr.min() >= -32768 and arr.max() <= 32767:
        data = np.ascontiguousarray(arr, dtype=np.int16)
    else:
        data = np.ascontiguousarray(arr)
    spacing = tuple(float(np.linalg.norm(lps[:3, i])) for i in (2, 1, 0))
    meta = safe_meta(ds if ds is not None else img)
    meta["n_frames"] = int(arr.shape[0])
    meta["dicom_files"] = [str(path)]
    label = str((ds or img).get("SeriesDescription", "") or path.stem)
    return Volume(
        data=data,
        spacing=spacing,
        affine=LPS_TO_RAS @ lps,
        modality=str((ds or img).get("Modality", "OT") or "OT"),
        name=label,
        source=str(path),
        meta=meta,
    )
