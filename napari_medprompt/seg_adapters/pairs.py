"""Training pairs for SAM2 adapters: what the clinician fixed, and the prompts a clinician gives.

A pair is (slice, the accepted or corrected mask, the prompts the clinician gave on that slice, the
model's original mask). :func:`pairs_from_session` collects them from an annotation session
(objects' slices with status "accepted" or "edited"); the original mask is the one the caller kept
(``originals``), else the base model's answer to the recorded prompt (``segmenter``), else unknown.

Prompts during training are simulated as clinicians give them (:func:`simulate_prompt`), MedSAM /
SAM2-training style:

- a box around the corrected mask, each side moved by up to ``jitter`` (10 %) of the box's size,
  at most ``max_shift`` (20) pixels;
- 0 to ``max_clicks`` (3) clicks at the deepest points of the error regions
  (:func:`napari_medprompt.segment.simulate.deepest_point`): positive in what the model missed
  (corrected and not original), negative in what it wrongly included (original and not corrected),
  the largest regions first. Without an original mask, clicks are positives inside the mask.

Validation uses :func:`fixed_prompt`: the un-jittered box plus the deterministic clicks, so held-out
Dice is comparable between runs. Splits (:func:`split_pairs`) keep every image / series on one side.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_medprompt.segment.simulate import deepest_point


class PairError(ValueError):
    """The pairs cannot train a SAM2 adapter; the message says why and what to do."""


@dataclass
class SimPrompt:
    """A prompt in (row, col) pixel coordinates of its mask: ``box`` (r0, c0, r1, c1) and clicks."""

    box: tuple[float, float, float, float] | None
    points: np.ndarray  # (K, 2) float (row, col)
    labels: np.ndarray  # (K,) int: 1 positive, 0 negative


class PairKey(str):
    """A sample's text "prompt" in the loop's segmentation data: the structure name (so per-structure
    metrics and JSON see ``"foreground"``) carrying the pair's prompt material (``material``: the
    corrected and original masks at slice resolution), from which the SAM2 model draws its
    box / click prompts."""

    material: dict

    def __new__(cls, name: str, material: dict):
        obj = super().__new__(cls, name)
        obj.material = material
        return obj

    def __reduce__(self):  # copies and pickles keep the material
        return (PairKey, (str(self), self.material))


@dataclass
class Sam2PairData:
    """Pairs as the training loop sees them. ``images``: raw slices (H, W), values as in the volume;
    ``windows``: the (low, high) model window of each slice; ``masks``: the accepted / corrected masks;
    ``originals``: the model's original masks (None where unknown); ``prompts``: what the clinician
    gave (``{"points", "labels", "box"}`` in (row, col), or None); ``groups``: image / series ids."""

    images: list[np.ndarray]
    masks: list[np.ndarray]
    windows: list[tuple[float, float]]
    originals: list[np.ndarray | None] = field(default_factory=list)
    prompts: list[dict | None] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    groups: list[str] | None = None

    classes = ("foreground",)
    is_segmentation_data = True  # the training loop's segmentation task takes it (with SAM2 methods)

    def __post_init__(self) -> None:
        n = len(self.images)
        self.originals = list(self.originals) or [None] * n
        self.prompts = list(self.prompts) or [None] * n
        self.sources = list(self.sources) or [f"slice[{i}]" for i in range(n)]
        self.groups = list(self.sources) if self.groups is None else [str(g) for g in self.groups]
        self.windows = [(float(w[0]), float(w[1])) for w in self.windows]
        for what, seq in (("masks", self.masks), ("windows", self.windows), ("original masks", self.originals),
                          ("prompts", self.prompts), ("sources", self.sources), ("groups", self.groups)):
            if len(seq) != n:
                raise PairError(f"{n} slices but {len(seq)} {what}")

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, idx) -> Sam2PairData:
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        pick = lambda seq: [seq[i] for i in idx]  # noqa: E731
        return Sam2PairData(pick(self.images), pick(self.masks), pick(self.windows), pick(self.originals),
                            pick(self.prompts), pick(self.sources), pick(self.groups))

    def foreground(self) -> np.ndarray:
        return np.asarray([bool(np.any(m)) for m in self.masks], bool)

    def structures(self) -> list[str]:
        return ["foreground"]

    def seg_tensors(self, spec):
        """The loop's tensors for a SAM2 method whose preprocessing is ``spec`` (its ``image_size``;
        each slice is windowed with its own model window): see ``sam2_model.pair_tensors``."""
        from napari_medprompt.seg_adapters.sam2_model import pair_tensors

        return pair_tensors(self, int(spec.image_size if hasattr(spec, "image_size") else spec["image_size"]))

    def to_segdata(self):
        """The pairs as the training loop's segmentation data (:class:`Sam2SegData`): each slice
        windowed to [0, 1] with its model window (the model's preprocessing then maps [0, 1] to
        itself), its mask, and a :class:`PairKey` prompt carrying the corrected and original masks."""
        from napari_medprompt.imaging.normalize import window_to_unit

        self.validate()
        ims = [window_to_unit(np.asarray(im), tuple(w)).astype(np.float32) for im, w in zip(self.images, self.windows)]
        keys = [PairKey("foreground", {"target": np.asarray(m, bool), "original": None if o is None else np.asarray(o, bool)})
                for m, o in zip(self.masks, self.originals)]
        return Sam2SegData(ims, [np.asarray(m, np.uint8) for m in self.masks], keys, list(self.sources), list(self.groups))

    def split(self, fraction: float, seed: int = 0):
        """A grouped held-out split (:func:`split_pairs`) as the loop's task returns it."""
        tr, va = split_pairs(self, fraction, seed)
        return tr, va, (f"held-out split carved from the pairs (about {fraction:g} of them, grouped by "
                        "image/series: no image on both sides)")

    def counts(self) -> dict:
        fg = self.foreground()
        return {"n": len(self), "with_foreground": int(fg.sum()), "empty": int((~fg).sum()),
                "groups": len(set(self.groups)), "structures": self.structures(),
                "with_original": sum(o is not None for o in self.originals),
                "with_prompt": sum(p is not None for p in self.prompts)}

    def validate(self) -> None:
        """Raise :class:`PairError` for pairs that cannot train; the message names the slice."""
        if len(self) == 0:
            raise PairError("no training pairs: accept or correct at least one object's mask on a slice first")
        for im, m, o, w, src in zip(self.images, self.masks, self.originals, self.windows, self.sources):
            im, m = np.asarray(im), np.asarray(m)
            if im.ndim != 2:
                raise PairError(f"{src}: expected a 2D slice, got shape {im.shape}")
            if m.shape != im.shape:
                raise PairError(f"{src}: mask of shape {m.shape} does not match the slice {im.shape}")
            if o is not None and np.shape(o) != im.shape:
                raise PairError(f"{src}: original mask of shape {np.shape(o)} does not match the slice {im.shape}")
            if not m.any():
                raise PairError(f"{src}: the mask is empty; a SAM2 prompt (a box around the structure) needs a "
                                "structure on the slice. Remove the slice or draw the structure")
            if not w[1] > w[0]:
                raise PairError(f"{src}: model window {w} is empty (high must exceed low)")

    def fingerprint(self) -> str:
        """SHA-256 of slices, windows, masks, original masks, prompts and groups."""
        h = hashlib.sha256(b"sam2-pairs/1")
        for im, m, o, w, p, g in zip(self.images, self.masks, self.originals, self.windows, self.prompts, self.groups):
            h.update(json.dumps([list(w), p, g], default=str).encode())
            for a in (im, m, o):
                if a is None:
                    h.update(b"none")
                    continue
                a = np.ascontiguousarray(a)
                h.update(f"{a.dtype.str}{a.shape}".encode())
                h.update(a.tobytes())
        return h.hexdigest()


def split_pairs(data: Sam2PairData, val_fraction: float, seed: int = 0) -> tuple[Sam2PairData, Sam2PairData]:
    """About ``val_fraction`` of the pairs for validation, whole images / series only (seeded locally)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    groups = list(dict.fromkeys(data.groups))
    if len(groups) < 2:
        raise PairError(f"all {len(data)} slices come from one image/series ({groups[0]!r} if any); a held-out "
                        "split needs slices from at least two, so that no image is on both sides")
    rng = np.random.default_rng(int(seed))
    gid = np.asarray([groups.index(g) for g in data.groups])
    target = max(1, int(round(val_fraction * len(data))))
    val, n = [], 0
    for k in rng.permutation(len(groups)):
        if n >= target or len(val) == len(groups) - 1:
            break
        val.append(int(k))
        n += int((gid == k).sum())
    in_val = np.isin(gid, val)
    return data.subset(np.flatnonzero(~in_val)), data.subset(np.flatnonzero(in_val))


# ------------------------------------------------------------------------------------------ prompts
def mask_box(mask: np.ndarray) -> tuple[float, float, float, float] | None:
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return float(rows.min()), float(cols.min()), float(rows.max()), float(cols.max())


def jitter_box(box, shape, rng: np.random.Generator | None, jitter: float = 0.1, max_shift: float = 20.0):
    """Each side of ``box`` moved independently by up to ``jitter`` of the box's size (capped at
    ``max_shift`` pixels), clipped to the image; ``rng`` None returns the box unchanged."""
    r0, c0, r1, c1 = box
    if rng is None:
        return box
    h, w = r1 - r0 + 1, c1 - c0 + 1
    sr, sc = min(jitter * h, max_shift), min(jitter * w, max_shift)
    d = rng.uniform(-1, 1, 4) * np.array([sr, sc, sr, sc])
    r0, c0, r1, c1 = r0 + d[0], c0 + d[1], r1 + d[2], c1 + d[3]
    H, W = shape
    r0, r1 = np.clip(sorted((r0, r1)), 0, H - 1)
    c0, c1 = np.clip(sorted((c0, c1)), 0, W - 1)
    return float(r0), float(c0), float(r1), float(c1)


def error_clicks(target: np.ndarray, original: np.ndarray | None, n: int) -> list[tuple[tuple[int, int], int]]:
    """Up to ``n`` clicks ((row, col), label) at the deepest points of the largest error regions:
    positive in missed regions, negative in wrongly included ones (largest first; a tie goes to the
    miss). Without ``original``: one positive click at the mask's deepest point."""
    target = np.asarray(target, bool)
    if n <= 0:
        return []
    if original is None:
        p = deepest_point(target)
        return [] if p is None else [(p, 1)]
    original = np.asarray(original, bool)
    regions = []
    for label, err in ((1, target & ~original), (0, original & ~target)):
        if not err.any():
            continue
        lab, k = ndi.label(err)
        sizes = np.bincount(lab.ravel(), minlength=k + 1)
        for i in range(1, k + 1):
            regions.append((int(sizes[i]), label, lab, i))
    regions.sort(key=lambda r: (-r[0], -r[1]))
    out = []
    for _size, label, lab, i in regions[:n]:
        p = deepest_point(lab == i)
        if p is not None:
            out.append((p, label))
    return out


def simulate_prompt(target: np.ndarray, original: np.ndarray | None, rng: np.random.Generator, *,
                    jitter: float = 0.1, max_shift: float = 20.0, max_clicks: int = 3) -> SimPrompt:
    """A training prompt: jittered box + 0..``max_clicks`` error clicks (see the module docstring)."""
    box = mask_box(target)
    if box is None:
        raise PairError("cannot simulate a prompt on an empty mask")
    box = jitter_box(box, np.shape(target), rng, jitter, max_shift)
    k = int(rng.integers(0, max_clicks + 1))
    clicks = error_clicks(target, original, k)
    return _as_prompt(box, clicks)


def fixed_prompt(target: np.ndarray, original: np.ndarray | None, clicks: int = 1) -> SimPrompt:
    """The validation prompt: the tight box and ``clicks`` deterministic error clicks."""
    box = mask_box(target)
    if box is None:
        raise PairError("cannot build a prompt on an empty mask")
    return _as_prompt(box, error_clicks(target, original, clicks))


def _as_prompt(box, clicks) -> SimPrompt:
    pts = np.asarray([c[0] for c in clicks], np.float32).reshape(-1, 2)
    lab = np.asarray([c[1] for c in clicks], np.int64)
    return SimPrompt(box, pts, lab)


# ------------------------------------------------------------------------------------------ sessions
def pairs_from_session(session, volume: np.ndarray, window: tuple[float, float], *, statuses=("accepted", "edited"),
                       originals: dict | None = None, segmenter=None, object_ids=None) -> Sam2PairData:
    """Pairs from an :class:`~napari_medprompt.session.AnnotationSession` over ``volume`` (z, y, x).

    One pair per (object, slice) whose status is in ``statuses`` and whose mask is not empty.
    ``originals``: ``{(object_id, z): mask}`` the model gave before the clinician's correction, when
    the caller kept them; otherwise, with ``segmenter`` (a bound SAM2 segmenter in its base state),
    the base model's answer to the prompt recorded on that slice; otherwise None (unknown).
    ``window``: the model window the slices are seen through. Group = the session's image key.
    """
    vol = np.asarray(volume)
    if vol.ndim == 2:
        vol = vol[None]
    if tuple(vol.shape) != tuple(session.shape):
        raise PairError(f"the volume's shape {vol.shape} differs from the session's image {session.shape}")
    originals = dict(originals or {})
    images, masks, origs, prompts, sources = [], [], [], [], []
    for oid, obj in sorted(session.objects.items()):
        if object_ids is not None and oid not in object_ids:
            continue
        for z, status in sorted(obj.slice_status.items()):
            if status not in statuses:
                continue
            m = session.labels[z] == oid
            if not m.any():
                continue
            rec = obj.prompts.get(z)
            orig = originals.get((oid, z))
            if orig is None and segmenter is not None and rec is not None:
                orig = _base_answer(segmenter, z, rec)
            images.append(vol[z])
            masks.append(m)
            origs.append(None if orig is None else np.asarray(orig, bool))
            prompts.append(rec)
            sources.append(f"{session.image_name}: {obj.display_name}, slice {z}")
    if not images:
        raise PairError(f"session {session.image_name!r} has no slice with status {' or '.join(statuses)} and a "
                        "non-empty mask: accept (or correct) objects first")
    n = len(images)
    return Sam2PairData(images, masks, [tuple(window)] * n, origs, prompts, sources, [session.image_key] * n)


def _base_answer(segmenter, z: int, rec: dict) -> np.ndarray | None:
    from napari_medprompt.segment.base import Prompt, PromptError

    try:
        p = Prompt(points=np.asarray(rec.get("points") or np.zeros((0, 2)), float).reshape(-1, 2),
                   labels=np.asarray(rec.get("labels") or [], int),
                   box=None if rec.get("box") is None else tuple(rec["box"]))
        return segmenter.predict(z, p).mask
    except (PromptError, ValueError, TypeError):
        return None


def merge(parts: list[Sam2PairData]) -> Sam2PairData:
    """Several sessions' pairs as one set (groups stay distinct per image)."""
    out = Sam2PairData([], [], [])
    for p in parts:
        out = Sam2PairData(out.images + p.images, out.masks + p.masks, out.windows + p.windows,
                           out.originals + p.originals, out.prompts + p.prompts, out.sources + p.sources,
                           out.groups + p.groups)
    return out


def _segdata_base():
    from napari_medprompt.train.seg_data import SegData

    return SegData


class Sam2SegData(_segdata_base()):
    """:class:`~napari_medprompt.train.seg_data.SegData` whose prompts are :class:`PairKey` objects
    (kept through subsets and splits); its fingerprint covers the original masks too."""

    def subset(self, idx):
        idx = [int(i) for i in np.asarray(idx).reshape(-1)]
        return Sam2SegData([self.images[i] for i in idx], [self.masks[i] for i in idx],
                           [self.prompts[i][0] for i in idx], [self.sources[i] for i in idx],
                           [self.groups[i] for i in idx])

    def fingerprint(self) -> str:
        h = hashlib.sha256(b"sam2-segdata/1")
        h.update(super().fingerprint().encode())
        for p in self.prompts:
            o = getattr(p[0], "material", {}).get("original")
            h.update(b"none" if o is None else np.packbits(np.asarray(o, bool)).tobytes())
        return h.hexdigest()
