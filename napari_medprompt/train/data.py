"""Few-shot datasets: from an image folder per class, a MedMNIST-style ``.npz``, or in-app annotations.

A :class:`FewShotData` holds raw images (grey 2D, RGB, 8- or 16-bit, float; mixed sizes allowed),
optional masks aligned with them, integer labels, class names and one source string per image (a file
path, ``file.npz:train[12]``, ``annotation[3]``) for error messages and the training-set hash.
Sampling: :func:`k_shot` (k per class, seeded), :func:`fraction` (the papers' 5/10/20/50/100 %
protocol, stratified, seeded) and :func:`split_train_val` (stratified validation split).
Preprocessing to tensors lives in :mod:`.preprocess`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
MASK_SUFFIX = "_mask"


class DataError(ValueError):
    """The few-shot data cannot be used as given; the message names the class or file and the problem."""


@dataclass
class FewShotData:
    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    masks: list[np.ndarray | None] | None = None
    sources: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not self.sources:
            self.sources = [f"image[{i}]" for i in range(len(self.images))]
        if len(self.labels) != len(self.images) or len(self.sources) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels / {len(self.sources)} sources")
        if self.masks is not None and len(self.masks) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.masks)} masks")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def has_masks(self) -> bool:
        return self.masks is not None and all(m is not None for m in self.masks)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.labels, minlength=len(self.classes))

    def subset(self, idx) -> FewShotData:
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        return FewShotData(
            [self.images[i] for i in idx],
            self.labels[idx],
            list(self.classes),
            None if self.masks is None else [self.masks[i] for i in idx],
            [self.sources[i] for i in idx],
        )

    def validate(self, *, require_masks: bool = False) -> None:
        """Raise :class:`DataError` for an unusable training set (one class, a class with no images...)."""
        if len(self.classes) < 2:
            raise DataError(f"need at least two classes to train a classifier, got {self.classes!r}")
        if len(set(self.classes)) != len(self.classes):
            raise DataError(f"class names must be unique, got {self.classes!r}")
        if len(self) and (self.labels.min() < 0 or self.labels.max() >= len(self.classes)):
            raise DataError(f"labels must be in 0..{len(self.classes) - 1}, got {sorted(set(self.labels.tolist()))}")
        empty = [c for c, n in zip(self.classes, self.class_counts()) if n == 0]
        if empty:
            raise DataError(f"class(es) {', '.join(map(repr, empty))} have no examples; add images or remove the class")
        if require_masks and not self.has_masks:
            missing = [s for s, m in zip(self.sources, self.masks or [None] * len(self)) if m is None]
            raise DataError(
                f"this method needs a mask for every image; {len(missing)} image(s) have none "
                f"(first: {missing[0]}). Segment the region first, or choose a method without masks."
            )

    def fingerprint(self) -> str:
        """SHA-256 of the training-set list (sources and labels), stored in checkpoints."""
        payload = json.dumps({"classes": self.classes, "items": [[s, int(y)] for s, y in zip(self.sources, self.labels)]})
        return hashlib.sha256(payload.encode()).hexdigest()


# --- loaders -------------------------------------------------------------------------------------
def read_image_file(path: str | Path) -> np.ndarray:
    """A 2D image file as an array (grey, RGB; 8- or 16-bit kept as stored)."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            return np.asarray(tifffile.imread(path))
        from PIL import Image

        with Image.open(path) as im:
            return np.asarray(im)
    except Exception as err:
        raise DataError(f"cannot read image {path}: {type(err).__name__}: {err}") from err


def from_folder(root: str | Path) -> FewShotData:
    """``root/<class>/<image>``: one sub-folder per class. ``<name>_mask.<ext>`` beside an image is its mask."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected one sub-folder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels, masks, sources = [], [], [], []
    for ci, c in enumerate(classes):
        files = sorted(p for p in (root / c).iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        for p in files:
            if p.stem.endswith(MASK_SUFFIX):
                continue
            images.append(read_image_file(p))
            mpath = next((q for q in files if q.stem == p.stem + MASK_SUFFIX), None)
            masks.append(read_image_file(mpath) > 0 if mpath is not None else None)
            labels.append(ci)
            sources.append(str(p))
    if not classes:
        raise DataError(f"{root} has no class sub-folders")
    data = FewShotData(images, np.asarray(labels, np.int64), classes, masks if any(m is not None for m in masks) else None, sources)
    return data


def from_npz(path: str | Path, split: str = "train", classes: list[str] | None = None) -> FewShotData:
    """A MedMNIST-style archive: ``<split>_images`` (N, H, W[, C]) and ``<split>_labels`` (N,) or (N, 1)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            ik, lk = f"{split}_images", f"{split}_labels"
            if ik not in keys or lk not in keys:
                raise DataError(f"{path} has no {ik!r}/{lk!r} arrays (it has: {', '.join(sorted(keys))})")
            imgs, labels = z[ik], z[lk]
            mk = f"{split}_masks"
            masks = z[mk] if mk in keys else None
    except DataError:
        raise
    except Exception as err:
        raise DataError(f"cannot read {path} as a .npz archive: {type(err).__name__}: {err}") from err
    labels = np.asarray(labels).reshape(len(labels), -1)
    if labels.shape[1] != 1:
        raise DataError(f"{path}: {lk} has {labels.shape[1]} columns; multi-label archives are not supported")
    labels = labels[:, 0].astype(np.int64)
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    classes = list(classes) if classes else [f"class {i}" for i in range(n_classes)]
    return FewShotData(
        list(imgs),
        labels,
        classes,
        None if masks is None else [m > 0 for m in masks],
        [f"{path.name}:{split}[{i}]" for i in range(len(labels))],
    )


def from_annotations(items, classes: list[str] | None = None) -> FewShotData:
    """In-app annotations: ``(image or slice, mask or None, class name)`` triples."""
    items = list(items)
    names = [str(c) for _, _, c in items]
    classes = list(classes) if classes else sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"annotation class(es) {unknown!r} are not among the classes {classes!r}")
    masks = [None if m is None else np.asarray(m) > 0 for _, m, _ in items]
    return FewShotData(
        [np.asarray(im) for im, _, _ in items],
        np.asarray([classes.index(c) for c in names], np.int64),
        classes,
        masks if any(m is not None for m in masks) else None,
        [f"annotation[{i}]" for i in range(len(items))],
    )


# --- sampling ------------------------------------------------------------------------------------
def _per_class(data: FewShotData, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.permutation(np.flatnonzero(data.labels == c)) for c in range(len(data.classes))]


def k_shot(data: FewShotData, k: int, seed: int = 0) -> FewShotData:
    """k images per class, drawn with ``seed``. A class with fewer than k images is an error."""
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    rng = np.random.default_rng(seed)
    groups = _per_class(data, rng)
    short = [f"{data.classes[c]!r} ({len(g)})" for c, g in enumerate(groups) if len(g) < k]
    if short:
        raise DataError(f"{k}-shot sampling: class(es) {', '.join(short)} have fewer than {k} images")
    return data.subset(np.sort(np.concatenate([g[:k] for g in groups])))


def fraction(data: FewShotData, frac: float, seed: int = 0) -> FewShotData:
    """The papers' protocol: ``frac`` (0.05, 0.1, 0.2, 0.5, 1.0) of each class, at least one image each."""
    if not 0.0 < frac <= 1.0:
        raise DataError(f"fraction must be in (0, 1], got {frac}")
    rng = np.random.default_rng(seed)
    groups = _per_class(data, rng)
    take = [g[: max(1, int(round(frac * len(g))))] if len(g) else g for g in groups]
    return data.subset(np.sort(np.concatenate(take)))


def split_train_val(data: FewShotData, val_fraction: float, seed: int = 0) -> tuple[FewShotData, FewShotData | None]:
    """Stratified split; every class keeps at least one training image. No validation set when too small."""
    if val_fraction <= 0:
        return data, None
    rng = np.random.default_rng(seed + 7919)
    train_idx, val_idx = [], []
    for g in _per_class(data, rng):
        n_val = int(round(val_fraction * len(g))) if len(g) >= 2 else 0
        n_val = min(n_val, len(g) - 1)
        val_idx.extend(g[:n_val])
        train_idx.extend(g[n_val:])
    counts = np.bincount(data.labels[val_idx], minlength=len(data.classes)) if val_idx else None
    if not val_idx or (counts == 0).sum() == len(data.classes):
        return data, None
    return data.subset(np.sort(train_idx)), data.subset(np.sort(val_idx))
