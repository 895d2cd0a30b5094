"""A versioned model store: every training run is a new version; nothing is ever overwritten.

Layout of a store folder::

    index.json                      which versions exist, which one is active, activation history
    versions/v0001/adapter.safetensors
    versions/v0001/adapter.safetensors.json   checkpoint metadata + weights SHA-256 (see checkpoints)
    versions/v0001/version.json     the version's record (written last: its presence marks it complete)
    versions/v0003.deleted          tombstone of a deleted version (its id is never reused)

A version's record holds: id, created-at (UTC), parent version (the one active when it was trained),
method, backbone (name, pretrained tag, random-weights flag, state hash), method options, training
config, data fingerprint, metrics, preprocessing, the weights file name and its SHA-256, status.

``index.json`` is written atomically (:mod:`napari_medprompt.io.atomic`) under a file lock, after the
version folder is complete; a crash leaves at worst an unindexed complete folder, never a half
version in the index. A corrupt index is never guessed at: reading it raises :class:`StoreError`
naming the file and the fix, :meth:`ModelStore.rebuild_index` rebuilds it from the version folders
(keeping the corrupt file aside as ``index.json.corrupt-<time>``); no version is lost.

Deleting the active version is refused unless the caller names the version to activate instead
(``delete(v, new_active=...)``): activation never moves silently.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import re
import shutil
from pathlib import Path

from napari_medprompt.train.checkpoints import (
    CheckpointError,
    check_preprocessing,
    load_checkpoint,
    recorded_backbone,
    save_checkpoint,
)

INDEX_FORMAT = "napari-medprompt-store/1"
VERSION_FORMAT = "napari-medprompt-model-version/1"
WEIGHTS = "adapter.safetensors"
_ID = re.compile(r"^v(\d{4,})$")


class StoreError(ValueError):
    """The model store cannot do what was asked; the message names the store/version and the problem."""


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _summary(rec: dict) -> dict:
    """What the index keeps of a version (enough to list versions without opening folders)."""
    m = rec.get("metrics") or {}
    sel = m.get("val") or m.get("train") or {}
    return {
        "id": rec["id"], "created_at": rec.get("created_at"), "parent": rec.get("parent"),
        "method": rec.get("method"), "backbone": (rec.get("backbone") or {}).get("name"),
        "random_weights": bool((rec.get("backbone") or {}).get("random_weights")),
        "status": rec.get("status"), "selected_on": "val" if m.get("val") else ("train" if m.get("train") else None),
        "balanced_accuracy": sel.get("balanced_accuracy"), "accuracy": sel.get("accuracy"),
    }


class ModelStore:
    """Versions of trained adapters in one folder (created when missing)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self.versions_dir = self.root / "versions"
        self.index_path = self.root / "index.json"

    # --- index -----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self):
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+") as f:
            try:
                import fcntl

                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - non-POSIX: no inter-process lock
                pass
            yield

    def _read_index(self) -> dict:
        if not self.index_path.exists():
            if self._complete_folders():
                return self._index_from_folders()  # versions but no index yet: nothing to guess
            return {"format": INDEX_FORMAT, "active": None, "history": [], "versions": {}}
        try:
            idx = json.loads(self.index_path.read_text())
            if not isinstance(idx, dict) or idx.get("format") != INDEX_FORMAT or not isinstance(idx.get("versions"), dict):
                raise ValueError(f"not a {INDEX_FORMAT} index")
            missing = [v for v in idx["versions"] if not (self.versions_dir / v / "version.json").is_file()]
            if missing:
                raise ValueError(f"it lists version(s) {missing} whose folders are missing or incomplete")
            if idx.get("active") is not None and idx["active"] not in idx["versions"]:
                raise ValueError(f"its active version {idx['active']!r} is not among its versions")
        except (OSError, ValueError) as err:
            raise StoreError(
                f"the model store index {self.index_path} is corrupt ({err}). No version is lost: every "
                f"version is a folder in {self.versions_dir}. Rebuild the index with "
                f"ModelStore({str(self.root)!r}).rebuild_index() or `medprompt-train --store {self.root} "
                "--rebuild-index` (the corrupt file is kept aside)"
            ) from err
        idx.setdefault("history", [])
        return idx

    def _write_index(self, idx: dict) -> None:
        from napari_medprompt.io.atomic import atomic_write_text

        atomic_write_text(self.index_path, json.dumps(idx, indent=1))

    def _complete_folders(self) -> list[str]:
        if not self.versions_dir.is_dir():
            return []
        ids = [p.name for p in self.versions_dir.iterdir() if p.is_dir() and _ID.match(p.name)]
        return sorted((v for v in ids if (self.versions_dir / v / "version.json").is_file()), key=lambda v: int(v[1:]))

    def _index_from_folders(self) -> dict:
        versions = {}
        for v in self._complete_folders():
            try:
                versions[v] = _summary(self._record(v))
            except StoreError:
                continue  # an unreadable record stays on disk, out of the index
        return {"format": INDEX_FORMAT, "active": None, "history": [], "versions": versions}

    def rebuild_index(self) -> Path | None:
        """Rebuild ``index.json`` from the version folders. The previous index, if it cannot be read,
        is kept as ``index.json.corrupt-<time>`` (returned); its active version and history are kept
        when they can still be read, else no version is active (say so to the user)."""
        with self._lock():
            backup, old = None, {}
            if self.index_path.exists():
                try:
                    old = json.loads(self.index_path.read_text())
                    if not isinstance(old, dict):
                        old = {}
                except (OSError, ValueError):
                    old = {}
                backup = self.index_path.with_name(f"index.json.corrupt-{_dt.datetime.now():%Y%m%d-%H%M%S-%f}")
                shutil.copy2(self.index_path, backup)
            idx = self._index_from_folders()
            if old.get("active") in idx["versions"]:
                idx["active"] = old["active"]
            idx["history"] = [v for v in old.get("history") or [] if v in idx["versions"]]
            self._write_index(idx)
            return backup

    # --- reading ---------------------------------------------------------------------------------
    def _folder(self, version: str) -> Path:
        if not isinstance(version, str) or not _ID.match(version):
            raise StoreError(f"{version!r} is not a version id (expected e.g. 'v0001')")
        return self.versions_dir / version

    def _record(self, version: str) -> dict:
        path = self._folder(version) / "version.json"
        try:
            rec = json.loads(path.read_text())
        except FileNotFoundError:
            raise StoreError(f"model store {self.root} has no version {version!r}") from None
        except (OSError, ValueError) as err:
            raise StoreError(f"{path} cannot be read: {err}") from err
        if not isinstance(rec, dict) or rec.get("format") != VERSION_FORMAT:
            raise StoreError(f"{path} is not a {VERSION_FORMAT} record")
        return rec

    def list(self) -> list[dict]:
        """Every version (oldest first): its index summary plus ``active`` (bool)."""
        idx = self._read_index()
        out = [dict(s, active=(v == idx.get("active"))) for v, s in idx["versions"].items()]
        return sorted(out, key=lambda s: int(s["id"][1:]))

    @property
    def active(self) -> str | None:
        return self._read_index().get("active")

    def get(self, version: str | None = None) -> dict:
        """The full record of ``version`` (default: the active one)."""
        version = version or self._require_active()
        if version not in self._read_index()["versions"]:
            raise StoreError(f"model store {self.root} has no version {version!r}")
        return self._record(version)

    def weights_path(self, version: str | None = None) -> Path:
        rec = self.get(version)
        return self._folder(rec["id"]) / rec["weights_file"]

    def _require_active(self) -> str:
        active = self.active
        if active is None:
            raise StoreError(f"model store {self.root} has no active version (activate one, or name a version)")
        return active

    def load(self, version: str | None = None, backbone=None, *, preprocess=None, device="cpu", verify_hash: bool = True):
        """The trained model of ``version`` (default: the active one), its weights' SHA-256 checked
        against the record, its preprocessing against the caller's ``preprocess`` (when given)."""
        rec = self.get(version)
        path = self._folder(rec["id"]) / rec["weights_file"]
        if backbone is None:
            want = rec.get("backbone") or {}
            backbone = recorded_backbone(want, device, lambda err: StoreError(
                f"model store {self.root}, version {rec['id']}: its backbone {want.get('name')!r} (weights "
                f"{want.get('pretrained')!r}) cannot be loaded here ({type(err).__name__}: {err}). The version "
                "is kept; install/download that backbone, or pass one to load(backbone=...)"))
        try:
            check_preprocessing(rec, preprocess, f"version {rec['id']}")
            model = load_checkpoint(path, backbone, device=device, verify_hash=verify_hash,
                                    expected_sha256=rec["weights_sha256"])
        except CheckpointError as err:
            raise StoreError(f"model store {self.root}, version {rec['id']}: {err}") from err
        model.store_version = rec["id"]
        return model

    # --- writing ---------------------------------------------------------------------------------
    def _reserve(self) -> tuple[str, Path]:
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        taken = [int(m.group(1)) for p in self.versions_dir.iterdir()
                 if (m := _ID.match(p.name.removesuffix(".deleted")))]
        n = max(taken, default=0) + 1
        while True:
            vid = f"v{n:04d}"
            try:
                os.mkdir(self.versions_dir / vid)  # exclusive: never reuses a folder
                return vid, self.versions_dir / vid
            except FileExistsError:
                n += 1

    def add(self, model, *, config: dict | None = None, data_fingerprint: str | None = None, metrics: dict | None = None,
            preprocess=None, parent: str | None | bool = True, activate: bool = True, status: str = "finished",
            notes: dict | None = None) -> str:
        """Write ``model`` as a new version and return its id.

        ``parent``: the version it derives from; ``True`` (default) = the version active now.
        ``activate``: make it the active version (the previous one stays, for :meth:`rollback`).
        """
        idx = self._read_index()  # a corrupt index is reported before anything is written
        if parent is True:
            parent = idx.get("active")
        elif parent is not None and parent is not False and parent not in idx["versions"]:
            raise StoreError(f"parent version {parent!r} is not in model store {self.root}")
        vid, folder = self._reserve()
        try:
            rec = self._write_version(vid, folder, model, config, data_fingerprint, metrics, preprocess, parent,
                                      status, notes)
        except BaseException:
            # an incomplete new version (disk full, interrupt) is removed; no other version is touched
            # (its id stays taken by the tombstone, so it is never reused)
            (self.versions_dir / f"{vid}.deleted").write_text(_now())
            shutil.rmtree(folder, ignore_errors=True)
            raise
        with self._lock():
            idx = self._read_index()
            idx["versions"][vid] = _summary(rec)
            if activate:
                idx["active"] = vid
                idx["history"].append(vid)
            self._write_index(idx)
        return vid

    def _write_version(self, vid, folder, model, config, data_fingerprint, metrics, preprocess, parent, status, notes):
        from napari_medprompt.io.atomic import atomic_write_text
        from napari_medprompt.train.checkpoints import _jsonable

        weights = save_checkpoint(folder / WEIGHTS, model, config=config, train_fingerprint=data_fingerprint,
                                  metrics=metrics, preprocess=preprocess)
        side = json.loads(weights.with_name(weights.name + ".json").read_text())
        rec = {
            "format": VERSION_FORMAT, "id": vid, "created_at": _now(), "parent": parent or None,
            "status": status, "method": side["method"], "backbone": side["backbone"], "classes": side["classes"],
            "options": side["method_config"], "train_config": side["train_config"],
            "data_fingerprint": data_fingerprint, "metrics": side["metrics"], "preprocessing": side["preprocessing"],
            "weights_file": weights.name, "weights_sha256": side["weights_sha256"],
            "package_version": side["package_version"], **_jsonable(notes or {}),
        }
        atomic_write_text(folder / "version.json", json.dumps(rec, indent=1))
        return rec

    def activate(self, version: str) -> None:
        with self._lock():
            idx = self._read_index()
            if version not in idx["versions"]:
                raise StoreError(f"model store {self.root} has no version {version!r}; versions: "
                                 f"{', '.join(idx['versions']) or '(none)'}")
            if idx.get("active") != version:
                idx["active"] = version
                idx["history"].append(version)
                self._write_index(idx)

    def rollback(self, version: str | None = None) -> str:
        """Activate ``version``, or (default) the version that was active before the current one
        (else the current one's parent). Returns the version now active."""
        with self._lock():
            idx = self._read_index()
            cur = idx.get("active")
            hist = [v for v in idx["history"] if v in idx["versions"]]
            if version is None:
                while hist and hist[-1] == cur:
                    hist.pop()
                if hist:
                    version = hist[-1]
                elif cur is not None and idx["versions"][cur].get("parent") in idx["versions"]:
                    version = idx["versions"][cur]["parent"]
                    hist = [version]
                else:
                    raise StoreError(f"model store {self.root}: no earlier version to roll back to (active: {cur})")
            elif version not in idx["versions"]:
                raise StoreError(f"model store {self.root} has no version {version!r}")
            else:
                hist.append(version)
            idx["active"], idx["history"] = version, hist
            self._write_index(idx)
        return version

    def delete(self, version: str, *, new_active: str | None = None, leave_none_active: bool = False) -> None:
        """Remove ``version`` (its folder; a tombstone keeps its id from being reused).

        Deleting the active version is refused unless ``new_active`` names the version to activate
        instead, or ``leave_none_active=True`` says that no version stays active (the user's explicit
        choice); both are ignored for an inactive version."""
        with self._lock():
            idx = self._read_index()
            if version not in idx["versions"]:
                raise StoreError(f"model store {self.root} has no version {version!r}")
            if idx.get("active") == version and leave_none_active:
                idx["active"] = None
            elif idx.get("active") == version:
                if new_active is None:
                    raise StoreError(
                        f"version {version} is the active model of {self.root}; deleting it is refused. "
                        "Activate another version first, or pass new_active=<version> to move activation"
                    )
                if new_active == version or new_active not in idx["versions"]:
                    raise StoreError(f"cannot move activation to {new_active!r}: not another version of {self.root}")
                idx["active"] = new_active
                idx["history"].append(new_active)
            del idx["versions"][version]
            idx["history"] = [v for v in idx["history"] if v != version]
            folder = self._folder(version)
            (self.versions_dir / f"{version}.deleted").write_text(_now())
            self._write_index(idx)
            trash = self.versions_dir / f".{version}.deleting"
            os.replace(folder, trash)
            shutil.rmtree(trash, ignore_errors=True)
