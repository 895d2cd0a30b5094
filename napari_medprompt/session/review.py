"""What the Review panel shows, computed without Qt: object rows, per-slice rows, provenance text."""

from __future__ import annotations

import html
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np

from napari_medprompt.session.objects import SegObject

#: Filters of the per-slice list: name -> statuses shown (None: every slice of the object).
SLICE_FILTERS: dict[str, tuple[str, ...] | None] = {
    "All slices": None,
    "To review": ("needs review", "prompted", "propagated", "edited"),
    "Needs review": ("needs review",),
    "Propagated": ("propagated", "needs review"),
    "Accepted": ("accepted",),
    "Rejected": ("rejected",),
}

STATUS_COLORS = {  # soft backgrounds, readable on napari's dark and light themes with dark text
    "prompted": "#9ecae1",
    "propagated": "#fdd49e",
    "needs review": "#fdae6b",  # a slice the stop rule doubted (area jump, object vanished ...)
    "edited": "#c6dbef",
    "accepted": "#a1d99b",
    "rejected": "#fc9272",
}


@dataclass
class ObjectRow:
    id: int
    name: str
    color: tuple[float, float, float]
    slices_covered: int
    slice_range: tuple[int, int] | None
    volume_ml: float
    status: str  # short review summary
    locked: bool
    class_name: str | None = None  # the class the user gave the object (learning), None: none


@dataclass
class SliceRow:
    slice: int
    status: str  # "" when the object has voxels there but no recorded status
    voxels: int


def review_summary(obj: SegObject, n_slices: int) -> str:
    """E.g. "12/40 accepted, 3 rejected, 1 needs review" or "not reviewed"."""
    counts: dict[str, int] = {}
    for s in obj.slice_status.values():
        counts[s] = counts.get(s, 0) + 1
    acc, rej = counts.get("accepted", 0), counts.get("rejected", 0)
    pending = n_slices - acc
    if not n_slices and not rej:
        return "empty"
    if acc and pending <= 0:
        text = "all accepted"
    elif acc:
        text = f"{acc}/{n_slices} accepted"
    else:
        text = "not reviewed"
    if rej:
        text += f", {rej} rejected"
    doubted = counts.get("needs review", 0)
    if doubted:
        text += f", {doubted} need{'s' if doubted == 1 else ''} review"
    return text


def object_rows(session) -> list[ObjectRow]:
    rows = []
    for oid, obj in sorted(session.objects.items()):
        st = session.object_stats(oid)
        rows.append(ObjectRow(
            id=oid, name=obj.display_name, color=tuple(obj.color[:3]),
            slices_covered=st["slices_covered"], slice_range=st["slice_range"],
            volume_ml=st["volume_ml"], status=review_summary(obj, st["slices_covered"]),
            locked=obj.locked, class_name=obj.class_name,
        ))
    return rows


def slice_rows(session, object_id: int, filter_name: str = "All slices") -> list[SliceRow]:
    """One row per slice where the object has voxels or a status (rejected slices have none)."""
    obj = session.objects[int(object_id)]
    voxels = session.slice_voxels(object_id)
    wanted = SLICE_FILTERS.get(filter_name)
    rows = []
    for z in sorted(set(voxels) | set(obj.slice_status)):
        status = obj.slice_status.get(z, "")
        if wanted is not None and status not in wanted:
            continue
        rows.append(SliceRow(z, status, voxels.get(z, 0)))
    return rows


#: The planes the Review panel lists slices of, with the axis of the (z, y, x) label map they step along.
REVIEW_PLANES = {"axial": 0, "coronal": 1, "sagittal": 2}


def _check_review_plane(plane: str) -> str:
    if plane not in REVIEW_PLANES:
        raise ValueError(f"unknown plane {plane!r}; choose one of {', '.join(REVIEW_PLANES)}")
    return plane


def plane_voxels(session, object_id: int, plane: str) -> np.ndarray:
    """Voxel count of the object on every slice of ``plane`` (one count per index along its axis),
    counted over the label map in one pass."""
    obj = session.objects[int(object_id)]
    ax = REVIEW_PLANES[_check_review_plane(plane)]
    with getattr(session, "_lock", None) or nullcontext():
        mask = session.labels == obj.id
    others = tuple(a for a in range(mask.ndim) if a != ax)
    return np.count_nonzero(mask, axis=others)


def plane_slice_rows(session, obj: SegObject | int, plane: str, filter_name: str = "All slices") -> list[SliceRow]:
    """The rows of the slice list for ``plane``: for "axial" those of :func:`slice_rows`; for
    "coronal" / "sagittal" one row per slice of that plane where the object has voxels or a plane
    status (``SegObject.plane_status``), with its voxel count on that plane slice. A plane slice
    with voxels and no decision has status "" and counts as one to review."""
    oid = obj.id if isinstance(obj, SegObject) else int(obj)
    if _check_review_plane(plane) == "axial":
        return slice_rows(session, oid, filter_name)
    obj = session.objects[oid]
    counts = plane_voxels(session, oid, plane)
    per = obj.plane_status.get(plane, {})
    wanted = SLICE_FILTERS.get(filter_name)
    if wanted is not None and filter_name in ("To review", "Needs review"):
        wanted = (*wanted, "")  # a plane slice nobody decided
    rows = []
    for i in sorted(set(int(i) for i in np.flatnonzero(counts)) | set(per)):
        status = per.get(i, "")
        if wanted is not None and status not in wanted:
            continue
        rows.append(SliceRow(i, status, int(counts[i]) if 0 <= i < counts.size else 0))
    return rows


def _ranges(zs: list[int]) -> str:
    """[1,2,3,7,9,10] -> "1-3, 7, 9-10"."""
    out, start, prev = [], None, None
    for z in sorted(zs):
        if start is None:
            start = prev = z
        elif z == prev + 1:
            prev = z
        else:
            out.append(f"{start}" if start == prev else f"{start}-{prev}")
            start = prev = z
    if start is not None:
        out.append(f"{start}" if start == prev else f"{start}-{prev}")
    return ", ".join(out)


def prompt_summary(obj: SegObject) -> str:
    records = [("slice", z, p) for z, p in sorted(obj.prompts.items())]
    for plane, per in sorted(obj.plane_prompts.items()):
        records += [(f"{plane} slice", i, p) for i, p in sorted(per.items())]
    if not records:
        return "none recorded"
    parts = []
    for where, z, p in records:
        labels = p.get("labels") or []
        pos = sum(1 for v in labels if v)
        neg = len(labels) - pos
        bits = []
        if pos:
            bits.append(f"{pos} positive")
        if neg:
            bits.append(f"{neg} negative")
        if p.get("box") is not None:
            bits.append("box")
        parts.append(f"{where} {z}: {', '.join(bits) or 'mask'}")
    return "; ".join(parts)


def provenance_items(obj: SegObject) -> list[tuple[str, str]]:
    """(field, value) pairs in reading order; values already formatted for display."""
    p: dict[str, Any] = obj.provenance or {}

    def val(key: str) -> str:
        v = p.get(key)
        return "—" if v in (None, "") else str(v)

    rw = p.get("random_weights")
    items = [
        ("Backend", val("backend")),
        ("Model", val("model")),
        ("Version", val("version")),
        ("Device", val("device")),
        ("Weights", "RANDOM (not a trained model: masks are meaningless)" if rw
         else ("pretrained" if rw is False else "—")),
        ("Prompts", prompt_summary(obj)),
        ("Accepted slices", _ranges(obj.slices_with("accepted")) or "none"),
        ("Rejected slices", _ranges(obj.slices_with("rejected")) or "none"),
        *[(f"{plane.capitalize()} slices", "; ".join(
            f"{status} {_ranges(obj.plane_slices(plane, (status,)))}"
            for status in ("prompted", "edited", "accepted", "rejected") if obj.plane_slices(plane, (status,))))
          for plane in ("coronal", "sagittal") if obj.plane_status.get(plane)],
        ("User", val("user")),
        ("Created", val("created").replace("T", " ").replace("Z", " UTC")),
        ("Modified", val("modified").replace("T", " ").replace("Z", " UTC")),
    ]
    log = p.get("log") or []
    if log:
        last = log[-1]
        lo, hi = (last.get("slices") or [None, None])[:2]
        where = "" if lo is None else (f" slice {lo}" if lo == hi else f" slices {lo}-{hi}")
        items.append(("Last change", f"{last.get('action')}{where} by {last.get('user', '?')} at "
                      f"{str(last.get('utc', '')).replace('T', ' ').replace('Z', ' UTC')}"))
    return items


def provenance_html(obj: SegObject) -> str:
    rows = []
    for key, value in provenance_items(obj):
        v = html.escape(value)
        if key == "Weights" and value.startswith("RANDOM"):
            v = f"<b style='color:#e34a33'>{v}</b>"
        rows.append(f"<tr><td style='padding-right:8px'><b>{html.escape(key)}</b></td><td>{v}</td></tr>")
    title = html.escape(f"{obj.display_name} (label {obj.id})" + (" — locked" if obj.locked else ""))
    return f"<p><b>{title}</b></p><table>{''.join(rows)}</table>"
