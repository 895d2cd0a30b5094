"""DICOM series reading with pydicom (compressed pixel data through pylibjpeg's decoders).

- A folder (searched recursively) or any one file of a series can be given; every image series
  found opens as its own :class:`Volume` (a file opens the series it belongs to).
- Slices are ordered by their position along the slice normal (ImagePositionPatient projected on
  the cross product of the ImageOrientationPatient row and column directions), never by file name
  or instance number. The affine comes from the same two attributes (LPS converted to RAS).
- Rescale slope/intercept are applied (CT in HU); integer data stay integer when the rescale allows.
- Uneven steps, gaps (missing slices) and duplicate positions are reported in ``Volume.warnings``.
- Localizers (ImageType LOCALIZER, or an orientation different from the rest of the series) and
  non-image objects (SEG, RTSTRUCT, SR, no pixel data ...) are skipped.
- Single-image series without a 3D position (CR/DX radiographs) are read by
  :mod:`napari_medprompt.io.dicom_2d`; enhanced multi-frame files (one volume per file) by
  :mod:`napari_medprompt.io.dicom_multiframe`. Files without the Part 10 preamble are accepted
  when they are named .dcm/.dicom/.ima and hold image attributes.
- Only whitelisted, non-identifying attributes go into ``Volume.meta``; the source file list goes
  into ``meta["dicom_files"]`` (in slice order) for DICOM SEG export.
"""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from napari_medprompt.io._dicom_common import (
    decode_pixels,
    native_pixels,
    is_dicom_file,
    is_localizer,
    non_image_reason,
    pixel_spacing,
    read_dataset,
    rescale_params,
    safe_meta,
)
from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
_DECODE_THREADS = min(4, os.cpu_count() or 1)


@dataclass
class _Image:
    path: Path
    ds: object  # pydicom Dataset, pixel data deferred


def list_dicom_files(folder: str | Path) -> list[Path]:
    """DICOM Part 10 files under ``folder`` (recursively), sorted by path."""
    out = []
    for root, _dirs, files in os.walk(folder):
        for name in files:
            p = Path(root) / name
            if is_dicom_file(p) or p.suffix.lower() in (".dcm", ".dicom", ".ima"):
                out.append(p)
    return sorted(out)


def read_dicom(path: str | Path) -> list[Volume]:
    """Every image series in a folder, or the series of one file (see module docstring)."""
    path = Path(path)
    if path.is_dir():
        files = list_dicom_files(path)
        if not files:
            raise ImageReadError(path, "the folder contains no DICOM files")
        wanted_series = None
    else:
        first = read_dataset(path, defer_size="64 KB")
        reason = non_image_reason(first)
        if reason:
            raise ImageReadError(path, f"this DICOM file holds no image to show ({reason})")
        wanted_series = _series_key(first)
        nframes = int(first.get("NumberOfFrames", 1) or 1)
        if "ImagePositionPatient" not in first or nframes > 1:
            from napari_medprompt.io.dicom_2d import read_dicom_2d

            return [read_dicom_2d(path)]
        files = list_dicom_files(path.parent)
        if path not in files:
            files.insert(0, path)
    images, skipped = _scan(files, wanted_series)
    if not images:
        what = f"; skipped: {_summary(skipped)}" if skipped else ""
        raise ImageReadError(path, f"no DICOM image series found{what}")
    volumes = []
    for group in _group_by_series(images).values():
        if any(int(im.ds.get("NumberOfFrames", 1) or 1) > 1 for im in group):
            from napari_medprompt.io.dicom_2d import read_dicom_2d

            volumes.extend(read_dicom_2d(im.path, ds=im.ds) for im in group)  # one per file
        else:
            volumes.append(_read_group(group, path))
    volumes.sort(key=lambda v: (v.meta.get("series_number", 0), v.name))
    if skipped:
        note = f"{path}: skipped {len(skipped)} non-image/localizer/unreadable object(s): {_summary(skipped)}"
        for v in volumes:
            v.warnings.append(note)
    return volumes


def _summary(skipped: list[str], limit: int = 8) -> str:
    kinds = sorted(set(skipped))
    more = f", ... ({len(kinds) - limit} more)" if len(kinds) > limit else ""
    return ", ".join(kinds[:limit]) + more


def _scan(files: list[Path], wanted_series: str | None) -> tuple[list[_Image], list[str]]:
    images, skipped = [], []
    for p in files:
        try:
            # A folder is read in one pass (pixel bytes included); a single file's neighbours
            # defer their pixel data until their series is known to be the one wanted.
            ds = read_dataset(p, defer_size="64 KB" if wanted_series is not None else None)
        except ImageReadError:
            if len(files) > 1:  # a broken neighbour never hides the readable images
                skipped.append(f"unreadable file {p.name}")
                continue
            raise
        if wanted_series is not None and _series_key(ds) != wanted_series:
            continue
        reason = non_image_reason(ds)
        if reason:
            skipped.append(f"{reason} ({p.name})" if reason.startswith("corrupt") else reason)
            continue
        if is_localizer(ds):
            skipped.append("localizer")
            continue
        images.append(_Image(p, ds))
    return images, skipped


def _group_by_series(images: list[_Image]) -> dict[tuple, list[_Image]]:
    groups: dict[tuple, list[_Image]] = defaultdict(list)
    for im in images:
        groups[_series_key(im.ds)].append(im)
    return groups


def _series_key(ds) -> tuple:
    """SeriesInstanceUID; for anonymised files without one, the series number/description."""
    uid = str(ds.get("SeriesInstanceUID", "") or "")
    if uid:
        return (uid,)
    return ("", str(ds.get("StudyInstanceUID", "") or ""), str(ds.get("SeriesNumber", "") or ""),
            str(ds.get("SeriesDescription", "") or ""), str(ds.get("Modality", "") or ""))


def _orientation_key(ds) -> tuple | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    return tuple(np.round(np.asarray(iop, dtype=float), 3))


def _read_group(group: list[_Image], given: Path) -> Volume:
    """One series: drop odd-orientation images, order along the normal, stack, rescale."""
    warnings: list[str] = []
    first = group[0].ds
    series_label = _series_label(first)
    no_geometry = [im for im in group if "ImagePositionPatient" not in im.ds or _orientation_key(im.ds) is None]
    if len(group) == 1 or len(no_geometry) == len(group):
        if len(group) == 1:
            from napari_medprompt.io.dicom_2d import read_dicom_2d

            return read_dicom_2d(group[0].path, ds=group[0].ds)
        group = sorted(group, key=lambda im: int(im.ds.get("InstanceNumber", 0) or 0))
        return _stack_without_geometry(group, given, series_label)
    group = [im for im in group if im not in no_geometry]
    # Majority orientation and matrix size; the rest are localizers / reformats of the series.
    keys = [(_orientation_key(im.ds), int(im.ds.Rows), int(im.ds.Columns)) for im in group]
    counts: dict = defaultdict(int)
    for k in keys:
        counts[k] += 1
    main = max(counts, key=counts.get)
    n_odd = len(group) - counts[main]
    if n_odd or no_geometry:
        warnings.append(
            f"{series_label}: skipped {n_odd + len(no_geometry)} image(s) with a different "
            "orientation/size or no position (localizers)"
        )
    group = [im for im, k in zip(group, keys) if k == main]
    iop = np.asarray(group[0].ds.ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(im.ds.ImagePositionPatient, dtype=float) for im in group])
    along = positions @ normal
    order = np.argsort(along, kind="stable")
    group = [group[i] for i in order]
    positions, along = positions[order], along[order]
    group, positions, along = _drop_duplicates(group, positions, along, series_label, warnings)
    n = len(group)
    ps = pixel_spacing(group[0].ds)
    if ps is None:
        warnings.append(f"{series_label}: no PixelSpacing; assuming 1 mm pixels")
        ps = (1.0, 1.0)
    row_sp, col_sp = ps
    if n > 1:
        step_vec = (positions[-1] - positions[0]) / (n - 1)
        steps = np.diff(along)
        dz = float(np.median(steps))
        _check_spacing(steps, along, dz, series_label, warnings)
    else:
        dz = float(group[0].ds.get("SpacingBetweenSlices", 0) or group[0].ds.get("SliceThickness", 1) or 1)
        step_vec = normal * dz
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_sp  # x index (column) moves along the row direction
    lps[:3, 1] = col_dir * row_sp  # y index (row) moves along the column direction
    lps[:3, 2] = step_vec
    lps[:3, 3] = positions[0]
    affine = LPS_TO_RAS @ lps
    tilt = np.degrees(np.arccos(np.clip(abs(step_vec @ normal) / max(np.linalg.norm(step_vec), 1e-9), -1, 1)))
    if tilt > 0.5:
        warnings.append(f"{series_label}: slices are sheared by {tilt:.1f} degrees (gantry tilt); "
                        "the affine keeps the true positions")
    data = _stack_pixels(group, given)
    data = _apply_rescale(data, group, series_label, warnings)
    meta = safe_meta(first)
    meta["n_slices"] = n
    meta["dicom_files"] = [str(im.path) for im in group]
    spacing = (float(np.linalg.norm(step_vec)) if n > 1 else dz, row_sp, col_sp)
    return _with_modality(Volume(
        data=data,
        spacing=spacing,
        affine=affine,
        modality=str(first.get("Modality", "OT") or "OT"),
        name=series_label,
        source=str(given),
        meta=meta,
        warnings=warnings,
    ), first)


def _with_modality(vol: Volume, ds) -> Volume:
    """A series without a usable Modality tag ("OT" or none): infer it from its other tags, else
    from the voxels (:mod:`napari_medprompt.io.modality`), marked as inferred."""
    from napari_medprompt.io.modality import apply_inference

    return apply_inference(vol, ds=ds)


def _series_label(ds) -> str:
    desc = str(ds.get("SeriesDescription", "") or "").strip()
    num = ds.get("SeriesNumber")
    mod = str(ds.get("Modality", "") or "DICOM")
    label = desc or mod
    return f"{label} #{num}" if num not in (None, "") else label


def _drop_duplicates(group, positions, along, label, warnings):
    if len(group) < 2:
        return group, positions, along
    keep = np.ones(len(group), bool)
    keep[1:] = np.abs(np.diff(along)) > 1e-3
    if not keep.all():
        warnings.append(
            f"{label}: {int((~keep).sum())} image(s) share a slice position with another image "
            "(several acquisitions/echoes?); only the first at each position is shown"
        )
        group = [g for g, k in zip(group, keep) if k]
        positions, along = positions[keep], along[keep]
    return group, positions, along


def _check_spacing(steps, along, dz, label, warnings) -> None:
    tol = max(0.02 * dz, 0.01)
    gaps = np.nonzero(steps > 1.5 * dz)[0]
    for i in gaps:
        missing = int(round(steps[i] / dz)) - 1
        warnings.append(
            f"{label}: gap of {steps[i]:.2f} mm between slices at {along[i]:.2f} and "
            f"{along[i + 1]:.2f} mm (about {missing} slice(s) missing; usual step {dz:.2f} mm)"
        )
    uneven = np.abs(steps - dz) > tol
    uneven[gaps] = False
    if uneven.any():
        warnings.append(
            f"{label}: uneven slice spacing, steps from {steps.min():.3f} to {steps.max():.3f} mm "
            f"(median {dz:.3f} mm); distances along the slice axis are approximate"
        )


def _stack_pixels(group: list[_Image], given: Path) -> np.ndarray:
    first = decode_pixels(group[0].ds, group[0].path)
    if first.ndim != 2:
        raise ImageReadError(group[0].path, f"expected a single-frame greyscale slice, got shape {first.shape}")
    out = np.empty((len(group), *first.shape), dtype=first.dtype)
    out[0] = first
    group[0].ds.PixelData = None  # drop the bytes once decoded

    def fill(i: int) -> None:
        im = group[i]
        px = native_pixels(im.ds)
        if px is None:
            px = decode_pixels(im.ds, im.path)
        if px.shape != first.shape:
            raise ImageReadError(im.path, f"slice of shape {px.shape} in a series of {first.shape} slices")
        out[i] = px
        im.ds.PixelData = None

    compressed = group[0].ds.file_meta.TransferSyntaxUID.is_compressed
    if compressed and len(group) > 4 and _DECODE_THREADS > 1:
        with ThreadPoolExecutor(_DECODE_THREADS) as ex:
            list(ex.map(fill, range(1, len(group))))
    else:
        for i in range(1, len(group)):
            fill(i)
    return out


def _apply_rescale(data: np.ndarray, group, label, warnings) -> np.ndarray:
    params = np.array([rescale_params(im.ds) for im in group])
    slopes, inters = params[:, 0], params[:, 1]
    uniform = np.all(slopes == slopes[0]) and np.all(inters == inters[0])
    if uniform:
        slope, inter = float(slopes[0]), float(inters[0])
        if slope == 1.0 and inter == 0.0:
            return data
        if slope == 1.0 and inter.is_integer() and data.dtype.kind in "iu":
            return _add_integer_offset(data, int(inter))
        if slope.is_integer() and inter.is_integer() and data.dtype.kind in "iu":
            lo, hi = int(data.min()) * int(slope) + int(inter), int(data.max()) * int(slope) + int(inter)
            dt = np.int16 if -32768 <= min(lo, hi) and max(lo, hi) <= 32767 else np.int32
            out = data.astype(dt)
            out *= dt(int(slope))
            out += dt(int(inter))
            return out
    out = data.astype(np.float32)
    out *= slopes.astype(np.float32)[:, None, None]
    out += inters.astype(np.float32)[:, None, None]
    return out


def _add_integer_offset(data: np.ndarray, inter: int) -> np.ndarray:
    """data + inter in the smallest signed type that holds the result, in place when possible."""
    lo, hi = int(data.min()) + inter, int(data.max()) + inter
    fits16 = -32768 <= lo and hi <= 32767
    if data.dtype == np.int16 and fits16:
        data += np.int16(inter)
        return data
    if data.dtype == np.uint16 and fits16 and int(data.max()) <= 32767:
        out = data.view(np.int16)  # same bits for values below 2**15; no copy
        out += np.int16(inter)
        return out
    dt = np.int16 if fits16 else np.int32
    out = data.astype(dt)
    out += dt(inter)
    return out


def _stack_without_geometry(group: list[_Image], given: Path, label: str) -> Volume:
    data = _stack_pixels(group, given)
    warnings = [f"{label}: no ImagePositionPatient/ImageOrientationPatient; slices ordered by "
                "InstanceNumber and the slice spacing is unknown (1 mm assumed)"]
    data = _apply_rescale(data, group, label, warnings)
    ps = pixel_spacing(group[0].ds) or (1.0, 1.0)
    meta = safe_meta(group[0].ds)
    meta["n_slices"] = len(group)
    meta["dicom_files"] = [str(im.path) for im in group]
    affine = np.diag([ps[1], ps[0], 1.0, 1.0])
    return _with_modality(Volume(data=data, spacing=(1.0, ps[0], ps[1]), affine=affine,
                          modality=str(group[0].ds.get("Modality", "OT") or "OT"), name=label,
                          source=str(given), meta=meta, warnings=warnings), group[0].ds)
