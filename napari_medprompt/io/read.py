"""``read_image(path)``: one entry point for every supported file or folder.

Dispatch is by content where a format has a signature (DICOM's ``DICM`` marker) and by suffix
otherwise: ``.nii``/``.nii.gz`` (nibabel), ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` (SimpleITK),
``.png``/``.jpg``/``.jpeg``/``.tif``/``.tiff`` (Pillow/tifffile), DICOM files with any or no suffix
and folders of DICOM files (pydicom).
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_medprompt.io._dicom_common import is_dicom_file
from napari_medprompt.io.errors import ImageReadError, UnsupportedFormat
from napari_medprompt.io.image2d import is_image2d_path
from napari_medprompt.io.nifti import is_nifti_path
from napari_medprompt.io.sitk_io import is_sitk_path
from napari_medprompt.io.volume import Volume

DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_MAX_FILES_SNIFFED = 1000
_NOT_DICOM_FOLDERS = (".zarr", ".n5", ".ome.zarr", ".git")


def sniff(path: str | Path) -> str | None:
    """The reader kind for ``path`` ("nifti", "sitk", "image2d", "dicom", "dicom_folder") or None.

    Cheap: reads at most a few bytes per file. Does not check that the file is intact.
    """
    p = Path(path)
    if p.is_dir():
        return "dicom_folder" if _folder_has_dicom(p) else None
    if not p.is_file():
        return None
    if is_nifti_path(p):
        return "nifti"
    if is_sitk_path(p):
        return "sitk"
    if is_image2d_path(p):
        return "image2d"
    if is_dicom_file(p) or p.suffix.lower() in DICOM_SUFFIXES:
        return "dicom"
    return None


def _folder_has_dicom(folder: Path) -> bool:
    """True when a DICOM file is among the first files under ``folder`` (chunked array stores
    such as .zarr are never DICOM folders and are not walked)."""
    if folder.name.lower().endswith(_NOT_DICOM_FOLDERS):
        return False
    seen = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".") and not d.lower().endswith(_NOT_DICOM_FOLDERS)]
        for name in files:
            if name.startswith("."):
                continue
            if name.lower().endswith(DICOM_SUFFIXES) or is_dicom_file(Path(root) / name):
                return True
            seen += 1
            if seen >= _MAX_FILES_SNIFFED:
                return False
    return False


def read_image(path: str | Path) -> list[Volume]:
    """Read any supported file or folder into one :class:`Volume` per image (series).

    Raises :class:`ImageReadError` (a ValueError naming the file and the problem) for a recognised
    file that cannot be read, :class:`UnsupportedFormat` for a path no reader recognises, and
    FileNotFoundError for a missing path.
    """
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{p}: no such file or folder")
    if p.is_dir():
        from napari_medprompt.io.dicom_series import read_dicom

        if not _folder_has_dicom(p):
            raise ImageReadError(p, "the folder contains no DICOM files (an empty or non-DICOM folder)")
        return read_dicom(p)
    kind = sniff(p)
    if kind == "nifti":
        from napari_medprompt.io.nifti import read_nifti

        return [read_nifti(p)]
    if kind == "sitk":
        from napari_medprompt.io.sitk_io import read_sitk

        return [read_sitk(p)]
    if kind == "image2d":
        from napari_medprompt.io.image2d import read_image2d

        return [read_image2d(p)]
    if kind == "dicom":
        from napari_medprompt.io.dicom_series import read_dicom

        return read_dicom(p)
    raise UnsupportedFormat(p)


__all__ = ["read_image", "sniff", "ImageReadError", "UnsupportedFormat"]
