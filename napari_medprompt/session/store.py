"""The session folder on disk: a manifest (``session.json``) plus one compressed file per slice.

Layout::

    <folder>/session.json          objects, prompts, status, provenance, image key/shape/spacing,
                                    format version, and for every non-empty slice of the label map
                                    where it is: {"pack", "offset", "length", "crc32"}
    <folder>/labels/g000017-<id>.pack  the slices written by save #17, one after the other, each
                                    zlib-compressed, row-major, only the labelled rows
                                    ("rows"), uint8 when every label fits a byte ("bpv": 1)
                                    else little-endian uint16

Saving compresses only the slices that changed since the last save into one *new* pack file,
fsyncs it, then replaces ``session.json`` atomically (temp file + fsync + rename) and only then
deletes the packs no slice refers to any more. ``session.json`` is therefore always a consistent
snapshot: a process killed at any moment leaves either the previous or the new snapshot, never a
mix, and never a truncated file that is referenced. One pack per save keeps the number of fsyncs
per save constant (a propagation batch costs about as much as one slice). When old packs hold
mostly superseded slices (or there are more than ``MAX_PACKS``), a save copies the live slices
into its new pack so the old ones can go. Slices that are all zero are not stored.

``session.backup.json`` is a second copy of the manifest, written after it (renamed into place, not
fsynced): when ``session.json`` is damaged (truncated, emptied) outside the plugin, a tolerant read
(:meth:`SessionStore.read` with ``partial=True``) falls back on it. A tolerant read also restores every
slice that verifies and reports the others (a damaged pack costs only its own slices).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.io.atomic import atomic_write_text

FORMAT = "napari-medprompt-session"
FORMAT_VERSION = 1
MANIFEST = "session.json"
MANIFEST_BACKUP = "session.backup.json"
SLICE_DIR = "labels"
MAX_PACKS = 48  # more packs than this are merged into one on the next save
COMPACT_SLACK = 4 << 20  # bytes of superseded slices tolerated before merging
LABEL_DTYPE = np.dtype("<u2")
_PACK_RE = re.compile(r"^g(\d+)(-[0-9a-f]+)?\.pack$")


class SessionError(Exception):
    """Base class of session errors; ``folder`` names the session folder."""

    def __init__(self, message: str, folder: str | Path | None = None) -> None:
        self.folder = str(folder) if folder is not None else None
        super().__init__(message)


class SessionSaveError(SessionError, OSError):
    """The session could not be written (read-only folder, disk full ...). The in-memory session is
    intact and still holds every change; a later :meth:`save` retries all unsaved slices."""


class SessionCorruptError(SessionError, ValueError):
    """A session folder whose files are missing, truncated or do not match their checksums."""


class SessionMismatchError(SessionError, ValueError):
    """A session folder that belongs to another image (different key or shape)."""


def _pack_name(generation: int, token: str) -> str:
    return f"g{generation:06d}-{token}.pack"


def encode_slice(plane: np.ndarray) -> tuple[bytes, dict[str, Any]]:
    """``(zlib blob, {"crc32", "bpv", "rows"})`` for a non-empty slice.

    Only the rows between the first and last labelled row are stored (``rows`` = [first, last+1]),
    as uint8 when every label fits a byte (``bpv`` 1) else little-endian uint16; the CRC-32 is of
    those raw bytes. Cropping and byte-wide storage cut the bytes to compress several-fold.
    """
    filled = np.flatnonzero(plane.any(axis=1))
    r0, r1 = int(filled[0]), int(filled[-1]) + 1
    part = plane[r0:r1]
    bpv = 1 if int(part.max()) <= 255 else 2
    raw = np.ascontiguousarray(part, dtype=np.uint8 if bpv == 1 else LABEL_DTYPE).tobytes()
    return zlib.compress(raw, 1), {"crc32": zlib.crc32(raw), "bpv": bpv, "rows": [r0, r1]}


def decode_slice(blob: bytes, shape: tuple[int, int], entry: dict[str, Any], path: Path, z: int) -> np.ndarray:
    """Inverse of :func:`encode_slice`; raises :class:`SessionCorruptError` naming the file."""
    folder = path.parent.parent
    try:
        raw = zlib.decompress(blob)
    except zlib.error as err:
        raise SessionCorruptError(f"{path}: slice {z} is corrupt ({err})", folder) from err
    dtype = np.dtype(np.uint8) if int(entry.get("bpv", 2)) == 1 else LABEL_DTYPE
    r0, r1 = (int(v) for v in entry.get("rows", (0, shape[0])))
    if not 0 <= r0 < r1 <= shape[0]:
        raise SessionCorruptError(f"{path}: slice {z} has an invalid row range {r0}-{r1}", folder)
    expected = (r1 - r0) * shape[1] * dtype.itemsize
    if len(raw) != expected:
        raise SessionCorruptError(
            f"{path}: slice {z} holds {len(raw)} bytes, expected {expected} for rows {r0}-{r1} of a "
            f"{shape} slice", folder
        )
    if zlib.crc32(raw) != int(entry["crc32"]):
        raise SessionCorruptError(f"{path}: slice {z} fails its checksum (file damaged)", folder)
    plane = np.zeros(shape, dtype=np.uint16)
    plane[r0:r1] = np.frombuffer(raw, dtype=dtype).reshape(r1 - r0, shape[1])
    return plane


class SessionStore:
    """Reads and writes one session folder (see the module docstring for the layout)."""

    def __init__(self, folder: str | Path, fsync: bool = True) -> None:
        self.folder = Path(folder)
        self.fsync = fsync  # False only for tests/benchmarks of the in-process cost
        self.max_packs = MAX_PACKS
        self.token = secrets.token_hex(4)  # pack names never collide between two writers
        self.compact_slack = COMPACT_SLACK
        self.generation = 0
        self.slice_files: dict[int, dict[str, Any]] = {}  # z -> {"pack", "offset", "length", "crc32", ...}
        self.damage: dict[str, Any] = {"manifest": None, "slices": {}, "packs": []}  # of the last read

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    # ------------------------------------------------------------------------------------ write
    def write(self, state: dict[str, Any], labels: np.ndarray, dirty: set[int] | None) -> None:
        """Write the slices in ``dirty`` (all when None) and the manifest built from ``state``.

        Raises :class:`SessionSaveError` naming the folder when anything cannot be written; in
        that case the previous snapshot on disk is untouched.
        """
        if self.generation == 0:
            self._refuse_foreign_session(state)
        gen = self.generation + 1
        entries = dict(self.slice_files)
        todo = range(labels.shape[0]) if dirty is None else sorted(dirty)
        blobs: list[bytes] = []
        pack_name = _pack_name(gen, self.token)
        offset = 0

        def add(z: int, blob: bytes, meta: dict[str, Any]) -> None:
            nonlocal offset
            blobs.append(blob)
            entries[z] = {"pack": pack_name, "offset": offset, "length": len(blob),
                          "crc32": int(meta["crc32"]), "bpv": int(meta.get("bpv", 2)),
                          "rows": list(meta.get("rows", [0, labels.shape[1]]))}
            offset += len(blob)

        pack_path = self.folder / SLICE_DIR / pack_name
        try:
            filled = []
            for z in todo:
                if labels[z].any():
                    filled.append(z)
                else:
                    entries.pop(z, None)
            for z, enc in zip(filled, _encode_all(labels, filled)):
                add(z, *enc)
            rewritten = set(todo)
            if self._needs_compaction(entries):  # copy the other live slices into this pack
                keep = {z: e for z, e in entries.items() if z not in rewritten}
                for z, blob, _crc in self._read_blobs(keep):
                    add(z, blob, keep[z])
            if blobs:
                pack_path.parent.mkdir(parents=True, exist_ok=True)
                with open(pack_path, "wb") as f:
                    f.write(b"".join(blobs))
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                if self.fsync:
                    _fsync_dir(pack_path.parent)
            manifest = dict(state)
            manifest.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                generation=gen,
                labels={
                    "dtype": "uint16",
                    "encoding": "zlib",
                    "shape": [int(s) for s in labels.shape],
                    "slices": {str(z): v for z, v in sorted(entries.items())},
                },
            )
            text = json.dumps(manifest, separators=(",", ":"))  # compact: C encoder, ~1 ms
            atomic_write_text(self.manifest_path, text)
            self._write_backup(text)
        except (OSError, SessionCorruptError) as err:
            if blobs:  # unreferenced; removing it is best effort
                try:
                    pack_path.unlink()
                except OSError:
                    pass
            if isinstance(err, SessionCorruptError):
                raise
            reason = err.strerror or str(err)
            raise SessionSaveError(
                f"Could not save the annotation session to {self.folder}: {reason}. Nothing was "
                "lost: the annotations are kept in memory and the last saved copy on disk is "
                "unchanged. Choose a writable session folder or save the segmentation elsewhere.",
                self.folder,
            ) from err
        self.generation = gen
        self.slice_files = entries
        self.remove_unreferenced()

    def _write_backup(self, text: str) -> None:
        """Second copy of the manifest (temp file + rename, no fsync: the main copy is the durable
        one); a failure here never fails the save."""
        tmp = self.folder / f".{MANIFEST_BACKUP}.{os.getpid()}.tmp"
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.folder / MANIFEST_BACKUP)
        except OSError:
            try:
                tmp.unlink()
            except OSError:
                pass

    def _refuse_foreign_session(self, state: dict[str, Any]) -> None:
        """A first save never replaces a session folder that belongs to another session."""
        if not self.manifest_path.exists():
            return
        try:
            other = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            other_id, saved = other.get("session_id"), other.get("saved", "?")
        except (OSError, ValueError, AttributeError):
            other_id, saved = None, "?"
        if other_id is None or other_id != state.get("session_id"):
            raise SessionSaveError(
                f"{self.folder} already holds another annotation session (last saved {saved}); it was "
                "not overwritten. Restore that session, or move it away or choose another folder "
                "for this one. Nothing was lost: this session is kept in memory.",
                self.folder,
            )

    def _needs_compaction(self, entries: dict[int, dict[str, Any]]) -> bool:
        """True when old packs hold mostly superseded slices (or are too many)."""
        packs = {e["pack"] for e in entries.values()}
        if len(packs) > self.max_packs:
            return True
        live = sum(int(e["length"]) for e in entries.values())
        on_disk = 0
        for name in packs:
            try:
                on_disk += (self.folder / SLICE_DIR / name).stat().st_size
            except OSError:
                pass
        return on_disk > 2 * live + self.compact_slack

    def _read_blobs(self, entries: dict[int, dict[str, Any]]):
        """Yield ``(z, compressed blob, crc32)`` for ``entries``, reading each pack once."""
        by_pack: dict[str, list[int]] = {}
        for z, e in entries.items():
            by_pack.setdefault(str(e["pack"]), []).append(z)
        for name, zs in sorted(by_pack.items()):
            path = self.folder / SLICE_DIR / name
            try:
                data = path.read_bytes()
            except OSError as err:
                raise SessionCorruptError(f"{path}: label pack missing or unreadable ({err.strerror})", self.folder) from err
            for z in sorted(zs):
                e = entries[z]
                start, length = int(e["offset"]), int(e["length"])
                if start < 0 or start + length > len(data):
                    raise SessionCorruptError(
                        f"{path}: truncated (slice {z} needs bytes {start}-{start + length}, the file has "
                        f"{len(data)})", self.folder)
                yield z, data[start : start + length], int(e["crc32"])

    def remove_unreferenced(self) -> None:
        """Delete label packs (and stray temporary manifests) no snapshot refers to."""
        keep = {v["pack"] for v in self.slice_files.values()}
        pack_dir = self.folder / SLICE_DIR
        try:
            names = os.listdir(pack_dir)
        except OSError:
            names = []
        for name in names:
            if _PACK_RE.match(name) and name not in keep:
                try:
                    os.unlink(pack_dir / name)
                except OSError:
                    pass
        try:
            for name in os.listdir(self.folder):
                if name.startswith((f".{MANIFEST}.", f".{MANIFEST_BACKUP}.")) and name.endswith(".tmp"):
                    os.unlink(self.folder / name)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------- read
    def read(self, partial: bool = False) -> tuple[dict[str, Any], np.ndarray]:
        """Return ``(manifest, labels)``; every referenced slice is checked against its CRC-32.

        Strict by default: the first problem raises :class:`SessionCorruptError`. With ``partial``,
        a damaged ``session.json`` is replaced by ``session.backup.json`` and a slice that does not
        verify is left empty; :attr:`damage` then says what was not restored (``{"manifest": reason
        or None, "slices": {z: reason}, "packs": [damaged pack names]}``).
        """
        self.damage = {"manifest": None, "slices": {}, "packs": []}
        try:
            manifest = self._read_manifest(self.manifest_path)
        except SessionCorruptError as err:
            backup = self.folder / MANIFEST_BACKUP
            if not partial or not backup.is_file():
                raise
            manifest = self._read_manifest(backup)  # raises too when the backup is damaged as well
            self.damage["manifest"] = str(err)
        shape, entries = self._label_section(manifest)
        labels = np.zeros(shape, dtype=np.uint16)
        good: dict[int, dict[str, Any]] = {}
        by_pack: dict[str, list[int]] = {}
        for z, e in entries.items():
            by_pack.setdefault(e["pack"], []).append(z)
        for name, zs in sorted(by_pack.items()):
            path = self.folder / SLICE_DIR / name
            try:
                data = path.read_bytes()
            except OSError as err:
                data = None
                missing = SessionCorruptError(
                    f"{path}: label pack missing or unreadable ({err.strerror})", self.folder)
            for z in sorted(zs):
                e = entries[z]
                try:
                    if data is None:
                        raise missing
                    start, length = e["offset"], e["length"]
                    if start < 0 or start + length > len(data):
                        raise SessionCorruptError(
                            f"{path}: truncated (slice {z} needs bytes {start}-{start + length}, the file "
                            f"has {len(data)})", self.folder)
                    labels[z] = decode_slice(data[start:start + length], shape[1:], e, path, z)
                    good[z] = e
                except SessionCorruptError as err:
                    if not partial:
                        raise
                    self.damage["slices"][z] = str(err)
                    if name not in self.damage["packs"]:
                        self.damage["packs"].append(name)
        self.generation = int(manifest.get("generation", 0))
        self.slice_files = good
        return manifest, labels

    def _read_manifest(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise SessionCorruptError(f"{self.folder}: no {MANIFEST} here (not a session folder)", self.folder)
        try:
            text = path.read_text(encoding="utf-8")
            if not text.strip():
                raise ValueError("the file is empty")
            manifest = json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SessionCorruptError(f"{path}: cannot be read as a session file ({err})", self.folder) from err
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise SessionCorruptError(f"{path}: not a napari-medprompt session file", self.folder)
        version = manifest.get("format_version")
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise SessionCorruptError(
                f"{path}: session format version {version!r} is newer than this software reads "
                f"({FORMAT_VERSION}); update napari-medprompt",
                self.folder,
            )
        return manifest

    def _label_section(self, manifest: dict[str, Any]) -> tuple[tuple[int, ...], dict[int, dict[str, Any]]]:
        path = self.manifest_path
        try:
            info = manifest["labels"]
            shape = tuple(int(s) for s in info["shape"])
            entries = {int(z): dict(v) for z, v in info["slices"].items()}
            for e in entries.values():
                e["pack"], e["offset"], e["length"], e["crc32"] = (
                    str(e["pack"]), int(e["offset"]), int(e["length"]), int(e["crc32"]))
                if int(e.get("bpv", 2)) not in (1, 2):
                    raise ValueError(f"bytes per voxel {e['bpv']!r}")
                if "rows" in e and len(e["rows"]) != 2:
                    raise ValueError(f"row range {e['rows']!r}")
        except (KeyError, TypeError, ValueError) as err:
            raise SessionCorruptError(f"{path}: label section is missing or malformed ({err})", self.folder) from err
        if len(shape) != 3:
            raise SessionCorruptError(f"{path}: label map shape {shape} is not 3D", self.folder)
        bad = [z for z in entries if not 0 <= z < shape[0]]
        if bad:
            raise SessionCorruptError(f"{path}: slice {bad[0]} outside the volume {shape}", self.folder)
        return shape, entries


def _encode_all(labels: np.ndarray, zs: list[int]) -> list[tuple[bytes, dict[str, Any]]]:
    """Encode slices, on two threads for larger batches (zlib releases the GIL)."""
    if len(zs) < 4:
        return [encode_slice(labels[z]) for z in zs]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        return list(pool.map(lambda z: encode_slice(labels[z]), zs))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
