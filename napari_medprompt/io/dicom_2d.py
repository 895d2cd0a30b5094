"""Single DICOM images: CR/DX radiographs, secondary captures, JPEG-compressed pixel data.

Values are kept as stored after the modality LUT (rescale slope/intercept). MONOCHROME1 images
(where a higher value is darker) are *not* inverted: the photometric interpretation goes into
``meta["photometric"]`` and :func:`napari_medprompt.io.layers.volume_to_layer_data` shows them with
an inverted grey colormap. Colour images (RGB / YBR) become RGB ``[y, x, 3]`` arrays with
``is_rgb`` set. Multi-frame files become a (frame, y, x) stack with a warning when they carry no
per-frame geometry.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medprompt.io._dicom_common import (
    decode_pixels,
    non_image_reason,
    pixel_spacing,
    read_dataset,
    rescale_params,
    safe_meta,
)
from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume


def read_dicom_2d(path: str | Path, ds=None) -> Volume:
    """Read one DICOM file as a 2D image (or a frame stack for multi-frame files)."""
    path = Path(path)
    if ds is None:
        ds = read_dataset(path)
    reason = non_image_reason(ds)
    if reason:
        raise ImageReadError(path, f"this DICOM file holds no image to show ({reason})")
    from napari_medprompt.io.dicom_multiframe import has_frame_geometry, read_dicom_multiframe

    if has_frame_geometry(ds):
        return read_dicom_multiframe(path, ds)
    px = decode_pixels(ds, path)
    warnings: list[str] = []
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    spp = int(ds.get("SamplesPerPixel", 1) or 1)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    is_rgb = spp > 1
    # pydicom converts YBR_* colour data to RGB itself (its default), so RGB is what arrives here.
    if not is_rgb:
        slope, inter = rescale_params(ds)
        if slope != 1.0 or inter != 0.0:
            if float(slope).is_integer() and float(inter).is_integer():
                px = px.astype(np.int32) * int(slope) + int(inter)
            else:
                px = px.astype(np.float32) * np.float32(slope) + np.float32(inter)
    ps = pixel_spacing(ds)
    if ps is None:
        warnings.append(f"{path}: no PixelSpacing/ImagerPixelSpacing; distances are in pixels")
        ps = (1.0, 1.0)
    meta = safe_meta(ds)
    meta["photometric"] = photometric
    if "PixelSpacing" not in ds and "ImagerPixelSpacing" in ds:
        meta["spacing_source"] = "ImagerPixelSpacing (at the detector, not corrected for magnification)"
    meta["dicom_files"] = [str(path)]
    spatial = px.ndim - (1 if is_rgb else 0)
    if nframes > 1 and spatial == 3:
        warnings.append(f"{path}: multi-frame image of {nframes} frames shown as a stack; "
                        "the frame spacing is unknown (1 mm assumed)")
        spacing = (1.0, ps[0], ps[1])
        affine = np.diag([ps[1], ps[0], 1.0, 1.0])
    elif spatial == 2:
        spacing = (ps[0], ps[1])
        affine = np.diag([ps[1], ps[0], 1.0, 1.0])
    else:
        raise ImageReadError(path, f"unexpected pixel array of shape {px.shape}")
    return Volume(
        data=px,
        spacing=spacing,
        affine=affine,
        modality=str(ds.get("Modality", "OT") or "OT"),
        name=str(ds.get("SeriesDescription", "") or path.stem),
        source=str(path),
        is_rgb=is_rgb,
        meta=meta,
        warnings=warnings,
    )
