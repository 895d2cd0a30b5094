"""NRRD / NHDR / MHA / MHD reading with SimpleITK (ITK stores geometry in LPS; converted to RAS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medprompt.io._checks import drop_extra_axes, replace_non_finite
from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume

SITK_SUFFIXES = (".nrrd", ".nhdr", ".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def is_sitk_path(path: str | Path) -> bool:
    return str(path).lower().endswith(SITK_SUFFIXES)


def read_sitk(path: str | Path, modality: str | None = None) -> Volume:
    """Read an ITK-format image; the affine maps (x, y, z) indices to RAS millimetres."""
    import SimpleITK as sitk

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        raise ImageReadError(path, f"the header or data is corrupt ({_sitk_detail(e)})") from e
    dim = img.GetDimension()
    ncomp = img.GetNumberOfComponentsPerPixel()
    if dim > 3:
        raise ImageReadError(path, f"{dim}D image of size {img.GetSize()}; MedPrompt opens one 3D volume per file")
    data = sitk.GetArrayFromImage(img)  # (z, y, x[, c]) already
    warnings: list[str] = []
    is_rgb = False
    if ncomp > 1:
        if ncomp in (3, 4) and img.GetPixelID() in (sitk.sitkVectorUInt8,):
            data = data[..., :3]
            is_rgb = True
        else:
            raise ImageReadError(path, f"{ncomp} components per voxel (vector/tensor image); expected a scalar image")
    spacing_xyz = np.asarray(img.GetSpacing(), dtype=float)
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(dim, dim)
    origin = np.asarray(img.GetOrigin(), dtype=float)
    lps = np.eye(4)
    lps[:dim, :dim] = direction @ np.diag(spacing_xyz)
    lps[:dim, 3] = origin
    affine = LPS_TO_RAS @ lps
    if not is_rgb:
        data = drop_extra_axes(data, path)
        data = replace_non_finite(data, path, warnings)
    meta = {"format": path.suffix.lower().lstrip("."), "orientation": _axcodes(affine)}
    vol = Volume(
        data=data,
        spacing=tuple(reversed(spacing_xyz.tolist())),
        affine=affine,
        modality=modality or "OT",
        name=path.stem,
        source=str(path),
        is_rgb=is_rgb,
        meta=meta,
        warnings=warnings,
    )
    if modality is None:  # NRRD / MHA record no modality: infer it from the voxels (marked as inferred)
        from napari_medprompt.io.modality import apply_inference

        apply_inference(vol)
    return vol


def _sitk_detail(e: Exception) -> str:
    """The informative part of an ITK exception (no C++ addresses or source locations)."""
    import re

    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    keep = [re.sub(r"\(0x[0-9a-f]+\)", "", ln) for ln in lines
            if not ln.startswith(("Exception thrown", "sitk::ERROR", "/")) and ".cxx" not in ln]
    text = " ".join(keep[-3:]) if keep else (lines[-1] if lines else type(e).__name__)
    return text if len(text) < 400 else text[:400] + "..."


def _axcodes(affine: np.ndarray) -> str:
    import nibabel as nib

    return "".join(nib.aff2axcodes(affine))
