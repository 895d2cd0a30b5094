"""Segmented objects of a session: id, name, colour, lock, prompts, per-slice status, provenance.

Everything here is plain data that serialises to JSON (``to_dict`` / ``from_dict``) so the session
file, the undo history and the review table all read the same record.
"""

from __future__ import annotations

import copy
import getpass
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

#: The review states of one slice of one object, in the order a slice usually goes through them.
SLICE_STATUSES = ("prompted", "propagated", "needs review", "edited", "accepted", "rejected")
REVIEW_STATUSES = ("accepted", "rejected")
#: Statuses a propagation writes; a later propagation may replace these slices, never others.
#: "needs review" is a slice nobody has decided as a whole: the stop rule doubted it (an area jump, the
#: object vanished ...), or it holds only the part of a coronal / sagittal slice the user accepted.
PROPAGATED_STATUSES = ("propagated", "needs review")
#: Statuses of slices the user decided (a propagation never writes them, voxel by voxel for plane slices).
USER_STATUSES = ("prompted", "edited", "accepted", "rejected")
#: The planes other than axial in which an object's slices can carry the user's decisions.
OTHER_PLANES = ("coronal", "sagittal")
#: Statuses a coronal / sagittal slice can carry (only the user's decisions are recorded there).
PLANE_STATUSES = USER_STATUSES

# Distinct, colour-blind-friendlier colours (Okabe-Ito first, then tab10-like); floats in 0..1.
_PALETTE = [
    (0.902, 0.624, 0.0),
    (0.337, 0.706, 0.914),
    (0.0, 0.620, 0.451),
    (0.941, 0.894, 0.259),
    (0.0, 0.447, 0.698),
    (0.835, 0.369, 0.0),
    (0.800, 0.475, 0.655),
    (0.580, 0.404, 0.741),
    (0.549, 0.337, 0.294),
    (0.090, 0.745, 0.812),
    (0.737, 0.741, 0.133),
    (0.839, 0.153, 0.157),
]


def default_color(object_id: int) -> tuple[float, float, float]:
    """A stable colour for a label id (the same id always gets the same colour)."""
    return _PALETTE[(int(object_id) - 1) % len(_PALETTE)]


def utc_now() -> str:
    """ISO 8601 UTC timestamp with seconds precision, e.g. ``2026-11-25T10:40:00Z``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def os_user() -> str:
    """The operating-system user name (recorded in provenance), or ``"unknown"``."""
    try:
        return getpass.getuser()
    except Exception:  # no USER/LOGNAME and no passwd entry (some containers)
        return "unknown"


def check_status(status: str, allowed: tuple[str, ...] = SLICE_STATUSES) -> str:
    if status not in allowed:
        raise ValueError(f"unknown slice status {status!r}; expected one of {', '.join(allowed)}")
    return status


def check_plane(plane) -> str:
    if plane not in OTHER_PLANES:
        raise ValueError(f"unknown plane {plane!r} for a plane decision; expected one of {', '.join(OTHER_PLANES)}")
    return plane


def check_prompt_record(p) -> dict[str, Any]:
    """A prompt record ``{"points": [[row, col], ...], "labels": [...], "box": [r0, c0, r1, c1] | None}``
    as stored (ValueError when it is not one)."""
    if not isinstance(p, dict):
        raise ValueError(f"a prompt record must be a mapping, got {p!r}")
    pts = [[float(v) for v in pt][:2] for pt in p.get("points") or []]
    if any(len(pt) != 2 for pt in pts):
        raise ValueError(f"a point is (row, col), got {p.get('points')}")
    lab = [int(v) for v in p.get("labels") or []]
    if len(pts) != len(lab):
        raise ValueError(f"{len(pts)} points but {len(lab)} point labels")
    box = p.get("box")
    if box is not None:
        box = [float(v) for v in box]
        if len(box) != 4:
            raise ValueError(f"a box has four values (r0, c0, r1, c1), got {box}")
    return {"points": pts, "labels": lab, "box": box}


def _plane_records(d: Any, check, dropped: list[str] | None = None) -> dict[str, dict[int, Any]]:
    """``{"coronal": {"12": value}}`` from a session file -> ``{"coronal": {12: check(value)}}``.

    A malformed record raises ValueError; with a ``dropped`` list, it is left out instead and
    described there (a partial restore keeps the rest of the object)."""
    if not d:
        return {}

    def bad(what: str) -> None:
        if dropped is None:
            raise ValueError(what)
        dropped.append(what)

    if not isinstance(d, dict):
        bad(f"plane records must be a mapping, got {type(d).__name__}")
        return {}
    out: dict[str, dict[int, Any]] = {}
    for plane, per in d.items():
        try:
            check_plane(plane)
        except ValueError as err:
            bad(str(err))
            continue
        if not isinstance(per, dict):
            bad(f"{plane} records must be a mapping of slice -> value")
            continue
        entries = {}
        for i, v in per.items():
            try:
                idx = int(i)
                if idx < 0:
                    raise ValueError(f"negative {plane} slice index {idx}")
                entries[idx] = check(v)
            except (TypeError, ValueError) as err:
                bad(f"{plane} slice {i}: {err}")
        if entries:
            out[plane] = entries
    return out


def check_class(name) -> str | None:
    """A class name as stored (stripped, non-empty) or None for "no class"."""
    if name is None:
        return None
    if not isinstance(name, str):
        raise ValueError(f"a class name must be text, got {name!r}")
    name = name.strip()
    return name or None


@dataclass
class SegObject:
    """One structure being annotated, stored in the label map under ``id``.

    ``prompts`` maps a slice index to ``{"points": [[row, col], ...], "labels": [1 | 0, ...],
    "box": [r0, c0, r1, c1] | None}``; ``slice_status`` maps a slice index to one of
    :data:`SLICE_STATUSES`; ``provenance`` says how the mask was made (backend, model, version,
    device, random_weights, user, created, modified, and a short ``log`` of the commits);
    ``class_name`` is the class the user gave it (None: none yet; saved as ``"class"``).

    Decisions made in a coronal or sagittal view are kept per plane: ``plane_status`` maps
    ``"coronal"`` / ``"sagittal"`` to ``{slice index of that plane: status}`` (the user's statuses
    only: prompted, edited, accepted, rejected) and ``plane_prompts`` to ``{index: prompt record}``
    with points in that plane's ``(row, col)``. Both are saved only when non-empty.
    """

    id: int
    name: str = ""
    color: tuple[float, float, float] = (1.0, 0.0, 0.0)
    locked: bool = False
    prompts: dict[int, dict[str, Any]] = field(default_factory=dict)
    slice_status: dict[int, str] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    class_name: str | None = None  # the class the user gave the object (e.g. "benign"), for learning
    plane_status: dict[str, dict[int, str]] = field(default_factory=dict)
    plane_prompts: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)

    @property
    def display_name(self) -> str:
        return self.name or f"object {self.id}"

    def slices_with(self, status: str) -> list[int]:
        return sorted(z for z, s in self.slice_status.items() if s == status)

    def plane_slices(self, plane: str, statuses: tuple[str, ...] = USER_STATUSES) -> list[int]:
        """The slices of ``plane`` (coronal / sagittal) whose status is one of ``statuses``."""
        return sorted(i for i, s in self.plane_status.get(plane, {}).items() if s in statuses)

    def to_dict(self, deep: bool = True) -> dict[str, Any]:
        """JSON-ready record (slice keys become strings); ``deep=False`` shares the nested prompt
        and provenance values (enough for serialising right away)."""
        cp = copy.deepcopy if deep else (lambda v: v)
        return {
            "id": int(self.id),
            "name": self.name,
            "color": [float(c) for c in self.color],
            "locked": bool(self.locked),
            "prompts": {str(z): cp(p) for z, p in sorted(self.prompts.items())},
            "slice_status": {str(z): s for z, s in sorted(self.slice_status.items())},
            "provenance": cp(self.provenance),
            **({"class": self.class_name} if self.class_name is not None else {}),
            **({"plane_status": {p: {str(i): st for i, st in sorted(per.items())}
                                 for p, per in sorted(self.plane_status.items()) if per}}
               if any(self.plane_status.values()) else {}),
            **({"plane_prompts": {p: {str(i): cp(r) for i, r in sorted(per.items())}
                                  for p, per in sorted(self.plane_prompts.items()) if per}}
               if any(self.plane_prompts.values()) else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], dropped: list[str] | None = None) -> SegObject:
        """An object from its session-file record; a malformed record raises. With a ``dropped``
        list, malformed coronal / sagittal entries are left out and described there instead."""
        color = tuple(float(c) for c in d.get("color", (1.0, 0.0, 0.0)))[:3]
        return cls(
            id=int(d["id"]),
            name=str(d.get("name", "")),
            color=color,  # type: ignore[arg-type]
            locked=bool(d.get("locked", False)),
            prompts={int(z): copy.deepcopy(p) for z, p in d.get("prompts", {}).items()},
            slice_status={
                int(z): check_status(s) for z, s in d.get("slice_status", {}).items()
            },
            provenance=copy.deepcopy(d.get("provenance", {})),
            class_name=check_class(d.get("class")),
            plane_status=_plane_records(d.get("plane_status"), lambda v: check_status(v, PLANE_STATUSES), dropped),
            plane_prompts=_plane_records(d.get("plane_prompts"), check_prompt_record, dropped),
        )


def new_provenance() -> dict[str, Any]:
    now = utc_now()
    return {
        "backend": None,
        "model": None,
        "version": None,
        "device": None,
        "random_weights": None,
        "user": os_user(),
        "created": now,
        "modified": now,
        "log": [],
    }


#: How many commit records an object's provenance log keeps (oldest dropped first).
MAX_LOG = 200

_PROVENANCE_KEYS = ("backend", "model", "version", "device", "random_weights")


def merge_provenance(obj: SegObject, action: str, slices: list[int], info: dict | None) -> None:
    """Record a commit in ``obj.provenance``: model fields from ``info`` update the object's
    current ones; every commit appends ``{"action", "slices", "n", "utc", "user", ...}`` to the log."""
    prov = obj.provenance
    if not prov:
        prov.update(new_provenance())
    info = dict(info or {})
    for key in _PROVENANCE_KEYS:
        if key in info:
            prov[key] = info[key]
    for key, value in info.items():  # extra fields (e.g. "checkpoint", "settings") are kept too
        if key not in _PROVENANCE_KEYS and key not in ("log", "created"):
            prov[key] = value
    now = utc_now()
    user = os_user()
    prov["modified"] = now
    prov["user"] = prov.get("user") or user
    entry: dict[str, Any] = {"action": action, "utc": now, "user": user, "n": len(slices)}
    if slices:
        entry["slices"] = [int(min(slices)), int(max(slices))]
    for key in _PROVENANCE_KEYS:
        if key in info:
            entry[key] = info[key]
    log = prov.setdefault("log", [])
    log.append(entry)
    del log[:-MAX_LOG]
