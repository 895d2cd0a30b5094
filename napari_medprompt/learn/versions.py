"""Model versions for a table: rows, activation, comparison, rollback and deletion with clear messages.

Thin helpers over :class:`~napari_medprompt.train.store.ModelStore` that turn its records into table
rows (method, backbone, data, metrics, date, random-weights flag) and its errors into
:class:`~napari_medprompt.learn.errors.LearnError`. Nothing is ever overwritten; deleting the active
version needs the caller to name the version that becomes active (or ``None`` to leave no active
model, said explicitly with ``new_active=NO_ACTIVE``).
"""

from __future__ import annotations

import contextlib

from napari_medprompt.learn.errors import LearnError

#: Pass as ``new_active`` to delete the active version and leave the store without an active model.
NO_ACTIVE = "<none>"
METRICS = ("balanced_accuracy", "accuracy", "macro_f1", "auroc", "loss")


@contextlib.contextmanager
def _store_errors():
    from napari_medprompt.train.store import StoreError

    try:
        yield
    except StoreError as err:
        raise LearnError(str(err)) from err


def _selected_metrics(rec: dict) -> tuple[str | None, dict]:
    m = rec.get("metrics") or {}
    if m.get("val"):
        return "val", m["val"]
    if m.get("train"):
        return "train", m["train"]
    return None, {}


def _per_class_text(counts, classes) -> str:
    if isinstance(counts, dict):
        return ", ".join(f"{c} {n}" for c, n in counts.items())
    if isinstance(counts, (list, tuple)):
        names = classes if isinstance(classes, (list, tuple)) and len(classes) == len(counts) else None
        return ", ".join(f"{names[i]} {n}" if names else str(n) for i, n in enumerate(counts))
    return ""


def _data_text(rec: dict) -> str:
    """The examples a version learned from: "train a 4, b 4; val a 1, b 1" (the loop's split; older
    records without the split show their counts as they were stored)."""
    learn = rec.get("learn") or {}
    m = rec.get("metrics") or {}
    classes = rec.get("classes")
    train = learn.get("n_train_per_class") or m.get("n_train_per_class")
    if train is not None:
        text = f"train {_per_class_text(train, classes)}"
        val = learn.get("n_val_per_class")
        if val:
            text += f"; val {_per_class_text(val, classes)}"
        elif "n_val_per_class" in learn or m.get("n_val") == 0:
            text += "; no val"
        return text
    per_class = learn.get("per_class")
    if isinstance(per_class, dict):
        return ", ".join(f"{c}: {n}" for c, n in per_class.items())
    return f"{m.get('n_train', '?')} examples"


def version_rows(store) -> list[dict]:
    """One row per version (oldest first): id, active, method, backbone, data, metrics, balanced_accuracy,
    date, random_weights, status, modality."""
    with _store_errors():
        rows = []
        for s in store.list():
            rec = store.get(s["id"])
            split, met = _selected_metrics(rec)
            learn = rec.get("learn") or {}
            data = _data_text(rec)
            bal = met.get("balanced_accuracy")
            loss = (rec.get("metrics") or {}).get("train_loss")
            if split and bal is not None:
                n_val = (rec.get("metrics") or {}).get("n_val")
                if split == "val" and n_val:  # the same examples chose the kept epoch: not a held-out test
                    metrics = f"val (used for epoch selection, n={n_val}) balanced acc {bal:.3f}"
                else:
                    metrics = f"{split} balanced acc {bal:.3f}" + (" (training set)" if split == "train" else "")
            elif loss is not None:
                metrics = f"no validation split; train loss {loss:.3g}"
            else:
                metrics = "no metrics"
            rw = bool((rec.get("backbone") or {}).get("random_weights") or learn.get("random_weights"))
            rows.append({
                "id": rec["id"], "active": bool(s.get("active")), "method": rec.get("method"),
                "backbone": (rec.get("backbone") or {}).get("name"), "data": data, "metrics": metrics,
                "balanced_accuracy": bal, "date": rec.get("created_at"), "random_weights": rw,
                "status": rec.get("status"), "modality": learn.get("modality"), "classes": rec.get("classes"),
            })
        return rows


def activate(store, version: str) -> None:
    with _store_errors():
        store.activate(version)


def rollback(store, version: str | None = None) -> str:
    """Activate ``version`` or the one active before the current; returns the active version."""
    with _store_errors():
        return store.rollback(version)


def compare(store, a: str, b: str) -> list[tuple[str, object, object]]:
    """(field, value of a, value of b) rows: method, backbone, data, status, random weights, date, the
    split the metrics were computed on, the metrics (balanced accuracy ...), training loss, best
    epoch, epochs completed, number of training examples."""
    rows = {r["id"]: r for r in version_rows(store)}
    missing = [v for v in (a, b) if v not in rows]
    if missing:
        raise LearnError(f"no version {missing[0]!r} in the model store; versions: {', '.join(rows) or '(none)'}")
    with _store_errors():
        ra, rb = store.get(a), store.get(b)
    out = [(k, rows[a][k], rows[b][k]) for k in ("method", "backbone", "data", "status", "random_weights", "date")]
    sa, ma = _selected_metrics(ra)
    sb, mb = _selected_metrics(rb)
    out.append(("metrics on", sa, sb))
    for k in METRICS:
        if k in ma or k in mb:
            out.append((k, ma.get(k), mb.get(k)))
    fa, fb = ra.get("metrics") or {}, rb.get("metrics") or {}
    for k in ("train_loss", "best_epoch", "epochs_completed", "n_train"):
        out.append((k, fa.get(k), fb.get(k)))
    return out


def delete_version(store, version: str, new_active: str | None = None) -> str | None:
    """Delete ``version``. When it is the active one, ``new_active`` must name the version to activate
    instead (or :data:`NO_ACTIVE`); otherwise a :class:`LearnError` lists the choices. Returns the active
    version afterwards."""
    with _store_errors():
        active = store.active
        if version == active:
            others = [s["id"] for s in store.list() if s["id"] != version]
            if new_active is None:
                choice = (f"choose the version to activate instead ({', '.join(others)}) or none"
                          if others else "it is the only version: confirm that no model stays active")
                raise LearnError(f"version {version} is the active model; deleting it needs a choice: {choice}.")
            if new_active == NO_ACTIVE:
                store.delete(version, leave_none_active=True)
                return None
            store.delete(version, new_active=new_active)
            return new_active
        store.delete(version)
        return store.active
