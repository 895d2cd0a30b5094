"""Restoring a session from its folder (with image checks) and exporting its label map as NIfTI.

A *partial* restore (``partial=True``) restores every slice that verifies: a damaged pack or a
damaged ``session.json`` (the backup copy is used) costs only what is damaged. The damaged files are
copied into ``<folder>/damaged-<UTC time>/`` before anything is rewritten, the statuses of the lost
slices are dropped (a status never describes voxels that are not there) and
``session.restore_report`` (:class:`RestoreReport`) says what was and was not restored. Decisions made
in a coronal or sagittal plane (``plane_status``) are kept; the report names the objects whose plane
slices cross lost slices.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.session.objects import SegObject, check_class, default_color
from napari_medprompt.session.store import (
    MANIFEST,
    MANIFEST_BACKUP,
    SLICE_DIR,
    SessionCorruptError,
    SessionMismatchError,
    SessionStore,
)


def _spans(zs) -> str:
    """``[3, 4, 5, 9]`` -> ``"3-5, 9"``."""
    zs = sorted(int(z) for z in zs)
    out: list[str] = []
    for z in zs:
        if out and z == int(out[-1].split("-")[-1]) + 1:
            out[-1] = f"{out[-1].split('-')[0]}-{z}"
        else:
            out.append(str(z))
    return ", ".join(out)


@dataclass
class RestoreReport:
    """What a partial restore could and could not bring back."""

    folder: Path
    restored_slices: int = 0
    damaged_slices: dict[int, str] = field(default_factory=dict)  # slice -> reason
    objects_hit: dict[str, list[int]] = field(default_factory=dict)  # object name -> its lost slices
    planes_hit: list[str] = field(default_factory=list)  # hit objects with coronal / sagittal decisions
    manifest_problem: str | None = None  # session.json was damaged; the backup copy was used
    bad_objects: list[str] = field(default_factory=list)  # object records that could not be read
    bad_plane_records: list[str] = field(default_factory=list)  # objects whose damaged plane entries were dropped
    kept_in: Path | None = None  # where the damaged originals were copied
    objects: int | None = None  # objects restored
    keep_error: str | None = None

    @property
    def complete(self) -> bool:
        return (not self.damaged_slices and self.manifest_problem is None and not self.bad_objects
                and not self.bad_plane_records)

    def message(self) -> str:
        """A warning for the user: what was restored, what was not, where the originals are."""
        if self.complete:
            return f"Restored the session from {self.folder} ({self.restored_slices} slices)."
        parts = [f"The session in {self.folder} was damaged; restored {self.restored_slices} of "
                 f"{self.restored_slices + len(self.damaged_slices)} slices and "
                 f"{self.objects if self.objects is not None else '?'} object(s)."]
        if self.manifest_problem:
            parts.append(f"session.json was unreadable ({self.manifest_problem}); its backup copy was used.")
        if self.bad_objects:
            parts.append(f"Unreadable object record(s): {'; '.join(self.bad_objects)}; their voxels are "
                         "kept under placeholder objects.")
        if self.bad_plane_records:
            parts.append(f"Unreadable coronal / sagittal decisions were dropped for {'; '.join(self.bad_plane_records)}; "
                         "the objects, their voxels and their other decisions were restored (review those "
                         "plane slices again).")
        if self.damaged_slices:
            parts.append(f"Not restored: slice(s) {_spans(self.damaged_slices)}.")
            hit = "; ".join(f"'{n}' slice(s) {_spans(zs)}" for n, zs in sorted(self.objects_hit.items()))
            if hit:
                parts.append(f"Objects affected: {hit}.")
            if self.planes_hit:
                parts.append(f"The coronal / sagittal slices decided for {', '.join(repr(n) for n in self.planes_hit)} "
                             "cross the lost slices: their decisions are kept, but their voxels on those "
                             "slices are gone (check them there).")
            first = next(iter(sorted(self.damaged_slices.items())))
            parts.append(f"(slice {first[0]}: {first[1]})")
        if self.kept_in is not None:
            parts.append(f"The damaged originals are kept in {self.kept_in}.")
        elif self.keep_error:
            parts.append(f"The damaged originals could not be copied aside ({self.keep_error}); they "
                         "were left in place untouched.")
        return " ".join(parts)


def _keep_damaged(store: SessionStore, report: RestoreReport) -> None:
    """Copy the damaged files (and both manifests) into ``damaged-<UTC time>/`` of the folder."""
    folder = store.folder
    dest = folder / datetime.now(timezone.utc).strftime("damaged-%Y%m%dT%H%M%S%f")
    try:
        (dest / SLICE_DIR).mkdir(parents=True)
        for name in (MANIFEST, MANIFEST_BACKUP):
            if (folder / name).is_file():
                shutil.copy2(folder / name, dest / name)
        for name in store.damage["packs"]:
            if (folder / SLICE_DIR / name).is_file():
                shutil.copy2(folder / SLICE_DIR / name, dest / SLICE_DIR / name)
        report.kept_in = dest
    except OSError as err:
        report.keep_error = err.strerror or str(err)


def load_session(cls, folder, *, image_key=None, shape=None, reference=None, autosave=True,
                 partial=False):
    """Build ``cls`` (an AnnotationSession) from ``folder``.

    With ``image_key`` (one key or a sequence of accepted keys) and/or ``shape`` given, a session
    saved for another image is refused with a :class:`SessionMismatchError` that says which image it
    belongs to; nothing is changed on disk. ``partial``: see the module docstring.
    """
    folder = Path(folder)
    store = SessionStore(folder)
    manifest, labels = store.read(partial=partial)
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
    keys = [str(image_key)] if isinstance(image_key, (str, Path)) else [str(k) for k in (image_key or ())]
    if image_key is not None and saved_key not in keys:
        raise SessionMismatchError(
            f"The session in {folder} belongs to another image ('{name}', key {saved_key}); the open "
            f"image has key {keys[0] if keys else '?'}. It was not restored and nothing was changed; open the "
            "matching image or start a new session.",
            folder,
        )
    session = cls(saved_shape, spacing, image_key=saved_key, image_name=name, folder=None,
                  autosave=autosave, reference=reference, labels=labels)
    objects, bad_records, bad_planes = [], [], []
    for i, d in enumerate(manifest.get("objects", [])):
        try:
            objects.append(SegObject.from_dict(d))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            if not partial:
                raise SessionCorruptError(f"{store.manifest_path}: object records malformed ({err})", folder) from err
            dropped: list[str] = []
            try:  # only its coronal / sagittal records damaged: keep the object, drop those entries
                obj = SegObject.from_dict(d, dropped=dropped)
            except (KeyError, TypeError, ValueError, AttributeError):
                bad_records.append(f"record {i + 1} ({err})")
                continue
            objects.append(obj)
            bad_planes.append(f"'{obj.display_name}' ({'; '.join(dropped)})")
    session.objects = {o.id: o for o in objects}
    if bad_records:  # voxels whose object record was lost stay, under a placeholder object
        for oid in sorted(set(np.unique(labels).tolist()) - {0} - set(session.objects)):
            session.objects[oid] = SegObject(oid, f"object {oid} (record damaged)", default_color(oid))
    try:
        session.image_class = check_class(image.get("class"))
    except ValueError as err:
        if not partial:
            raise SessionCorruptError(f"{store.manifest_path}: image class malformed ({err})", folder) from err
    session.created = manifest.get("created", session.created)
    session.uid = str(manifest.get("session_id") or session.uid)
    report = RestoreReport(folder, restored_slices=len(store.slice_files),
                           damaged_slices=dict(store.damage["slices"]),
                           manifest_problem=store.damage["manifest"], bad_objects=bad_records,
                           bad_plane_records=bad_planes)
    report.objects = len(session.objects)
    session.restore_report = report
    # the folder is bound without rewriting it: everything loaded is already on disk
    session.folder = folder
    session._store = store
    session._dirty = set()
    if report.complete:
        store.remove_unreferenced()  # leftovers of an interrupted save
        return session
    _keep_damaged(store, report)
    for obj in session.objects.values():
        lost = sorted(z for z in report.damaged_slices if z in obj.slice_status)
        for z in lost:  # no voxels came back: the status would describe nothing
            del obj.slice_status[z]
        if lost:
            report.objects_hit[obj.display_name] = lost
            if any(obj.plane_status.values()):
                report.planes_hit.append(obj.display_name)
    session._dirty = set(report.damaged_slices)
    if report.kept_in is not None:  # rewrite a consistent snapshot (the originals are kept)
        try:
            session.save_unnotified()
        except Exception:  # pragma: no cover - reported by last_save_error / the next save
            pass
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
        planes = {p: obj.plane_slices(p, ("accepted",)) for p in sorted(obj.plane_status)}
        if any(planes.values()):  # accepted coronal / sagittal slices (indices along that axis)
            info[oid]["accepted_plane_slices"] = {p: zs for p, zs in planes.items() if zs}
    return info
