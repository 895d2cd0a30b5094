"""Where a session lives: one folder per image, found again when the image is reopened.

The default folder is ``<image name>.medprompt/`` next to the image file (or DICOM folder) when that
place is writable, else ``<cache dir>/sessions/<name>-<hash of the key>/``. :func:`find_session`
looks in both places.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Sequence
from pathlib import Path

from napari_medprompt.session.store import MANIFEST

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
