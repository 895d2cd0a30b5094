"""The session folder on disk: a manifest (``session.json``) plus one compressed file per slice.

Layout::

    <folder>/session.json              objects, prompts, status, provenance, image key/shape/spacing,
                                        format version, and the list of slice files with CRC-32s
    <folder>/slices/z0042-g000017.zl    slice 42 of the label map as written by save #17
                                        (zlib-compressed little-endian uint16, row-major)

Saving writes only the slices that changed since the last save, each to a *new* file name, fsyncs
them, then replaces ``session.json`` atomically (temp file + fsync + rename) and only then deletes
the files it no longer references. ``session.json`` is therefore always a consistent snapshot:
a process killed at any moment leaves either the previous or the new snapshot, never a mix, and
never a truncated file that is referenced. Slices that are all zero have no file.
"""

from __future__ import annotations

import json
import os
import re
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from napari_medprompt.io.atomic import atomic_write_text

FORMAT = "napari-medprompt-session"
FORMAT_VERSION = 1
MANIFEST = "session.json"
SLICE_DIR = "slices"
LABEL_DTYPE = np.dtype("<u2")
_SLICE_RE = re.compile(r"^z(\d+)-g(\d+)\.zl$")


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


def _slice_name(z: int, generation: int) -> str:
    return f"z{z:04d}-g{generation:06d}.zl"


def encode_slice(plane: np.ndarray) -> tuple[bytes, int]:
    raw = np.ascontiguousarray(plane, dtype=LABEL_DTYPE).tobytes()
    return zlib.compress(raw, 1), zlib.crc32(raw)


def decode_slice(blob: bytes, shape: tuple[int, int], crc: int, path: Path) -> np.ndarray:
    try:
        raw = zlib.decompress(blob)
    except zlib.error as err:
        raise SessionCorruptError(f"{path}: slice file is corrupt ({err})", path.parent.parent) from err
    expected = int(np.prod(shape)) * LABEL_DTYPE.itemsize
    if len(raw) != expected:
        raise SessionCorruptError(
            f"{path}: slice file holds {len(raw)} bytes, expected {expected} for a {shape} slice",
            path.parent.parent,
        )
    if zlib.crc32(raw) != crc:
        raise SessionCorruptError(f"{path}: checksum mismatch (file damaged)", path.parent.parent)
    return np.frombuffer(raw, dtype=LABEL_DTYPE).reshape(shape).astype(np.uint16)


class SessionStore:
    """Reads and writes one session folder (see the module docstring for the layout)."""

    def __init__(self, folder: str | Path, fsync: bool = True) -> None:
        self.folder = Path(folder)
        self.fsync = fsync  # False only for tests/benchmarks of the in-process cost
        self.generation = 0
        self.slice_files: dict[int, dict[str, Any]] = {}  # z -> {"file", "crc32"}

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
        gen = self.generation + 1
        slice_dir = self.folder / SLICE_DIR
        new_files = dict(self.slice_files)
        written: list[Path] = []
        todo = range(labels.shape[0]) if dirty is None else sorted(dirty)
        try:
            slice_dir.mkdir(parents=True, exist_ok=True)
            for z in todo:
                plane = labels[z]
                if not plane.any():
                    new_files.pop(z, None)
                    continue
                blob, crc = encode_slice(plane)
                name = _slice_name(z, gen)
                path = slice_dir / name
                written.append(path)
                with open(path, "wb") as f:
                    f.write(blob)
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
                new_files[z] = {"file": name, "crc32": crc}
            if written and self.fsync:
                _fsync_dir(slice_dir)
            manifest = dict(state)
            manifest.update(
                format=FORMAT,
                format_version=FORMAT_VERSION,
                generation=gen,
                labels={
                    "dtype": "uint16",
                    "encoding": "zlib",
                    "shape": [int(s) for s in labels.shape],
                    "slices": {str(z): v for z, v in sorted(new_files.items())},
                },
            )
            text = json.dumps(manifest, separators=(",", ":"))  # compact: C encoder, ~1 ms
            atomic_write_text(self.manifest_path, text)
        except OSError as err:
            for path in written:  # unreferenced; removing them is best effort
                try:
                    path.unlink()
                except OSError:
                    pass
            reason = err.strerror or str(err)
            raise SessionSaveError(
                f"Could not save the annotation session to {self.folder}: {reason}. Nothing was "
                "lost: the annotations are kept in memory and the last saved copy on disk is "
                "unchanged. Choose a writable session folder or save the segmentation elsewhere.",
                self.folder,
            ) from err
        self.generation = gen
        self.slice_files = new_files
        self.remove_unreferenced()

    def remove_unreferenced(self) -> None:
        """Delete slice files (and stray temporary manifests) no snapshot refers to."""
        keep = {v["file"] for v in self.slice_files.values()}
        slice_dir = self.folder / SLICE_DIR
        try:
            names = os.listdir(slice_dir)
        except OSError:
            names = []
        for name in names:
            if _SLICE_RE.match(name) and name not in keep:
                try:
                    os.unlink(slice_dir / name)
                except OSError:
                    pass
        try:
            for name in os.listdir(self.folder):
                if name.startswith(f".{MANIFEST}.") and name.endswith(".tmp"):
                    os.unlink(self.folder / name)
        except OSError:
            pass

    # ------------------------------------------------------------------------------------- read
    def read(self) -> tuple[dict[str, Any], np.ndarray]:
        """Return ``(manifest, labels)``; every referenced slice is checked against its CRC-32."""
        path = self.manifest_path
        if not path.is_file():
            raise SessionCorruptError(f"{self.folder}: no {MANIFEST} here (not a session folder)", self.folder)
        try:
            manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
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
        try:
            info = manifest["labels"]
            shape = tuple(int(s) for s in info["shape"])
            files = {int(z): v for z, v in info["slices"].items()}
        except (KeyError, TypeError, ValueError) as err:
            raise SessionCorruptError(f"{path}: label section is missing or malformed ({err})", self.folder) from err
        if len(shape) != 3:
            raise SessionCorruptError(f"{path}: label map shape {shape} is not 3D", self.folder)
        labels = np.zeros(shape, dtype=np.uint16)
        for z, entry in files.items():
            if not 0 <= z < shape[0]:
                raise SessionCorruptError(f"{path}: slice {z} outside the volume {shape}", self.folder)
            spath = self.folder / SLICE_DIR / str(entry["file"])
            try:
                blob = spath.read_bytes()
            except OSError as err:
                raise SessionCorruptError(f"{spath}: slice file missing or unreadable ({err.strerror})", self.folder) from err
            labels[z] = decode_slice(blob, shape[1:], int(entry["crc32"]), spath)
        self.generation = int(manifest.get("generation", 0))
        self.slice_files = files
        return manifest, labels


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
