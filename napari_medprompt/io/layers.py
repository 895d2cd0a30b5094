"""Volumes <-> napari layer data (plain tuples and dicts: no napari import here).

The layer keeps the real voxel values (HU for CT); only ``contrast_limits`` carry the window.
``scale`` is the voxel spacing so napari measures in millimetres. ``affine`` (napari's
physical-to-world matrix, applied after the scale) only flips the axes that would otherwise show a
volume the wrong way round, so every 3D volume is displayed radiologically whatever its storage
order (:func:`display_affine`); the data and the file's affine are untouched, so a layer's data
coordinates are still voxel indices. Every layer drawn over the image (segmentation, prompts,
overlays) takes the image layer's ``scale``, ``translate`` and ``affine``. The image geometry travels in
``metadata["medprompt"]`` (JSON-serialisable) so that labels drawn on the layer can be saved with
the same affine, and exported as DICOM SEG for a DICOM series.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from napari_medprompt.imaging.window import contrast_limits, default_preset
from napari_medprompt.io.volume import Volume, radiological_flips

META_KEY = "medprompt"


def volume_metadata(vol: Volume) -> dict[str, Any]:
    """JSON-serialisable geometry and non-identifying description of ``vol``."""
    md: dict[str, Any] = {
        "affine": np.asarray(vol.affine, dtype=float).tolist(),
        "spacing": [float(s) for s in vol.spacing],
        "shape": [int(n) for n in vol.spatial_shape],
        "modality": vol.modality,
        "name": vol.name,
        "source": vol.source,
        "is_rgb": bool(vol.is_rgb),
        "meta": _jsonable({k: v for k, v in vol.meta.items() if k != "dicom_files"}),
        "warnings": list(vol.warnings),
    }
    if "dicom_files" in vol.meta:
        md["dicom_files"] = [str(f) for f in vol.meta["dicom_files"]]
    return md


def display_affine(vol: Volume) -> list[list[float]]:
    """napari ``affine`` for ``vol``'s layers: a homogeneous matrix in data-axis order that mirrors
    the axes :meth:`Volume.radiological_flips` names, each within its own extent (world coordinates
    keep the range ``0 .. (n - 1) * spacing``). Identity for 2D images and correctly oriented volumes."""
    return _flip_matrix(vol.radiological_flips(), vol.spatial_shape, vol.spacing)


def display_affine_of(md: dict) -> np.ndarray:
    """:func:`display_affine` of the image described by a ``medprompt`` metadata dict."""
    shape = tuple(int(n) for n in md.get("shape") or ())
    spacing = tuple(float(s) for s in md.get("spacing") or (1.0,) * len(shape))
    flips = radiological_flips(np.asarray(md["affine"], float)) if len(shape) == 3 else (False,) * len(shape)
    return np.asarray(_flip_matrix(flips, shape, spacing))


def layer_to_image_flips(md: dict, attributes: dict) -> tuple[bool, ...] | None:
    """How a label layer's voxels map onto the voxels of the image ``md`` describes, from where napari
    draws them (the layer's ``scale``, ``translate`` and ``affine`` against the image's display
    transform): ``()`` when they coincide (or the layer carries no transform), the axes to reverse
    when the layer is a mirror of the image grid (a layer napari made in world space), or None when
    it lies on another grid."""
    shape = tuple(int(n) for n in md.get("shape") or ())
    n = len(shape)
    if "affine" not in attributes or n == 0:
        return ()
    lay_aff = np.asarray(attributes["affine"], float)
    for key in ("rotate", "shear"):
        extra = attributes.get(key)
        if extra is not None and not np.allclose(np.asarray(extra, float), np.eye(n) if key == "rotate"
                                                 else np.zeros_like(np.asarray(extra, float))):
            return None
    if lay_aff.shape != (n + 1, n + 1):
        return None
    scale = np.asarray(attributes.get("scale", (1.0,) * n), float)[-n:]
    translate = np.asarray(attributes.get("translate", (0.0,) * n), float)[-n:]
    img = display_affine_of(md)
    spacing = np.asarray(md.get("spacing") or (1.0,) * n, float)[-n:]

    def layer_world(idx):
        return lay_aff[:n, :n] @ (scale * idx + translate) + lay_aff[:n, n]

    def image_index(world):
        return np.linalg.solve(img[:n, :n], world - img[:n, n]) / spacing

    origin = image_index(layer_world(np.zeros(n)))
    flips = []
    for k in range(n):
        step = image_index(layer_world(np.eye(n)[k])) - origin
        if np.allclose(step, np.eye(n)[k], atol=1e-4) and abs(origin[k]) < 1e-3:
            flips.append(False)
        elif np.allclose(step, -np.eye(n)[k], atol=1e-4) and abs(origin[k] - (shape[k] - 1)) < 1e-3:
            flips.append(True)
        else:
            return None
    if not np.allclose(np.delete(origin, [k for k in range(n) if flips[k]]), 0.0, atol=1e-3):
        return None
    return tuple(flips) if any(flips) else ()


def _flip_matrix(flips, shape, spacing) -> list[list[float]]:
    n = len(shape)
    mat = np.eye(n + 1)
    for k, flip in enumerate(flips):
        if flip:
            mat[k, k] = -1.0
            mat[k, n] = (shape[k] - 1) * float(spacing[k])
    return mat.tolist()


def volume_to_layer_data(vol: Volume) -> tuple[np.ndarray, dict, str]:
    """A napari "image" layer tuple for ``vol``."""
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "scale": tuple(float(s) for s in vol.spacing),
        "affine": display_affine(vol),
        "rgb": bool(vol.is_rgb),
        "metadata": {META_KEY: volume_metadata(vol)},
    }
    if not vol.is_rgb:
        kwargs["contrast_limits"] = list(contrast_limits(vol.data, vol.modality))
        photometric = str(vol.meta.get("photometric", "")).upper()
        # MONOCHROME1: higher values are darker; show it the way it was meant to be read.
        kwargs["colormap"] = "gray_r" if photometric == "MONOCHROME1" else "gray"
        kwargs["metadata"][META_KEY]["window_preset"] = default_preset(vol.modality)
    return vol.data, kwargs, "image"


def labels_to_layer_data(vol: Volume, label_info: dict[int, dict] | None = None) -> tuple[np.ndarray, dict, str]:
    """A napari "labels" layer tuple for a label map ``vol`` (names and colours from
    ``label_info``, kept in the metadata so that saving the layer writes them back)."""
    info = {int(k): dict(v) for k, v in (label_info or {}).items()}
    md: dict[str, Any] = {META_KEY: volume_metadata(vol)}
    if info:
        md["label_info"] = _jsonable(info)
        md["label_names"] = {i: str(d["name"]) for i, d in info.items() if "name" in d}
    kwargs: dict[str, Any] = {
        "name": vol.name,
        "scale": tuple(float(s) for s in vol.spacing),
        "affine": display_affine(vol),
        "metadata": md,
        "opacity": 0.5,
    }
    colours = {i: d["color"] for i, d in info.items() if d.get("color") is not None and len(d["color"]) >= 3}
    if colours:
        from napari_medprompt.io.labels_io import default_color

        cmap: dict[Any, tuple] = {None: (0.0, 0.0, 0.0, 0.0)}
        for i in np.unique(vol.data).tolist():
            if i != 0:
                c = colours.get(int(i)) or default_color(int(i))
                cmap[int(i)] = (*(float(v) / 255.0 for v in list(c)[:3]), 1.0)
        kwargs["colormap"] = cmap
    return vol.data, kwargs, "labels"


def volume_from_layer(data, metadata: dict | None, scale=None) -> Volume:
    """Rebuild a :class:`Volume` from layer data and its metadata (inverse of the above).

    ``metadata`` is the layer's metadata dict (holding ``"medprompt"``) or the medprompt dict
    itself. Without it the geometry comes from ``scale`` (identity orientation, origin 0).
    """
    md = dict(metadata or {})
    md = md.get(META_KEY, md) if isinstance(md.get(META_KEY, None), dict) else md
    arr = np.asarray(data)
    if "affine" in md:
        is_rgb = bool(md.get("is_rgb", False)) and arr.ndim >= 3 and arr.shape[-1] in (3, 4)
        spatial = arr.ndim - (1 if is_rgb else 0)
        spacing = tuple(md.get("spacing") or (1.0,) * spatial)
        meta = dict(md.get("meta") or {})
        if md.get("dicom_files"):
            meta["dicom_files"] = list(md["dicom_files"])
        return Volume(
            data=arr,
            spacing=spacing[-spatial:] if len(spacing) >= spatial else (1.0,) * spatial,
            affine=np.asarray(md["affine"], dtype=float),
            modality=md.get("modality", "OT"),
            name=md.get("name", "image"),
            source=md.get("source"),
            is_rgb=is_rgb,
            meta=meta,
            warnings=list(md.get("warnings") or []),
        )
    spatial = arr.ndim
    sc = tuple(float(s) for s in (scale if scale is not None else (1.0,) * spatial))[-spatial:]
    affine = np.eye(4)
    for i, s in enumerate(reversed(sc)):  # affine maps (x, y, z): reversed data order
        affine[i, i] = s
    return Volume(data=arr, spacing=sc, affine=affine, name=str(md.get("name", "image")))


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return str(obj)
