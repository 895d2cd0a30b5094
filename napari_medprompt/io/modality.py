"""Modality inference for files that do not say what they hold (NRRD/MHA/NIfTI, PNG, bare DICOM).

Readers call :func:`infer_modality` when the file records no modality. The answer is a DICOM
modality code and a reason, and the :class:`~napari_medprompt.io.volume.Volume` records
``meta["modality_inferred"] = True`` and ``meta["modality_reason"]`` so the user can see it was
guessed and change it. Rules, in order (the first that holds wins; "OT" when none does):

- **DICOM tags** (a series whose Modality is missing or "OT"): the SOP class (CT / MR / CR / DX /
  MG / PT / US image storage), else MR acquisition tags (MagneticFieldStrength, EchoTime,
  RepetitionTime), else RescaleType "HU".
- **CT**: data in Hounsfield units: the lowest value between -3100 and -900 (air, or the scanner's
  padding value), at least 0.5 % of the voxels at air (-1100..-900 HU; 2 % for non-integer data,
  which is resampled) and values above 200 (bone / contrast).
- **MR**: a 3D scalar volume that is not CT, not 8-bit, essentially non-negative (0.5th percentile
  above -5 % of the highest value, lowest value above -25 %) and with a highest value of at least 100 (raw scanner units, not
  normalised data), unless the file name says PET.
- A label map or mask (integer data with at most 64 distinct values, or 90 % of the values at the
  lowest or highest one) stays "OT".
- **X-ray ("DX")**: a 2D grey image (8 or 16 bit, both sides at least 256 px, a wide spread of
  grey levels): a digital radiograph is the common case for a grey 2D medical picture.
"""

from __future__ import annotations

import re

import numpy as np

OTHER = "OT"

#: DICOM SOP class UID prefixes -> modality (image storage classes).
SOP_CLASS_MODALITY = {
    "1.2.840.10008.5.1.4.1.1.2": "CT",  # CT (and enhanced CT .2.1)
    "1.2.840.10008.5.1.4.1.1.4": "MR",  # MR (and enhanced MR .4.1)
    "1.2.840.10008.5.1.4.1.1.1.1": "DX",  # digital X-ray (before the CR rule: longer prefix)
    "1.2.840.10008.5.1.4.1.1.1.2": "MG",  # digital mammography
    "1.2.840.10008.5.1.4.1.1.1": "CR",  # computed radiography
    "1.2.840.10008.5.1.4.1.1.128": "PT",  # PET
    "1.2.840.10008.5.1.4.1.1.6": "US",  # ultrasound
}

_MAX_SAMPLE = 1_000_000
_PET_NAME = re.compile(r"(^|[^a-z])(pet|suv)([^a-z]|$)")


def _sample(data: np.ndarray) -> np.ndarray:
    arr = np.asarray(data)
    if arr.size > _MAX_SAMPLE:
        step = int(np.ceil((arr.size / _MAX_SAMPLE) ** (1.0 / arr.ndim)))
        arr = arr[(slice(None, None, step),) * arr.ndim]
    arr = arr.ravel()
    if arr.dtype.kind == "f":
        arr = arr[np.isfinite(arr)]
    return arr


def _integer_valued(sample: np.ndarray) -> bool:
    if sample.dtype.kind in "iub":
        return True
    return bool(sample.size) and bool(np.all(np.mod(sample, 1.0) == 0))


def looks_like_ct(data: np.ndarray) -> tuple[bool, str]:
    """Whether ``data`` holds Hounsfield units (see the module docstring), with the evidence."""
    if np.asarray(data).dtype.kind not in "iuf" or np.asarray(data).size == 0:
        return False, ""
    s = _sample(data)
    if s.size == 0:
        return False, ""
    lo, hi = float(s.min()), float(s.max())
    air = float(np.mean((s >= -1100) & (s <= -900)))
    # resampled CT is stored as floats: then more air is asked for
    if -3100.0 <= lo <= -900.0 and hi > 200.0 and air >= (0.005 if _integer_valued(s) else 0.02):
        return True, (
            f"values from {lo:g} to {hi:g} with {100 * air:.1f}% of voxels at air "
            "(-1100..-900): Hounsfield units"
        )
    return False, ""


def infer_modality(
    data: np.ndarray, *, is_rgb: bool = False, name: str = "", spatial_ndim: int | None = None
) -> tuple[str, str]:
    """``(modality, reason)`` from the voxels (and, for PET only, the file name); ``("OT", reason)``
    when unsure. See the module docstring for the rules."""
    arr = np.asarray(data)
    nd = spatial_ndim if spatial_ndim is not None else arr.ndim - (1 if is_rgb else 0)
    if is_rgb:
        return OTHER, "a colour image: no modality can be told from it"
    if arr.size == 0 or arr.dtype.kind not in "iuf":
        return OTHER, "no numeric voxels"
    ct, why = looks_like_ct(arr)
    if ct:
        return "CT", why
    s = _sample(arr)
    if s.size == 0:
        return OTHER, "no finite voxels"
    lo, hi = float(s.min()), float(s.max())
    if arr.dtype.kind in "iu" and np.unique(s[: 200_000]).size <= 64:
        return OTHER, "few distinct integer values: a label map or mask, not an image"
    if hi > lo and float(np.mean((s == lo) | (s == hi))) >= 0.9:
        return OTHER, "nearly every value is the lowest or the highest: a mask, not an image"
    if nd == 3:
        if _PET_NAME.search(name.lower()):
            return OTHER, "the file name says PET; PET is not inferred from the voxels"
        low = float(np.percentile(s, 0.5))  # interpolation ringing leaves a few small negatives
        if arr.dtype.itemsize > 1 and hi >= 100.0 and low >= -0.05 * hi and lo >= -0.25 * hi:
            return "MR", (
                f"a 3D grey volume of values {lo:g} to {hi:g}: no Hounsfield units, non-negative "
                "scanner units: most likely MR"
            )
        return OTHER, f"a 3D volume of values {lo:g} to {hi:g} that is neither CT nor MR-like"
    if nd == 2:
        h, w = arr.shape[:2]
        spread = float(np.std(s)) / max(hi - lo, 1e-9)
        if arr.dtype.kind in "ui" and arr.dtype.itemsize <= 2 and min(h, w) >= 256 and spread >= 0.1:
            return "DX", f"a {h} x {w} grey {8 * arr.dtype.itemsize}-bit picture: most likely a radiograph"
        return OTHER, f"a {h} x {w} picture that does not look like a radiograph"
    return OTHER, "neither a 2D picture nor a 3D volume"


def modality_from_dicom_tags(ds) -> tuple[str, str] | None:
    """``(modality, reason)`` from the tags of a DICOM dataset whose Modality is missing or "OT"."""
    uid = str(ds.get("SOPClassUID", "") or "")
    for prefix, mod in SOP_CLASS_MODALITY.items():
        if uid == prefix or uid.startswith(prefix + "."):
            return mod, f"SOP class {uid}"
    for tag in ("MagneticFieldStrength", "EchoTime", "RepetitionTime"):
        if ds.get(tag) not in (None, ""):
            return "MR", f"MR acquisition tag {tag}"
    if str(ds.get("RescaleType", "") or "").upper() == "HU":
        return "CT", "RescaleType HU"
    return None


def apply_inference(vol, *, name: str | None = None, ds=None):
    """Set ``vol.modality`` from the tags of ``ds`` or the voxels when it is "OT"/empty; mark it
    inferred in ``vol.meta``. Returns ``vol`` (changed in place)."""
    if vol.modality and vol.modality.upper() != OTHER:
        return vol
    found = modality_from_dicom_tags(ds) if ds is not None else None
    if found is None:
        found = infer_modality(vol.data, is_rgb=vol.is_rgb, name=name or vol.name or "",
                               spatial_ndim=vol.spatial_ndim)
    mod, reason = found
    vol.modality = mod
    vol.meta["modality_inferred"] = True
    vol.meta["modality_reason"] = reason
    return vol
