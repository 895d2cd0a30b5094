"""One example a classifier learns from (:class:`Example`), and how a new one is made: its pixels, mask and
class checked, its source reduced to a file name and a key without any folder name.

See :mod:`napari_medprompt.learn.examples` for the example set that holds them.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from napari_medprompt.learn.errors import LearnError

ORIGINS = ("slice", "object", "image", "folder", "npz")


def source_name(source) -> str:
    """The file name of a source path or session image key (``/a/b/ct.nii.gz|shape|spacing`` ->
    ``ct.nii.gz``): never the folders above it."""
    if source is None:
        return ""
    text = str(source).split("|", 1)[0]
    if text in ("", "<memory>"):
        return ""
    return Path(text.rstrip("/\\")).name


def content_signature(array) -> str:
    """A short content hash of pixels (shape, dtype, every value): the same image gives the same one."""
    from napari_medprompt.segment.embedding_cache import image_digest

    return image_digest(np.asarray(array))[:20]


def _utc() -> str:
    from napari_medprompt.session.objects import utc_now

    return utc_now()


@dataclass
class Example:
    """One example (see :mod:`napari_medprompt.learn.examples`). ``image`` is (H, W) or (H, W, 3|4);
    ``mask`` (H, W) bool."""

    uid: str
    class_name: str
    image: np.ndarray
    mask: np.ndarray | None = None
    source: str = ""
    source_key: str = ""
    slice_index: int | None = None
    object_id: int | None = None
    group: str = ""
    origin: str = "slice"
    spacing: tuple[float, float] | None = None
    modality: str | None = None
    added: str = ""
    saved: bool = field(default=False, repr=False, compare=False)  # its pixel file is on disk

    def record(self) -> dict:
        """The JSON part (everything but the pixels)."""
        return {
            "uid": self.uid, "class": self.class_name, "source": self.source, "source_key": self.source_key,
            "slice": self.slice_index, "object": self.object_id, "group": self.group, "origin": self.origin,
            "spacing": None if self.spacing is None else [float(s) for s in self.spacing],
            "modality": self.modality, "added": self.added, "has_mask": self.mask is not None,
            "shape": [int(s) for s in self.image.shape], "dtype": self.image.dtype.str,
        }

    @property
    def key(self) -> tuple:
        """What makes two examples the same annotation (adding it again updates it)."""
        return (self.source_key, self.slice_index, self.object_id, self.origin)


def new_example(image, class_name, mask, source, source_key, slice_index, object_id, group, origin, spacing,
                modality, what: str) -> Example:
    """A new :class:`Example` (a new uid, copies of the pixels and mask) after checking each part; ``what``
    names it in error messages. ``source_key`` and ``group`` default to the pixels' content signature."""
    if origin not in ORIGINS:
        raise LearnError(f"unknown example origin {origin!r}; one of {', '.join(ORIGINS)}")
    name = checked_class_name(class_name)
    img = check_image(image, what)
    m = check_mask(mask, img, what)
    key = key_without_path(source_key) if source_key else content_signature(img)
    return Example(
        uid=secrets.token_hex(8), class_name=name, image=img.copy(), mask=None if m is None else m.copy(),
        source=source_name(source), source_key=key,
        slice_index=None if slice_index is None else int(slice_index),
        object_id=None if object_id is None else int(object_id),
        group=key_without_path(group) if group else key, origin=origin,
        spacing=None if spacing is None else (float(spacing[0]), float(spacing[1])),
        modality=None if modality is None else str(modality), added=_utc(),
    )


def check_image(image, what: str) -> np.ndarray:
    """``image`` as an example's pixels: (H, W) or colour (H, W, 3|4) numbers, at least 2x2 (else a LearnError)."""
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[-1] in (3, 4))):
        raise LearnError(f"{what}: an example is one 2D image (H, W) or colour (H, W, 3), got shape {arr.shape}")
    if arr.dtype == bool or arr.dtype.kind not in "uif":
        raise LearnError(f"{what}: image pixels must be numbers, got {arr.dtype}")
    if min(arr.shape[:2]) < 2:
        raise LearnError(f"{what}: the image is too small ({arr.shape[0]}x{arr.shape[1]} pixels)")
    return np.ascontiguousarray(arr)


def check_mask(mask, image: np.ndarray, what: str) -> np.ndarray | None:
    """``mask`` as an example's mask: (H, W) bool of ``image``'s size, not empty (None stays None)."""
    if mask is None:
        return None
    m = np.asarray(mask)
    if m.ndim == 3 and m.shape[-1] == 1:
        m = m[..., 0]
    if m.shape != image.shape[:2]:
        raise LearnError(f"{what}: mask of shape {m.shape} does not match the image {image.shape[:2]}")
    m = m > 0
    if not m.any():
        raise LearnError(f"{what}: the mask is empty (no pixel of the object on this slice)")
    return m


def key_without_path(key) -> str:
    """``key`` as stored: a key holding a file path (a session's ``image_key`` is ``<path>|shape|spacing``)
    is replaced by a short hash of it, so no folder name (often a patient's) reaches the example set."""
    import hashlib

    text = str(key)
    if "/" in text or "\\" in text:
        return "key-" + hashlib.blake2b(text.encode("utf-8"), digest_size=10).hexdigest()
    return text


def checked_class_name(name) -> str:
    """``name`` as a class name: text, stripped, not empty (else a LearnError)."""
    if not isinstance(name, str) or not name.strip():
        raise LearnError(f"a class needs a name (text), got {name!r}")
    return name.strip()


def plane_spacing(spacing):
    """A slice's (row, col) spacing from a volume's (z, y, x) or the slice's own (None stays None)."""
    if spacing is None:
        return None
    sp = [float(s) for s in spacing]
    return tuple(sp[-2:]) if len(sp) >= 2 else None
