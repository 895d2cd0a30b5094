"""napari reader and writer hooks (npe2 contributions in ``napari.yaml``). No napari import here:
the hooks return and take plain layer tuples/dicts.

- ``get_reader(path)`` returns None for a path no reader of this package recognises (so other
  plugins can try), else a function that returns layer tuples: "image" layers, and "labels"
  layers for label maps (see :func:`~napari_medprompt.io.labels_io.looks_like_label_map`; names
  and colours from the JSON sidecar). A recognised file that cannot
  be read raises :class:`~napari_medprompt.io.errors.ImageReadError` naming the file and the
  problem; napari shows it as an error notification and keeps running. Problems found while reading
  (uneven slices, NaN voxels replaced, skipped localizers) are emitted as Python warnings, which
  napari shows as notifications.
- ``write_labels(path, data, attributes)`` saves a Labels layer as NIfTI + JSON sidecar with the
  geometry of the image it was drawn on: ``attributes["metadata"]["medprompt"]`` when the layer
  carries it, else the one image opened in this session with the same shape and voxel size
  (:mod:`napari_medprompt.io.opened_images`), else the layer's scale alone, with a warning that
  the file will not line up with the image in other tools.
- A save that cannot be done (shape mismatch, a SEG over a non-DICOM or multi-frame image, source
  files gone, ...) raises :class:`LabelSaveError` with the reason. It is an ``OSError``, not a
  ``ValueError``: napari takes a ``ValueError`` from a writer to mean "not my format", drops it and
  reports only "not a valid writer" / "No data written", so the reason would never reach the user.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from napari_medprompt.io import opened_images
from napari_medprompt.io.labels_io import looks_like_label_map, read_sidecar
from napari_medprompt.io.layers import (
    META_KEY,
    labels_to_layer_data,
    layer_to_image_flips,
    volume_from_layer,
    volume_to_layer_data,
)
from napari_medprompt.io.read import read_image, sniff

LayerData = tuple[Any, dict, str]


class LabelSaveError(OSError):
    """A label layer napari asked this plugin to save could not be written; ``str(err)`` names the
    file and the reason (the original :class:`~napari_medprompt.io.errors.LabelWriteError` or
    ``ValueError`` is kept as ``__cause__``). Nothing was written."""


def _reason_shown(writer):
    """Re-raise a writer's ``ValueError`` (LabelWriteError included) as :class:`LabelSaveError`, which
    napari shows to the user instead of swallowing it."""

    @functools.wraps(writer)
    def wrapper(path, data, attributes):
        try:
            return writer(path, data, attributes)
        except ValueError as err:
            msg = str(err)
            raise LabelSaveError(msg if str(path) in msg else f"{path}: {msg}") from err

    return wrapper


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    if not paths or any(sniff(p) is None for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[LayerData]:
    """Read every path into image layer tuples (one per volume / DICOM series)."""
    paths = [path] if isinstance(path, (str, Path)) else list(path)
    out: list[LayerData] = []
    for p in paths:
        for vol in read_image(p):
            for w in vol.warnings:
                warnings.warn(w if str(p) in w else f"{p}: {w}", UserWarning, stacklevel=2)
            if looks_like_label_map(vol):
                info, problems = read_sidecar(vol.source) if vol.source else ({}, [])
                for w in problems:
                    warnings.warn(w, UserWarning, stacklevel=2)
                out.append(labels_to_layer_data(vol, info))
                continue
            layer = volume_to_layer_data(vol)
            opened_images.remember(layer[1]["metadata"][META_KEY])
            out.append(layer)
    return out


def _image_geometry(path, labels_shape, attributes: dict, need_dicom: bool = False) -> dict | None:
    """The ``medprompt`` geometry dict for a label layer: its own, else the single opened image
    that matches its shape and scale (with a warning saying which), else None (warned)."""
    md = (attributes.get("metadata") or {}).get(META_KEY)
    if isinstance(md, dict) and "affine" in md and (md.get("dicom_files") or not need_dicom):
        return md
    found = opened_images.matching(tuple(labels_shape), attributes.get("scale"))
    if need_dicom:
        found = [m for m in found if m.get("dicom_files")]
    if len(found) == 1:
        warnings.warn(
            f"{path}: the label layer {attributes.get('name', '')!r} carries no image geometry; "
            f"saved with the geometry of {found[0].get('name', 'the image')!r} "
            f"({found[0].get('source')}), the one image opened with the same shape and voxel size",
            UserWarning, stacklevel=3)
        return found[0]
    if not need_dicom:
        why = (f"{len(found)} opened images have its shape and voxel size" if found
               else "no opened image has its shape and voxel size")
        warnings.warn(
            f"{path}: the label layer {attributes.get('name', '')!r} carries no image geometry and "
            f"{why}; saved with the layer's scale only (no orientation or origin), so it lines up "
            "with the image in napari but not in other tools", UserWarning, stacklevel=3)
    return None


def _on_image_grid(path, labels, attributes: dict, md: dict | None):
    """``labels`` in the voxel order of the image ``md`` describes. A layer napari made in world space
    (its "new labels" button with no image selected) over a volume shown flipped is the image's grid
    mirrored: it is flipped back (with a warning). A layer on another grid is refused."""
    import numpy as np

    if md is None:
        return labels
    flips = layer_to_image_flips(md, attributes)
    if flips is None:
        from napari_medprompt.io.errors import LabelWriteError

        raise LabelWriteError(
            f"{path}: the label layer {attributes.get('name', '')!r} is not drawn on the voxel grid of "
            f"{md.get('name', 'its image')!r} (moved, rotated or scaled in napari); nothing was written"
        )
    if not flips:
        return labels
    axes = tuple(k for k, f in enumerate(flips) if f)
    warnings.warn(
        f"{path}: the label layer {attributes.get('name', '')!r} was made on napari's world grid, which "
        f"runs the other way along axes {axes} from {md.get('name', 'the image')!r}; it is saved in the "
        "image's own voxel order, so it overlays the image in other tools", UserWarning, stacklevel=3)
    return np.ascontiguousarray(np.flip(labels, axis=axes))


@_reason_shown
def write_labels(path: str, data: Any, attributes: dict) -> list[str]:
    """napari single-layer writer for Labels: NIfTI label map + JSON sidecar (atomic)."""
    from napari_medprompt.io.labels_io import save_label_map, sidecar_path

    import numpy as np

    labels = np.asarray(data)
    metadata = dict(attributes.get("metadata") or {})
    own = metadata.get(META_KEY)
    if isinstance(own, dict) and "affine" in own:
        image_shape = tuple(own.get("shape") or labels.shape)
        if tuple(labels.shape) != image_shape:
            from napari_medprompt.io.errors import LabelWriteError

            raise LabelWriteError(
                f"{path}: label layer shape {tuple(labels.shape)} does not match its image "
                f"{own.get('name', '')!r} of shape {image_shape}; nothing was written"
            )
    md = _image_geometry(path, labels.shape, attributes)
    labels = _on_image_grid(path, labels, attributes, md)
    if md is not None:
        reference = volume_from_layer(labels, {META_KEY: md})
    else:
        reference = volume_from_layer(labels, None, scale=attributes.get("scale"))
    reference.name = attributes.get("name", reference.name)
    p = Path(path)
    if not (p.name.lower().endswith(".nii.gz") or p.name.lower().endswith(".nii")):
        p = p.with_name(p.name + ".nii.gz")
    label_info = _label_info(metadata, attributes)
    save_label_map(p, labels, reference, label_info)
    return [str(p), str(sidecar_path(p))]


def _label_info(metadata: dict, attributes: dict) -> dict[int, dict] | None:
    """Label names/colours from layer metadata ``label_names``/``label_info`` when present."""
    info: dict[int, dict] = {}
    for k, v in (metadata.get("label_info") or {}).items():
        info[int(k)] = dict(v)
    for k, name in (metadata.get("label_names") or {}).items():
        info.setdefault(int(k), {})["name"] = str(name)
    return info or None


@_reason_shown
def write_labels_dicom_seg(path: str, data: Any, attributes: dict) -> list[str]:
    """napari single-layer writer for Labels drawn on a DICOM series: a DICOM SEG referencing it.

    Needs the image's source file list (``attributes["metadata"]["medprompt"]["dicom_files"]``,
    copied from the image layer); raises :class:`LabelSaveError` with the reason otherwise.
    """
    from napari_medprompt.io.dicom_seg import export_dicom_seg
    from napari_medprompt.io.errors import LabelWriteError

    import numpy as np

    metadata = dict(attributes.get("metadata") or {})
    md = _image_geometry(path, np.shape(data), attributes, need_dicom=True) or {}
    files = md.get("dicom_files") or []
    if len(files) < 1:
        raise LabelWriteError(
            f"{path}: DICOM SEG export needs a label layer drawn on an image read from a DICOM "
            "series; save it as NIfTI (.nii.gz) instead"
        )
    p = Path(path)
    if p.suffix.lower() != ".dcm":
        p = p.with_name(p.name + ".dcm")
    labels = _on_image_grid(path, np.asarray(data), attributes, md)
    export_dicom_seg(p, labels, files, _label_info(metadata, attributes),
                     series_description=f"{attributes.get('name', 'labels')} (MedPrompt)")
    return [str(p)]
