"""Few-shot datasets: from an image folder per class, a MedMNIST-style ``.npz``, or in-app annotations.

A :class:`FewShotData` holds raw images (grey 2D, RGB, 8- or 16-bit, float; mixed sizes allowed),
optional masks aligned with them, integer labels, class names, one source string per image (a file
path, ``file.npz:train[12]``, ``annotation[3]``) for error messages, and one *group* id per image: the
case, series or patient it comes from. Images of one group are never split apart: every split made
here (a validation split carved from a pool, k-shot or fraction sampling and the rest of the pool)
keeps each group on one side, so neighbouring slices of one lesion never land in both training and
validation. Without group information each image is its own group.

Sampling (all seeded with a local ``numpy.random.Generator``; the global random state is untouched):
:func:`k_shot` (exactly k images per class), :func:`fraction` (the papers' 5/10/20/50/100 % protocol,
stratified) and :func:`split_train_val` (a grouped, stratified validation split of a *pool*, made
before sampling the shots, never out of the shots themselves). Preprocessing lives in :mod:`.preprocess`.
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
    groups: list[str] | None = None  # case / series / patient per image; None: each image its own group

    def __post_init__(self) -> None:
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if not self.sources:
            self.sources = [f"image[{i}]" for i in range(len(self.images))]
        if len(self.labels) != len(self.images) or len(self.sources) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.labels)} labels / {len(self.sources)} sources")
        if self.groups is None:
            self.groups = list(self.sources)
        else:
            self.groups = [str(g) for g in self.groups]
        if len(self.groups) != len(self.images):
            raise DataError(f"{len(self.images)} images but {len(self.groups)} group ids")
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
            [self.groups[i] for i in idx],
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
        """SHA-256 of the data's content: class names, and per image its pixels (dtype, shape, bytes),
        its mask (or its absence), its label and its group. Sources (file names) are not part of it:
        the same pixels loaded from another path give the same fingerprint; one changed pixel or mask
        voxel gives another."""
        h = hashlib.sha256()
        h.update(json.dumps({"format": "fewshot-data/2", "classes": list(self.classes)}).encode())
        masks = self.masks or [None] * len(self)
        for im, m, y, g in zip(self.images, masks, self.labels, self.groups):
            h.update(json.dumps([int(y), g]).encode())
            for a in (im, m):
                if a is None:
                    h.update(b"none")
                    continue
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()

    def group_ids(self) -> np.ndarray:
        """(N,) integer id of each image's group (in order of first appearance)."""
        index: dict[str, int] = {}
        return np.asarray([index.setdefault(g, len(index)) for g in self.groups], np.int64)


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


#: a data folder may hold at most this fraction of unreadable images (skipped and counted); above it,
#: loading fails: a data set that broken should be looked at before anything is trained on it
MAX_UNREADABLE = 0.05


def from_folder(root: str | Path, max_unreadable: float = MAX_UNREADABLE) -> FewShotData:
    """``root/<class>/<image>``: one sub-folder per class. ``<name>_mask.<ext>`` beside an image is its mask.

    An image (or its mask) that cannot be read is skipped; the result's ``unreadable`` lists them
    ("path: reason"). More than ``max_unreadable`` of the image files unreadable is a :class:`DataError`
    naming them.

    Images one level deeper, ``root/<class>/<case>/<image>``, belong to the group ``<case>`` (a patient
    or series: its slices are never split apart; the same case name under two class folders is one
    patient with images of both classes); an image directly in the class folder is its own group.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root} is not a folder (expected one sub-folder of images per class)")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    images, labels, masks, sources, groups = [], [], [], [], []
    bad: list[str] = []
    n_files = 0
    for ci, c in enumerate(classes):
        folders = [(root / c, None)] + sorted(
            (d, d.name) for d in (root / c).iterdir() if d.is_dir() and not d.name.startswith("."))
        for folder, case in folders:
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
            for p in files:
                if p.stem.endswith(MASK_SUFFIX):
                    continue
                n_files += 1
                mpath = next((q for q in files if q.stem == p.stem + MASK_SUFFIX), None)
                try:
                    im = read_image_file(p)
                    mk = read_image_file(mpath) > 0 if mpath is not None else None
                except DataError as err:
                    bad.append(str(err).removeprefix("cannot read image "))
                    continue
                images.append(im)
                masks.append(mk)
                labels.append(ci)
                sources.append(str(p))
                groups.append(case if case is not None else str(p))
    if not classes:
        raise DataError(f"{root} has no class sub-folders")
    if bad and len(bad) > max_unreadable * n_files:
        shown = "; ".join(bad[:5]) + (f"; ... ({len(bad) - 5} more)" if len(bad) > 5 else "")
        raise DataError(f"{len(bad)} of {n_files} image files under {root} cannot be read, more than "
                        f"{max_unreadable:.0%} of them: {shown}")
    out = FewShotData(images, np.asarray(labels, np.int64), classes,
                      masks if any(m is not None for m in masks) else None, sources, groups)
    out.unreadable = bad
    return out


def from_npz(path: str | Path, split: str = "train", classes: list[str] | None = None) -> FewShotData:
    """A MedMNIST-style archive: ``<split>_images`` (N, H, W[, C]) and ``<split>_labels`` (N,) or (N, 1),
    optionally ``<split>_masks`` and ``<split>_groups`` (case id per image; else one group per image).

    MedMNIST's official splits are ``train`` (pool for sampling), ``val`` (model selection) and
    ``test`` (evaluation); see :func:`npz_splits`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            ik, lk = f"{split}_images", f"{split}_labels"
            if ik not in keys or lk not in keys:
                raise DataError(f"{path} has no {ik!r}/{lk!r} arrays (it has: {', '.join(sorted(keys))})")
            imgs, labels = z[ik], z[lk]
            mk, gk = f"{split}_masks", f"{split}_groups"
            masks = z[mk] if mk in keys else None
            groups = [str(g) for g in z[gk]] if gk in keys else None
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
        groups,
    )


def official_splits(path: str | Path, classes: list[str] | None = None) -> dict[str, FewShotData]:
    """Every split of a MedMNIST-style archive, e.g. ``{"train": pool, "val": ..., "test": ...}``:
    sample shots / fractions from ``train``, select on ``val``, report ``test``. Class names come from
    ``classes`` (else ``class 0``, ``class 1``... sized by the train split), the same for every split."""
    names = npz_splits(path)
    if "train" not in names:
        raise DataError(f"{path} has no 'train' split (it has: {', '.join(names) or 'none'})")
    out = {"train": from_npz(path, "train", classes)}
    for name in names:
        if name != "train":
            out[name] = from_npz(path, name, out["train"].classes)
    return out


def npz_splits(path: str | Path) -> list[str]:
    """The splits a MedMNIST-style archive holds (``train``, ``val``, ``test``, ...), in that order."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
    except Exception as err:
        raise DataError(f"cannot read {path} as a .npz archive: {type(err).__name__}: {err}") from err
    found = {k[: -len("_images")] for k in keys if k.endswith("_images") and k[: -len("_images")] + "_labels" in keys}
    order = ["train", "val", "test"]
    return [s for s in order if s in found] + sorted(found - set(order))


def from_annotations(items, classes: list[str] | None = None, groups=None) -> FewShotData:
    """In-app annotations: ``(image or slice, mask or None, class name[, group])`` items.

    The group is the image / series / patient the annotation comes from (e.g. the image layer's
    source path or series UID), so a split never puts slices of one series on both sides; callers
    that annotate slices of a volume must pass it. Without one, each annotation is its own group.
    ``groups`` (one per item) overrides the items' own.
    """
    items = [tuple(it) for it in items]
    bad = [i for i, it in enumerate(items) if len(it) not in (3, 4)]
    if bad:
        raise DataError(f"annotation[{bad[0]}]: expected (image, mask, class[, group]), got {len(items[bad[0]])} values")
    names = [str(it[2]) for it in items]
    classes = list(classes) if classes else sorted(set(names))
    unknown = sorted(set(names) - set(classes))
    if unknown:
        raise DataError(f"annotation class(es) {unknown!r} are not among the classes {classes!r}")
    masks = [None if it[1] is None else np.asarray(it[1]) > 0 for it in items]
    if groups is None:
        groups = [str(it[3]) if len(it) == 4 and it[3] is not None else f"annotation[{i}]"
                  for i, it in enumerate(items)]
    elif len(groups) != len(items):
        raise DataError(f"{len(items)} annotations but {len(groups)} group ids")
    return FewShotData(
        [np.asarray(it[0]) for it in items],
        np.asarray([classes.index(c) for c in names], np.int64),
        classes,
        masks if any(m is not None for m in masks) else None,
        [f"annotation[{i}]" for i in range(len(items))],
        [str(g) for g in groups],
    )


# --- sampling ------------------------------------------------------------------------------------
def _groups_by_class(data: FewShotData) -> tuple[np.ndarray, list[np.ndarray]]:
    """(group id per image, for each class the ids of the groups holding it)."""
    gid = data.group_ids()
    return gid, [np.unique(gid[data.labels == c]) for c in range(len(data.classes))]


def k_shot(data: FewShotData, k: int, seed: int = 0) -> FewShotData:
    """Exactly k images per class, drawn with ``seed``; see :func:`k_shot_split`."""
    return k_shot_split(data, k, seed)[0]


def k_shot_split(data: FewShotData, k: int, seed: int = 0) -> tuple[FewShotData, FewShotData]:
    """(the k shots per class, the rest of the pool without any group the shots came from).

    Shots come from as many different groups as possible (one image per group per round, groups in
    a seeded random order), so 16 shots are 16 cases when the pool has them. A class with fewer
    than k images is an error.
    """
    if k < 1:
        raise DataError(f"k must be at least 1, got {k}")
    counts = data.class_counts()
    short = [f"{data.classes[c]!r} ({n})" for c, n in enumerate(counts) if n < k]
    if short:
        raise DataError(f"{k}-shot sampling: class(es) {', '.join(short)} have fewer than {k} images")
    rng = np.random.default_rng(seed)
    gid = data.group_ids()
    group_order = rng.permutation(gid.max() + 1 if len(gid) else 0)
    rank = np.empty_like(group_order)
    rank[group_order] = np.arange(len(group_order))
    take: list[int] = []
    for c in range(len(data.classes)):
        idx = rng.permutation(np.flatnonzero(data.labels == c))
        # round r takes the r-th image of each group; groups in their random order
        pos_in_group = np.zeros(len(idx), np.int64)
        seen: dict[int, int] = {}
        for j, i in enumerate(idx):
            pos_in_group[j] = seen.get(int(gid[i]), 0)
            seen[int(gid[i])] = pos_in_group[j] + 1
        order = np.lexsort((rank[gid[idx]], pos_in_group))
        take.extend(idx[order[:k]].tolist())
    used = np.isin(gid, gid[take])
    return data.subset(np.sort(take)), data.subset(np.flatnonzero(~used))


def fraction(data: FewShotData, frac: float, seed: int = 0) -> FewShotData:
    """The papers' protocol: ``frac`` (0.05, 0.1, 0.2, 0.5, 1.0) of each class, at least one image each.

    Drawn by group: whole groups are taken (in a seeded random order) until each class has its share,
    so the images left out never share a group with the ones taken. With one image per group (MedMNIST)
    this is exactly ``round(frac * n)`` images per class.
    """
    if not 0.0 < frac <= 1.0:
        raise DataError(f"fraction must be in (0, 1], got {frac}")
    if frac == 1.0:
        return data
    rng = np.random.default_rng(seed)
    gid = data.group_ids()
    counts = data.class_counts()
    target = np.maximum(1, np.round(frac * counts)).astype(np.int64)
    target[counts == 0] = 0
    chosen = _take_groups(data, gid, rng.permutation(gid.max() + 1 if len(gid) else 0), target, keep_rest=False)
    return data.subset(np.flatnonzero(np.isin(gid, chosen)))


def _take_groups(data, gid, order, target, *, keep_rest: bool) -> list[int]:
    """Groups, in ``order``, that bring some class closer to its ``target`` count (or give a class
    with a target its first image); with ``keep_rest`` a group is
    skipped when taking it would leave some class with no image outside the chosen groups."""
    n_classes = len(data.classes)
    per_group = np.zeros((int(gid.max()) + 1 if len(gid) else 0, n_classes), np.int64)
    np.add.at(per_group, (gid, data.labels), 1)
    have = np.zeros(n_classes, np.int64)
    left = per_group.sum(0)
    chosen = []
    for g in order:
        cnt = per_group[g]
        closer = np.abs(have + cnt - target) < np.abs(have - target)
        needs = (cnt > 0) & (((have == 0) & (target > 0)) | closer)
        if not needs.any():
            continue
        if keep_rest and ((left - cnt)[cnt > 0] < 1).any():
            continue
        chosen.append(int(g))
        have += cnt
        left -= cnt
        if (have == target).all():
            break
    return chosen


def split_train_val(data: FewShotData, val_fraction: float, seed: int = 0) -> tuple[FewShotData, FewShotData | None]:
    """A grouped, stratified (train pool, validation) split of a pool: no group on both sides.

    About ``val_fraction`` of each class goes to validation (at least one image), every class keeps
    at least one training image. Make it on the pool *before* sampling shots (:func:`k_shot`), never
    out of the shots. ``val_fraction <= 0``: no validation set. A class whose images all sit in one
    group cannot be split that way: :class:`DataError` naming the class and the group.
    """
    if val_fraction <= 0:
        return data, None
    if val_fraction >= 1:
        raise DataError(f"val_fraction must be below 1, got {val_fraction}")
    gid, class_groups = _groups_by_class(data)
    for c, gs in enumerate(class_groups):
        if len(gs) == 1:
            g = data.groups[int(np.flatnonzero(gid == gs[0])[0])]
            raise DataError(
                f"cannot split class {data.classes[c]!r} into training and validation by group: all its "
                f"{int(data.class_counts()[c])} image(s) belong to group {g!r}. Add images of that class "
                "from another case/series, or give a separate validation set"
            )
        if len(gs) == 0:
            raise DataError(f"class {data.classes[c]!r} has no examples; add images or remove the class")
    counts = data.class_counts()
    target = np.clip(np.round(val_fraction * counts), 1, None).astype(np.int64)
    rng = np.random.default_rng(seed + 7919)
    chosen = _take_groups(data, gid, rng.permutation(int(gid.max()) + 1), target, keep_rest=True)
    in_val = np.isin(gid, chosen)
    missing = [data.classes[c] for c in range(len(data.classes)) if not (in_val & (data.labels == c)).any()]
    if missing:
        raise DataError(
            f"cannot make a grouped validation split with an image of every class: class(es) {missing!r} "
            "share all their groups with classes that need them for training; give a separate validation set"
        )
    return data.subset(np.flatnonzero(~in_val)), data.subset(np.flatnonzero(in_val))
