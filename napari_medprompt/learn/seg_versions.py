"""The versions of the segmentation model store (:attr:`LearnWorkspace.seg_store`) for the Learn dock and
the Segment dock: rows for a table or a chooser, and which adapter is active (Qt-free)."""

from __future__ import annotations

import numpy as np

from napari_medprompt.learn.errors import LearnError
from napari_medprompt.learn.seg_methods import family_of


def seg_versions(store, *, family: str | None = None, base: str | None = None) -> list[dict]:
    """The store's segmentation versions, newest first: id, active, method, family, base, random_weights,
    objects, heldout (text), date, status, label (one line for a chooser)."""
    from napari_medprompt.train.store import StoreError

    try:
        rows = store.list()
        active = store.active
    except StoreError as err:
        raise LearnError(str(err)) from None
    out = []
    for r in reversed(rows):
        try:
            rec = store.get(r["id"])
        except (StoreError, OSError, ValueError):
            continue
        seg = rec.get("seg") or {}
        method = rec.get("method") or ""
        fam = seg.get("family") or family_of(method)
        bname = seg.get("base") or (rec.get("backbone") or {}).get("name") or ""
        if family is not None and fam != family:
            continue
        if base is not None and bname != base:
            continue
        rw = bool(seg.get("random_weights", (rec.get("backbone") or {}).get("random_weights")))
        held = seg.get("heldout") or {}
        heldout = ", ".join(f"{k} {_f(v.get('base'))}→{_f(v.get('adapted'))}" for k, v in held.items())
        label = f"{r['id']} · {method} · {', '.join(seg.get('objects') or [])}" + (" · RANDOM weights" if rw else "")
        out.append({"id": r["id"], "active": r["id"] == active, "method": method, "family": fam, "base": bname,
                    "random_weights": rw, "objects": list(seg.get("objects") or []), "heldout": heldout,
                    "date": (rec.get("created_at") or "")[:16].replace("T", " "), "status": rec.get("status"),
                    "label": label})
    return out


def _f(v) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{float(v):.3f}"


def activate_seg(store, vid: str) -> None:
    """Make ``vid`` the active segmentation adapter (the Segment dock offers it)."""
    from napari_medprompt.train.store import StoreError

    try:
        store.activate(vid)
    except (StoreError, KeyError) as err:
        raise LearnError(f"cannot activate version {vid!r}: {err}") from None


def deactivate_seg(store) -> None:
    """No active segmentation adapter (the Segment dock uses the base model)."""
    from napari_medprompt.train.store import StoreError

    try:
        with store._lock():
            idx = store._read_index()
            idx["active"] = None
            store._write_index(idx)
    except StoreError as err:
        raise LearnError(str(err)) from None
