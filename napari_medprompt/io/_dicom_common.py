"""Shared DICOM helpers: file sniffing, non-image detection, pixel decoding with clear errors, and
the whitelist of descriptive (non-identifying) fields copied into ``Volume.meta``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.io.errors import ImageReadError

# SOP classes that hold no image to show (segmentations, structure sets, reports, presentation
# states, key objects, raw data, waveforms ...). Anything without Pixel Data is skipped as well.
NON_IMAGE_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation (SEG)",
    "1.2.840.10008.5.1.4.1.1.481.3": "RT Structure Set",
    "1.2.840.10008.5.1.4.1.1.481.5": "RT Plan",
    "1.2.840.10008.5.1.4.1.1.481.2": "RT Dose",
    "1.2.840.10008.5.1.4.1.1.11.1": "Presentation State",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF",
}

# Descriptive attributes that identify neither patient nor institution (PS3.15 Basic Profile keeps
# or does not list them). Everything else stays out of Volume.meta.
SAFE_FIELDS = {
    "Modality": "modality",
    "SeriesDescription": "series_description",
    "SeriesNumber": "series_number",
    "BodyPartExamined": "body_part",
    "Manufacturer": "manufacturer",
    "ManufacturerModelName": "model",
    "KVP": "kvp",
    "SliceThickness": "slice_thickness",
    "ConvolutionKernel": "convolution_kernel",
    "ImageType": "image_type",
    "PhotometricInterpretation": "photometric",
    "MagneticFieldStrength": "field_strength",
    "SequenceName": "sequence_name",
    "RepetitionTime": "repetition_time",
    "EchoTime": "echo_time",
    "ContrastBolusAgent": "contrast_agent",
    "ViewPosition": "view_position",
    "WindowCenter": "window_center",
    "WindowWidth": "window_width",
    "BitsStored": "bits_stored",
}

TRANSFER_SYNTAX_HINT = (
    "install the decoders with `pip install pylibjpeg pylibjpeg-openjpeg pylibjpeg-libjpeg` "
    "(or python-gdcm) for compressed DICOM"
)


def is_dicom_file(path: str | Path) -> bool:
    """True for a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def non_image_reason(ds) -> str | None:
    """Why ``ds`` holds no image to show, or None when it is an image."""
    sop = str(ds.get("SOPClassUID", ""))
    has_pixels = "PixelData" in ds or "FloatPixelData" in ds or "DoubleFloatPixelData" in ds
    if not sop and not has_pixels and "Modality" not in ds:
        return "corrupt or incomplete header: no SOP class, modality or pixel data could be read"
    if sop in NON_IMAGE_SOP_CLASSES:
        return NON_IMAGE_SOP_CLASSES[sop]
    if str(ds.get("Modality", "")).upper() in ("SEG", "RTSTRUCT", "SR", "PR", "KO", "RTPLAN", "DOC"):
        return f"{ds.Modality} object"
    if not has_pixels:
        return "no pixel data"
    return None


def is_localizer(ds) -> bool:
    return any("LOCALIZER" in str(v).upper() for v in (ds.get("ImageType") or []))


def safe_meta(ds) -> dict[str, Any]:
    """The whitelisted descriptive fields of ``ds`` as JSON-friendly values."""
    out: dict[str, Any] = {}
    for keyword, key in SAFE_FIELDS.items():
        if keyword not in ds:
            continue
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        out[key] = _jsonable(value)
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is not None:
        out["transfer_syntax"] = f"{ts.name} ({ts})"
    return out


def _jsonable(value):
    from pydicom.multival import MultiValue
    from pydicom.valuerep import DSfloat, IS

    if isinstance(value, (MultiValue, list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (DSfloat, float)):
        return float(value)
    if isinstance(value, (IS, int)):
        return int(value)
    return str(value)


_NATIVE_LE = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")


def native_pixels(ds) -> np.ndarray | None:
    """Uncompressed little-endian single-frame greyscale pixels as a zero-copy view, or None.

    Gives exactly what pydicom's native decoder returns for these data (same dtype from Bits
    Allocated / Pixel Representation, no bit masking) without its per-call set-up, which costs
    more than the copy itself on a 512x512 slice. Anything else goes through ``ds.pixel_array``.
    """
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts not in _NATIVE_LE:
        return None
    try:
        bits = int(ds.BitsAllocated)
        rows, cols = int(ds.Rows), int(ds.Columns)
        signed = int(ds.PixelRepresentation) == 1
        stored = int(ds.get("BitsStored", bits) or bits)
        spp = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        buf = ds.PixelData
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if bits not in (8, 16, 32) or spp != 1 or frames != 1 or (signed and stored != bits):
        return None
    n = rows * cols
    if buf is None or len(buf) < n * bits // 8:
        return None
    dtype = np.dtype(f"<{'i' if signed else 'u'}{bits // 8}")
    return np.frombuffer(buf, dtype=dtype, count=n).reshape(rows, cols)


def decode_pixels(ds, path) -> np.ndarray:
    """``ds.pixel_array`` with the failures turned into :class:`ImageReadError` naming the file."""
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as e:
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        ts_desc = f"{ts.name} ({ts})" if ts is not None else "unknown"
        if "decode" in str(e).lower() or "handler" in str(e).lower() or "plugin" in str(e).lower():
            raise ImageReadError(
                path,
                f"pixel data use transfer syntax {ts_desc}, which no installed decoder supports; "
                f"{TRANSFER_SYNTAX_HINT}",
            ) from e
        raise ImageReadError(path, f"pixel data cannot be decoded ({e})") from e
    except Exception as e:  # truncated pixel data, bad encapsulation, inconsistent header ...
        raise ImageReadError(path, f"pixel data cannot be decoded: {e}") from e


def read_dataset(path, stop_before_pixels: bool = False, defer_size: str | None = None):
    """``pydicom.dcmread`` with errors turned into :class:`ImageReadError`.

    A file without the Part 10 preamble and file meta (older "raw" DICOM, typically named .dcm)
    is read with ``force=True`` and accepted when it has image attributes; its transfer syntax is
    set from the encoding pydicom detected.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    kw = dict(stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    try:
        return pydicom.dcmread(str(path), **kw)
    except FileNotFoundError:
        raise
    except InvalidDicomError as e:
        try:
            ds = pydicom.dcmread(str(path), force=True, **kw)
        except Exception:
            ds = None
        if ds is None or "Rows" not in ds or "Columns" not in ds:
            raise ImageReadError(path, f"not a readable DICOM file ({e})") from e
        _set_transfer_syntax(ds)
        return ds
    except Exception as e:  # EOFError, struct errors on a corrupt header ...
        raise ImageReadError(path, f"not a readable DICOM file ({type(e).__name__}: {e})") from e


def _set_transfer_syntax(ds) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if "TransferSyntaxUID" in meta:
        return
    implicit, little = ds.original_encoding
    meta.TransferSyntaxUID = (
        ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    )


def rescale_params(ds) -> tuple[float, float]:
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    inter = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return slope, inter


def pixel_spacing(ds) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm from PixelSpacing, else ImagerPixelSpacing."""
    for kw in ("PixelSpacing", "ImagerPixelSpacing"):
        v = ds.get(kw)
        if v is not None and len(v) == 2:
            try:
                r, c = float(v[0]), float(v[1])
            except (TypeError, ValueError):
                continue
            if r > 0 and c > 0:
                return r, c
    return None
