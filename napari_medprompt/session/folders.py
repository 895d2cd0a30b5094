"""Where a session lives: one folder per image, found again when the image is reopened.

The default folder is ``<image name>.medprompt/`` next to the image file (or DICOM folder) when that
place is writable, else ``<cache dir>/sessions/<name>-<hash of the key>/``. :func:`find_session`
looks in both places.

Sessions are keyed by image *content* (:func:`content_key`: the same blake2b digest of the voxels the
embedding cache uses, with shape and spacing), so a case folder moved or copied with its
``.medprompt/`` folder keeps its session. :func:`find_sessions` lists every session folder the plugin
wrote for an image (beside it, numbered ones, old ``.previous-*`` backups, the cache), and the folders
found beside it that belong to another image or cannot be read; :func:`new_session_folder` picks a
free folder, so a new session never hides an older one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_medprompt.session.store import MANIFEST, MANIFEST_BACKUP

SUFFIX = ".medprompt"
_IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm", ".png", ".jpg",
                   ".jpeg", ".tif", ".tiff")


def image_key(source: str | os.PathLike | None, shape: Sequence[int], spacing: Sequence[float]) -> str:
    """A stable key for an image: its absolute source path (when known), shape and spacing.

    Restoring a session checks this key and the shape, so a session is never laid over another
    image. Images without a source (built in memory) are keyed by shape and spacing only.
    """
    src = str(Path(source).expanduser().resolve()) if source else "<memory>"
    shp = "x".join(str(int(s)) for s in shape)
    spc = "x".join(f"{float(s):.4g}" for s in spacing)
    return f"{src}|{shp}|{spc}"


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)] or name
    return name


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:60] or "image"


def _source_of(key_or_source: str | os.PathLike) -> Path | None:
    text = str(key_or_source)
    candidate = text.split("|", 1)[0] if "|" in text else text
    if candidate == "<memory>":
        return None
    path = Path(candidate).expanduser()
    return path if path.exists() else None


def _cache_folder(key_or_source: str | os.PathLike) -> Path:
    from napari_medprompt.models.cache import cache_dir

    text = str(key_or_source)
    src = _source_of(text)
    # keyed by the resolved source path when there is one, so a path and its image_key agree
    ident = str(src.resolve()) if src is not None else text
    name = _stem(src) if src is not None else text.split("|", 1)[0]
    digest = hashlib.sha1(ident.encode("utf-8")).hexdigest()[:12]
    return cache_dir("sessions") / f"{_safe(Path(name).name)}-{digest}"


def _beside_folder(src: Path) -> Path:
    return src.resolve().parent / f"{_stem(src)}{SUFFIX}"


def session_folder_for(image_source_or_key: str | os.PathLike) -> Path:
    """The default session folder for an image path or an :func:`image_key` (not created here)."""
    src = _source_of(image_source_or_key)
    if src is not None:
        beside = _beside_folder(src)
        parent = beside.parent
        if (beside.is_dir() and os.access(beside, os.W_OK)) or (
            not beside.exists() and os.access(parent, os.W_OK)
        ):
            return beside
    return _cache_folder(image_source_or_key)


def find_session(image_source_or_key: str | os.PathLike) -> Path | None:
    """The folder of an existing session for this image, or None (beside the image first, then
    in the cache)."""
    src = _source_of(image_source_or_key)
    candidates = []
    if src is not None:
        candidates.append(_beside_folder(src))
    candidates.append(_cache_folder(image_source_or_key))
    for folder in candidates:
        if (folder / MANIFEST).is_file():
            return folder
    return None


# ------------------------------------------------------------------------- content-keyed sessions
def content_key(digest: str, shape: Sequence[int], spacing: Sequence[float]) -> str:
    """The key of an image by content: ``content:<digest>|<shape>|<spacing>`` (``digest`` from
    :func:`napari_medprompt.segment.embedding_cache.image_digest`)."""
    shp = "x".join(str(int(s)) for s in shape)
    spc = "x".join(f"{float(s):.4g}" for s in spacing)
    return f"content:{digest}|{shp}|{spc}"


@dataclass
class SessionCandidate:
    """A session folder found for an image (read from its manifest, or its backup copy)."""

    folder: Path
    key: str | None
    name: str = "image"
    saved: str = "?"
    n_objects: int = 0
    n_slices: int = 0
    problem: str = ""  # why neither manifest copy could be read ("" when one could)

    def describe(self) -> str:
        if self.problem:
            return f"{self.folder} (unreadable: {self.problem})"
        return (f"{self.folder} — saved {self.saved}, {self.n_objects} object(s), "
                f"{self.n_slices} labelled slice(s)")


def peek_session(folder: str | os.PathLike) -> SessionCandidate | None:
    """What a session folder holds, read from its manifest only (None: not a session folder)."""
    folder = Path(folder)
    paths = [folder / MANIFEST, folder / MANIFEST_BACKUP]
    if not any(p.is_file() for p in paths):
        return None
    problem = ""
    for path in paths:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            image = data["image"]
            return SessionCandidate(
                folder, str(image["key"]), str(image.get("name", "image")), str(data.get("saved", "?")),
                len(data.get("objects", [])), len(data.get("labels", {}).get("slices", {})))
        except FileNotFoundError:
            continue
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
            problem = problem or f"{path.name}: {err}"
    return SessionCandidate(folder, None, problem=problem or "no manifest")


def _cache_root() -> Path:
    from napari_medprompt.models.cache import cache_dir

    return cache_dir("sessions")


def _dirs(parent: Path, pattern: str) -> list[Path]:
    try:
        return sorted(p for p in parent.glob(pattern) if p.is_dir())
    except OSError:
        return []


def find_sessions(source: str | os.PathLike | None, keys: Iterable[str]) -> tuple[list, list]:
    """``(matching, others)``: the session folders of this image, newest save first, and the folders
    beside the image that hold another image's session or cannot be read.

    Looked at: every ``*.medprompt*`` folder beside ``source`` and every folder of the session cache.
    A folder matches when its saved key is one of ``keys`` (the content key, and the old path key).
    """
    keys = {str(k) for k in keys}
    beside: list[Path] = []
    src = Path(source).expanduser() if source else None
    if src is not None and src.exists():
        beside = _dirs(src.resolve().parent, f"*{SUFFIX}*")
    seen: set[Path] = set()
    matching: list[SessionCandidate] = []
    others: list[SessionCandidate] = []
    stem = _stem(src) if src is not None else None
    for folder in [*beside, *_dirs(_cache_root(), "*")]:
        real = folder.resolve()
        if real in seen:
            continue
        seen.add(real)
        cand = peek_session(folder)
        if cand is None:
            continue
        if cand.key in keys:
            matching.append(cand)
        elif folder in beside and stem is not None and folder.name.startswith(stem):
            others.append(cand)  # named for this image but not of it (or unreadable): reported
    matching.sort(key=lambda c: c.saved, reverse=True)
    return matching, others


def new_session_folder(source: str | os.PathLike | None, key: str, name: str = "image") -> Path:
    """A folder for a new session that holds no other session: beside the image when writable
    (``<stem>.medprompt``, then ``<stem>.2.medprompt`` ...), else in the cache."""
    src = Path(source).expanduser() if source else None
    if src is not None and src.exists():
        parent = src.resolve().parent
        stem = _stem(src)
        for i in range(1, 100):
            folder = parent / (f"{stem}{SUFFIX}" if i == 1 else f"{stem}.{i}{SUFFIX}")
            if folder.exists():
                if peek_session(folder) is None and os.access(folder, os.W_OK):
                    return folder
                continue
            if os.access(parent, os.W_OK):
                return folder
            break
    base = _safe(_stem(src) if src is not None else name)
    digest = hashlib.sha1(str(key).encode("utf-8")).hexdigest()[:12]
    for i in range(1, 1000):
        folder = _cache_root() / (f"{base}-{digest}" if i == 1 else f"{base}-{digest}-{i}")
        if not folder.exists() or peek_session(folder) is None:
            return folder
    raise OSError(f"no free session folder in {_cache_root()}")
