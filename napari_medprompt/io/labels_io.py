"""Label maps: NIfTI (with the source image's affine) plus a JSON sidecar of ids, names, colours.

``seg.nii.gz`` gets ``seg.json`` beside it::

    {"labels": [{"id": 1, "name": "liver", "color": [r, g, b]}, ...],
     "source_image": "...", "shape": [z, y, x], "spacing": [dz, dy, dx]}

Both files are written atomically (temporary file, fsync, rename), so a failed save leaves the
previous files intact. A label map reloads voxel for voxel and overlays its image exactly.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np

from napari_medprompt.io.atomic import atomic_write, atomic_write_text
from napari_medprompt.io.errors import ImageReadError, LabelWriteError
from napari_medprompt.io.volume import Volume

# A colour cycle for labels without one (distinct, readable on a grey image).
_PALETTE = [
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
    (0, 128, 128), (220, 190, 255), (170, 110, 40), (255, 250, 200), (128, 0, 0),
    (170, 255, 195), (128, 128, 0), (255, 215, 180), (0, 0, 128), (128, 128, 128),
]


def default_color(label_id: int) -> list[int]:
    return list(_PALETTE[(int(label_id) - 1) % len(_PALETTE)])


def sidecar_path(path: str | Path) -> Path:
    """``seg.nii.gz`` -> ``seg.json``; ``seg.nii`` -> ``seg.json``."""
    p = Path(path)
    name = p.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return p.with_name(name[: -len(suf)] + ".json")
    return p.with_suffix(".json")


def _label_dtype(labels: np.ndarray) -> np.dtype:
    if labels.size == 0:
        return np.dtype(np.uint8)
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0:
        raise LabelWriteError(f"label ids must be >= 0, found {lo}")
    for dt in (np.uint8, np.uint16, np.uint32):
        if hi <= np.iinfo(dt).max:
            return np.dtype(dt)
    raise LabelWriteError(f"label id {hi} is too large to store")


def save_label_map(
    path: str | Path,
    labels: np.ndarray,
    reference: Volume,
    label_info: dict[int, dict] | None = None,
) -> Path:
    """Save ``labels`` (z, y, x) as NIfTI with ``reference``'s affine, plus the JSON sidecar."""
    path = Path(path)
    if not (path.name.lower().endswith(".nii.gz") or path.name.lower().endswith(".nii")):
        raise LabelWriteError(f"{path}: label maps are saved as .nii.gz or .nii")
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iub":
        if labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0):
            labels = labels.astype(np.int64)
        else:
            raise LabelWriteError(f"{path}: labels must be integers, got {labels.dtype}")
    ref_shape = tuple(reference.spatial_shape)
    if tuple(labels.shape) != ref_shape:
        raise LabelWriteError(
            f"{path}: label map shape {tuple(labels.shape)} does not match the image "
            f"{reference.name!r} of shape {ref_shape}; nothing was written"
        )
    dtype = _label_dtype(labels)
    img = _nifti_image(labels.astype(dtype, copy=False), reference)
    payload = img.to_bytes()
    with atomic_write(path, "wb") as f:
        if path.name.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)
    ids = sorted(int(i) for i in np.unique(labels) if i != 0)
    info = {int(k): dict(v) for k, v in (label_info or {}).items()}
    entries = []
    for i in sorted(set(ids) | set(info)):
        if i == 0:
            continue
        d = info.get(i, {})
        entries.append({
            "id": i,
            "name": str(d.get("name", f"label {i}")),
            "color": [int(c) for c in (d.get("color") or default_color(i))[:3]],
            **{k: v for k, v in d.items() if k not in ("id", "name", "color")},
        })
    sidecar = {
        "labels": entries,
        "source_image": reference.source,
        "shape": [int(n) for n in labels.shape],
        "spacing": [float(s) for s in reference.spacing],
        "affine": np.asarray(reference.affine, dtype=float).tolist(),
    }
    atomic_write_text(sidecar_path(path), json.dumps(sidecar, indent=2) + "\n")
    return path


def _nifti_image(labels_zyx: np.ndarray, reference: Volume):
    import nibabel as nib

    aff = np.asarray(reference.affine, dtype=float)
    img = nib.Nifti1Image(labels_zyx.T, aff)
    zooms = tuple(reversed([float(s) for s in reference.spacing]))
    img.header.set_zooms(zooms[: labels_zyx.ndim])
    img.header.set_sform(aff, code=1)
    rzs = aff[:3, :3]
    orthogonal = np.allclose((rzs.T @ rzs) - np.diag(np.diag(rzs.T @ rzs)), 0, atol=1e-4)
    img.header.set_qform(aff, code=1 if orthogonal else 0)  # qform cannot hold a shear
    img.header.set_intent("label", name="labels")
    img.header.set_xyzt_units("mm")
    return img


def load_label_map(path: str | Path) -> tuple[np.ndarray, Volume, dict[int, dict]]:
    """Labels (z, y, x, integer), the geometry as a Volume (its data are the labels), label info."""
    from napari_medprompt.io.nifti import read_nifti

    vol = read_nifti(path, modality="SEG")
    labels = np.asarray(vol.data)
    if labels.dtype.kind == "f":
        if not np.all(np.mod(labels, 1) == 0):
            raise ImageReadError(path, "not a label map: the voxel values are not whole numbers")
        labels = labels.astype(np.int32)
    vol.data = labels
    info: dict[int, dict] = {}
    sc = sidecar_path(path)
    if sc.exists():
        try:
            doc = json.loads(sc.read_text(encoding="utf-8"))
            for e in doc.get("labels", []):
                info[int(e["id"])] = {k: v for k, v in e.items() if k != "id"}
        except (ValueError, KeyError, TypeError) as e:
            vol.warnings.append(f"{sc}: label names could not be read ({e}); using ids")
    return labels, vol, info
