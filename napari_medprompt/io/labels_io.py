"""Label maps: NIfTI (with the source image's affine) plus a JSON sidecar of ids, names, colours.

``seg.nii.gz`` gets ``seg.json`` beside it::

    {"labels": [{"id": 1, "name": "liver", "color": [r, g, b]}, ...],
     "source_image": "...", "shape": [z, y, x], "spacing": [dz, dy, dx]}

Both files are written atomically and together (temporary files, fsync, then the renames), so a
failed save leaves the previous pair intact. A label map reloads voxel for voxel and overlays its
image exactly.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np

from napari_medprompt.io.atomic import atomic_write_group
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


def rgb255(color, label_id: int = 1) -> list[int]:
    """``[r, g, b]`` in 0..255 from 0..255 integers or from 0..1 floats (napari's colours);
    the label's default colour when ``color`` is missing."""
    if color is None or len(color) < 3:
        return default_color(label_id)
    rgb = [c.item() if isinstance(c, np.generic) else c for c in list(color)[:3]]
    if any(isinstance(c, float) for c in rgb) and max(rgb) <= 1.0:  # floats in 0..1
        return [int(round(float(c) * 255)) for c in rgb]
    return [int(min(255, max(0, round(float(c))))) for c in rgb]


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
    # The sidecar is made before anything is written: a label info that cannot be stored fails
    # here, and the label map and its sidecar are then replaced together (or not at all).
    sidecar_text = json.dumps(_sidecar(labels, reference, label_info), indent=2) + "\n"
    with atomic_write_group([path, sidecar_path(path)], "wb") as (f, fs):
        if path.name.lower().endswith(".gz"):
            with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(payload)
        else:
            f.write(payload)
        fs.write(sidecar_text.encode("utf-8"))
    return path


def _sidecar(labels: np.ndarray, reference: Volume, label_info: dict[int, dict] | None) -> dict:
    """The JSON sidecar: label ids, names and colours, plus the image geometry."""
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
            "color": rgb255(d.get("color"), i),
            **{str(k): _jsonable(v) for k, v in d.items() if k not in ("id", "name", "color")},
        })
    return {
        "labels": entries,
        "source_image": reference.source,
        "shape": [int(n) for n in labels.shape],
        "spacing": [float(s) for s in reference.spacing],
        "affine": np.asarray(reference.affine, dtype=float).tolist(),
    }


def _jsonable(v):
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


def _nifti_image(labels_zyx: np.ndarray, reference: Volume):
    import nibabel as nib

    aff = np.asarray(reference.affine, dtype=float)
    img = nib.Nifti1Image(labels_zyx.T, aff)
    zooms = tuple(reversed([float(s) for s in reference.spacing]))
    img.header.set_zooms(zooms[: labels_zyx.ndim])
    # Keep the source NIfTI's coordinate codes (e.g. 2 = aligned), else 1 = scanner.
    sform_code = int(reference.meta.get("sform_code") or 0) or int(reference.meta.get("qform_code") or 0) or 1
    img.header.set_sform(aff, code=sform_code)
    rzs = aff[:3, :3]
    orthogonal = np.allclose((rzs.T @ rzs) - np.diag(np.diag(rzs.T @ rzs)), 0, atol=1e-4)
    img.header.set_qform(aff, code=sform_code if orthogonal else 0)  # qform cannot hold a shear
    src_q, src_s = reference.meta.get("qform"), reference.meta.get("sform")
    if src_q is not None and src_s is not None and np.allclose(np.asarray(src_s, float), aff, atol=1e-4):
        # The source's qform and sform differ: keep both, each tool then places the labels
        # exactly where it places the image, whichever form it uses.
        img.header.set_qform(np.asarray(src_q, float), code=int(reference.meta.get("qform_code") or 1))
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
    info, problems = read_sidecar(path)
    vol.warnings.extend(problems)
    return labels, vol, info


def read_sidecar(path: str | Path) -> tuple[dict[int, dict], list[str]]:
    """Label id -> {"name", "color", ...} from the JSON sidecar beside ``path`` (empty when there
    is none), and the problems found reading it."""
    info: dict[int, dict] = {}
    sc = sidecar_path(path)
    if not sc.is_file():
        return info, []
    try:
        doc = json.loads(sc.read_text(encoding="utf-8"))
        for e in doc.get("labels", []):
            info[int(e["id"])] = {k: v for k, v in e.items() if k != "id"}
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as e:
        return {}, [f"{sc}: label names could not be read ({e}); using ids"]
    return info, []


_LABEL_WORDS = {"seg", "segs", "segmentation", "label", "labels", "labelmap", "mask", "masks", "roi"}


def looks_like_label_map(vol: Volume) -> bool:
    """True for a label map: an integer volume saved as one (NIfTI intent "label", or a sidecar
    with label names beside it), or a medical-format volume (not PNG/JPEG/TIFF, where masks are
    often anti-aliased greyscale) named like one (``*_seg``, ``*label*``, ``*mask*``) with no
    negative values."""
    if vol.is_rgb or vol.data.dtype.kind not in "iub":
        return False
    if vol.meta.get("intent") == "label":
        return True
    if vol.source and read_sidecar(vol.source)[0]:
        return True
    if str(vol.meta.get("format", "")).lower() in ("png", "jpg", "jpeg", "tif", "tiff"):
        return False
    words = set(re.split(r"[^a-z0-9]+", vol.name.lower()))
    return bool(words & _LABEL_WORDS) and (vol.data.size == 0 or int(vol.data.min()) >= 0)
