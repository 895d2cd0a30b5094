"""NIfTI-1/2 reading (``.nii``, ``.nii.gz``) with nibabel.

The affine is kept verbatim and the array is transposed to (z, y, x) as a view (nibabel returns
Fortran-ordered arrays, so the transposed view is C-contiguous and no copy is made).
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from napari_medprompt.io._checks import drop_extra_axes, replace_non_finite
from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume

NIFTI_SUFFIXES = (".nii", ".nii.gz")


def is_nifti_path(path: str | Path) -> bool:
    name = str(path).lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def read_nifti(path: str | Path, modality: str | None = None) -> Volume:
    """Read a NIfTI file into a :class:`Volume` (data in z, y, x; affine as stored)."""
    import nibabel as nib

    path = Path(path)
    try:
        img = _load(path)
    except (FileNotFoundError, ImageReadError):
        raise
    except Exception as e:  # nibabel raises ImageFileError, HeaderDataError, ValueError...
        raise ImageReadError(path, f"not a readable NIfTI file ({_describe(e)})") from e
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageReadError(path, f"nibabel read it as {type(img).__name__}, not NIfTI")
    try:
        raw = _read_array(img)
    except (EOFError, OSError, zlib.error, gzip.BadGzipFile, ValueError) as e:
        raise ImageReadError(
            path, f"the voxel data cannot be read; the file is truncated or corrupt ({_describe(e)})"
        ) from e
    hdr = img.header
    warnings: list[str] = []
    if raw.dtype.fields is not None:
        raise ImageReadError(path, f"colour (structured {raw.dtype}) NIfTI voxels are not supported; "
                                   "expected a greyscale or label volume")
    raw = drop_extra_axes(raw, path)
    if raw.ndim < 2:
        raise ImageReadError(path, f"{raw.ndim}D data of shape {raw.shape} is not an image")
    data = raw.T  # (x, y, z) -> (z, y, x); a view
    data = replace_non_finite(data, path, warnings)
    zooms = tuple(float(z) for z in hdr.get_zooms()[: raw.ndim])
    spacing = tuple(reversed(zooms))
    if any(not np.isfinite(s) or s <= 0 for s in spacing):
        warnings.append(f"{path}: voxel size {zooms} is invalid; using 1 mm")
        spacing = tuple(1.0 for _ in spacing)
    affine = np.asarray(img.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        raise ImageReadError(path, "corrupt header: the affine contains NaN or infinite values")
    meta = {
        "format": "NIfTI-2" if isinstance(img, nib.Nifti2Image) else "NIfTI-1",
        "orientation": "".join(nib.aff2axcodes(affine)),
        "qform_code": int(hdr["qform_code"]),
        "sform_code": int(hdr["sform_code"]),
        "stored_dtype": str(hdr.get_data_dtype()),
    }
    _keep_both_forms(hdr, affine, meta, path, warnings)
    intent = hdr.get_intent()[0]
    if intent and intent != "none":
        meta["intent"] = str(intent)
    descrip = hdr["descrip"].tobytes().split(b"\0", 1)[0].decode("latin-1").strip()
    if descrip:
        meta["description"] = descrip
    vol = Volume(
        data=data,
        spacing=spacing,
        affine=affine,
        modality=modality or "OT",
        name=_stem(path),
        source=str(path),
        meta=meta,
        warnings=warnings,
    )
    if modality is None:  # NIfTI records no modality: infer it from the voxels (marked as inferred)
        from napari_medprompt.io.modality import apply_inference

        apply_inference(vol)
    return vol


def _keep_both_forms(hdr, affine: np.ndarray, meta: dict, path: Path, warnings: list[str]) -> None:
    """When the header has both a qform and an sform and they differ, keep both (``meta["qform"]``,
    ``meta["sform"]``) so label maps saved over this image carry the same pair, and warn: nibabel
    (and this reader) use the sform, ITK-based tools (ITK-SNAP, 3D Slicer) may use the qform."""
    if int(hdr["qform_code"]) <= 0 or int(hdr["sform_code"]) <= 0:
        return
    qform, sform = hdr.get_qform(), hdr.get_sform()
    if np.allclose(qform, sform, atol=1e-3):
        return
    meta["qform"] = np.asarray(qform, float).tolist()
    meta["sform"] = np.asarray(sform, float).tolist()
    shift = float(np.linalg.norm(qform[:3, 3] - sform[:3, 3]))
    warnings.append(
        f"{path}: the header's qform and sform place the image differently (origins {shift:.1f} mm "
        "apart); shown with the sform (as nibabel does), while ITK-based tools (ITK-SNAP, 3D Slicer) "
        "may use the qform. Label maps saved over it keep both, so they overlay it in either."
    )


def _load(path: Path):
    """nibabel image for ``path``. A single-member ``.nii.gz`` is inflated with one zlib call
    (nibabel's streamed gzip reading spends a third of its time in Python-level chunking)."""
    import nibabel as nib

    if not path.name.lower().endswith(".gz"):
        return nib.load(str(path))
    raw = path.read_bytes()
    inflater = zlib.decompressobj(wbits=31)
    try:
        buf = inflater.decompress(raw)
    except zlib.error as e:
        raise ImageReadError(path, f"not a valid gzip file or corrupt compressed data ({e})") from e
    del raw
    if not inflater.eof:
        raise ImageReadError(
            path, "the file is truncated: the compressed data end before the end-of-stream marker"
        )
    if inflater.unused_data.strip(b"\0"):  # several gzip members: let nibabel stream them all
        return nib.load(str(path))
    sizeof_hdr = int.from_bytes(buf[:4], "little") if len(buf) >= 4 else 0
    if sizeof_hdr not in (348, 540):
        sizeof_hdr = int.from_bytes(buf[:4], "big")
    klass = nib.Nifti2Image if sizeof_hdr == 540 else nib.Nifti1Image
    img = klass.from_bytes(buf)
    return img


def _read_array(img) -> np.ndarray:
    """The voxels with the header's scaling applied, without a float64 upcast when avoidable."""
    dataobj = img.dataobj
    if not hasattr(dataobj, "get_unscaled"):
        return np.asanyarray(dataobj)
    # The scaling lives on the array proxy: nibabel resets scl_slope/scl_inter to NaN in a loaded
    # image's header (so img.header.get_slope_inter() is always (None, None) there).
    slope = float(np.asarray(getattr(dataobj, "slope", 1.0)))
    inter = float(np.asarray(getattr(dataobj, "inter", 0.0)))
    if not np.isfinite(slope) or slope == 0.0:
        slope = 1.0
    if not np.isfinite(inter):
        inter = 0.0
    raw = np.asanyarray(dataobj.get_unscaled())
    if isinstance(raw, np.memmap):  # uncompressed .nii: copy-on-write map, never writes the file
        raw = np.asarray(raw)
    if slope == 1.0 and inter == 0.0:
        return raw
    if raw.dtype.kind in "iu" and slope == 1.0 and float(inter).is_integer():
        lo, hi = int(raw.min()) + int(inter), int(raw.max()) + int(inter)
        for dt in (np.int16, np.int32, np.int64):
            if np.iinfo(dt).min <= lo and hi <= np.iinfo(dt).max:
                out = raw.astype(dt, copy=raw.dtype != dt)
                out += dt(int(inter))
                return out
    return np.asanyarray(dataobj)


def _stem(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return path.stem


def _describe(e: BaseException) -> str:
    msg = str(e).strip() or type(e).__name__
    return msg if len(msg) < 300 else msg[:300] + "..."
