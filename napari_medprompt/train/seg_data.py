"""Segmentation training data: slices, one binary mask each, the text prompts that name the structure.

A :class:`SegData` holds per sample a raw image (2D grey, RGB, 8/16-bit or float, any size), a mask of
the same height and width (non-zero = the structure), a list of *phrasings* of the structure (the
first is the canonical name, used for evaluation; training draws one phrasing at random per sample
and step, as the VLSM-Adapter code does), a source string for messages and a *group* id: the image,
series or volume the slice comes from. Splits keep each group on one side (neighbouring slices of one
volume never land in both training and validation).

Slices without foreground are allowed (the structure is absent on that slice: the model must learn
to predict nothing there); a set in which every mask is empty cannot train a segmenter and is refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from napari_medprompt.train.data import DataError


@dataclass
class SegData:
    images: list[np.ndarray]
    masks: list[np.ndarray]
    prompts: list[list[str]]  # phrasings per sample; prompts[i][0] is the canonical one
    sources: list[str] = field(default_factory=list)
    groups: list[str] | None = None  # image / series / volume per sample; None: each sample its own group

    def __post_init__(self) -> None:
        n = len(self.images)
        self.prompts = [[p] if isinstance(p, str) else [str(q) for q in p] for p in self.prompts]
        if not self.sources:
            self.sources = [f"slice[{i}]" for i in range(n)]
        self.groups = list(self.sources) if self.groups is None else [str(g) for g in self.groups]
        for what, seq in (("masks", self.masks), ("prompt lists", self.prompts), ("sources", self.sources),
                          ("group ids", self.groups)):
            if len(seq) != n:
                raise DataError(f"{n} images but {len(seq)} {what}")

    # the loop reads these for its events; a segmentation set has one "class": the structure present
    classes = ("foreground",)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> SegData:
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        return SegData([self.images[i] for i in idx], [self.masks[i] for i in idx],
                       [list(self.prompts[i]) for i in idx], [self.sources[i] for i in idx],
                       [self.groups[i] for i in idx])

    def foreground(self) -> np.ndarray:
        """(N,) bool: whether each mask has any foreground pixel."""
        return np.asarray([bool(np.any(np.asarray(m) > 0)) for m in self.masks], bool)

    def structures(self) -> list[str]:
        """The canonical prompt of each structure, in order of first appearance."""
        return list(dict.fromkeys(p[0] for p in self.prompts))

    def counts(self) -> dict:
        fg = self.foreground()
        return {"n": len(self), "with_foreground": int(fg.sum()), "empty": int((~fg).sum()),
                "groups": len(set(self.groups)), "structures": self.structures()}

    def validate(self) -> None:
        """Raise :class:`DataError` for a set that cannot train a segmenter; the message names the sample."""
        if len(self) == 0:
            raise DataError("no segmentation samples: accept at least one object (a slice with its mask) first")
        for im, m, p, src in zip(self.images, self.masks, self.prompts, self.sources):
            if m is None:
                raise DataError(f"{src}: no mask")
            a, b = np.asarray(im), np.asarray(m)
            if b.ndim == 3 and b.shape[-1] == 1:
                b = b[..., 0]
            hw = a.shape[1:3] if (a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4)) else a.shape[:2]
            if b.ndim != 2 or tuple(b.shape) != tuple(hw):
                raise DataError(f"{src}: mask of shape {b.shape} does not match the image's {tuple(hw)}")
            if not p or not all(isinstance(q, str) and q.strip() for q in p):
                raise DataError(f"{src}: no text prompt (name the structure, e.g. 'liver')")
        if not self.foreground().any():
            raise DataError("every mask in the training set is empty: a segmenter cannot learn a structure from "
                            "slices that never show it; add slices where the structure is drawn")

    def fingerprint(self) -> str:
        """SHA-256 of pixels, masks, prompts and groups (not the sources)."""
        h = hashlib.sha256()
        h.update(b"seg-data/1")
        for im, m, p, g in zip(self.images, self.masks, self.prompts, self.groups):
            h.update(json.dumps([p, g]).encode())
            for a in (im, m):
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()


def split_seg(data: SegData, val_fraction: float, seed: int = 0) -> tuple[SegData, SegData]:
    """A grouped validation split: about ``val_fraction`` of the samples, whole groups only, with at
    least one foreground slice on each side when the data allows it. Seeded locally."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    groups = list(dict.fromkeys(data.groups))
    if len(groups) < 2:
        raise DataError(f"all {len(data)} slices come from one image/series ({groups[0]!r}); a validation split "
                        "needs slices from at least two, so that no image is on both sides")
    rng = np.random.default_rng(int(seed))
    fg = data.foreground()
    gid = np.asarray([groups.index(g) for g in data.groups])
    has_fg = np.asarray([fg[gid == k].any() for k in range(len(groups))])
    order = rng.permutation(len(groups))
    # first a foreground group for validation, then others until the fraction is reached
    first = next((int(k) for k in order if has_fg[k]), int(order[0]))
    order = [first] + [int(k) for k in order if k != first]
    target = max(1, int(round(val_fraction * len(data))))
    val_groups, n = [], 0
    for k in order:
        if n >= target or len(val_groups) == len(groups) - 1:
            break
        val_groups.append(k)
        n += int((gid == k).sum())
    in_val = np.isin(gid, val_groups)
    if not fg[~in_val].any():
        raise DataError("after a grouped split, no training slice shows the structure; add more images/series")
    return data.subset(np.flatnonzero(~in_val)), data.subset(np.flatnonzero(in_val))
