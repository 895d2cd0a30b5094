"""Restoring a session from its folder (with image checks) and exporting its label map as NIfTI."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.session.objects import SegObject
from napari_medprompt.session.store import SessionCorruptError, SessionMismatchError, SessionStore


def load_session(cls, folder, *, image_key=None, shape=None, reference=None, autosave=True):
    """Build ``cls`` (an AnnotationSession) from ``folder``.

    With ``image_key`` and/or ``shape`` given, a session saved for another image is refused with a
    :class:`SessionMismatchError` that says which image it belongs to; nothing is changed on disk.
    """
    folder = Path(folder)
    store = SessionStore(folder)
    manifest, labels = store.read()
    image = manifest.get("image") or {}
    try:
        saved_shape = tuple(int(s) for s in image["shape"])
        spacing = tuple(float(s) for s in image["spacing"])
        saved_key = str(image["key"])
    except (KeyError, TypeError, ValueError) as err:
        raise SessionCorruptError(f"{store.manifest_path}: image section missing or malformed ({err})", folder) from err
    if saved_shape != labels.shape:
        raise SessionCorruptError(
            f"{store.manifest_path}: label map {labels.shape} does not match the image shape {saved_shape}", folder
        )
    name = image.get("name", "image")
    if shape is not None and tuple(int(s) for s in shape) != saved_shape:
        raise SessionMismatchError(
            f"The session in {folder} was saved for image '{name}' of shape {saved_shape}, but the open "
            f"image has shape {tuple(int(s) for s in shape)}. It was not restored and nothing was "
            "changed; open the matching image or start a new session.",
            folder,
        )
    if image_key is not None and str(image_key) != saved_key:
        raise SessionMismatchError(
            f"The session in {folder} belongs to another image ('{name}', key {saved_key}); the open "
            f"image has key {image_key}. It was not restored and nothing was changed; open the "
            "matching image or start a new session.",
            folder,
        )
    session = cls(saved_shape, spacing, image_key=saved_key, image_name=name, folder=None,
                  autosave=autosave, reference=reference, labels=labels)
    try:
        objects = [SegObject.from_dict(d) for d in manifest.get("objects", [])]
    except (KeyError, TypeError, ValueError) as err:
        raise SessionCorruptError(f"{store.manifest_path}: object records malformed ({err})", folder) from err
    session.objects = {o.id: o for o in objects}
    session.created = manifest.get("created", session.created)
    session.uid = str(manifest.get("session_id") or session.uid)
    # the folder is bound without rewriting it: everything loaded is already on disk
    session.folder = folder
    session._store = store
    session._dirty = set()
    store.remove_unreferenced()  # leftovers of an interrupted save
    return session


def _reference_geometry(session) -> Any:
    from napari_medprompt.io.volume import Volume

    z, y, x = session.spacing
    affine = np.diag([x, y, z, 1.0])
    data = np.broadcast_to(np.zeros((), dtype=np.uint8), session.shape)  # geometry only, no memory
    return Volume(data=data, spacing=session.spacing, affine=affine, name=session.image_name)


def export_nifti(session, path: str | Path, reference: Any = None) -> Path:
    """Write ``session.labels`` as NIfTI + JSON sidecar through io.labels_io.save_label_map."""
    from napari_medprompt.io.labels_io import save_label_map

    ref = reference if reference is not None else session.reference
    if ref is None:
        ref = _reference_geometry(session)
    return save_label_map(path, session.labels, ref, export_label_info(session))


def export_label_info(session) -> dict[int, dict[str, Any]]:
    """Sidecar entries: name, colour (0-255), how the mask was made and its review state."""
    info: dict[int, dict[str, Any]] = {}
    for oid, obj in sorted(session.objects.items()):
        prov = {k: v for k, v in obj.provenance.items() if k != "log"}
        counts: dict[str, int] = {}
        for status in obj.slice_status.values():
            counts[status] = counts.get(status, 0) + 1
        info[oid] = {
            "name": obj.display_name,
            "color": [int(round(255 * float(c))) for c in obj.color[:3]],
            "locked": obj.locked,
            "provenance": prov,
            "slice_status_counts": counts,
            "accepted_slices": obj.slices_with("accepted"),
        }
    return info
