"""A simulated clinician: the click protocol of interactive-segmentation benchmarks.

As in RITM / RadioActive and the CVPR 2025 interactive 3D segmentation challenge, the simulated
user

1. places the first click at the *deepest point* of the target (the maximum of its distance
   transform, the image border counting as an edge);
2. then, after each prediction, looks at the errors (``truth & ~pred``: missed, ``pred & ~truth``:
   leaked), takes the *largest connected error region* and clicks at its deepest point: a positive
   click in a miss, a negative click in a leak;
3. stops after ``max_clicks`` clicks (5 here) or when there is no error left.

Dice is recorded after every interaction; ``NoC@t`` is the number of clicks needed to reach Dice
``t`` (the cap, ``max_clicks``, when it is never reached, as these benchmarks count it;
:func:`noc` also says whether it was reached).

3D (:func:`simulate_volume`): the first click goes to the deepest point of the target on the slice
where its cross-section is largest, that slice is segmented and propagated through the volume; each
further click goes to the deepest point (in 3D, in millimetres) of the largest 3D error region, on
the slice holding that point. That slice is re-segmented with all its clicks (a slice whose first
click is negative is corrected from the propagated mask it showed) and becomes one more seed of the
propagation. 3D Dice is recorded after each interaction.

Backend-independent: the caller passes a :class:`~napari_medprompt.segment.base.Segmenter`.
Nothing here imports Qt or torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi

from napari_medprompt.segment.base import PropagationSettings, Prompt, PromptError

DEFAULT_MAX_CLICKS = 5


@dataclass(frozen=True)
class Click:
    """One simulated click: ``point`` in array order (``(row, col)`` or ``(z, row, col)``)."""

    point: tuple[int, ...]
    positive: bool
    region_size: int  # voxels in the error region it corrects (the target itself for the first)

    @property
    def label(self) -> int:
        return 1 if self.positive else 0


@dataclass
class Trace:
    """What one simulated session gave: Dice after each click, and the clicks."""

    dice: list[float] = field(default_factory=list)
    clicks: list[Click] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # PromptError messages (a click the backend refused)

    def noc(self, target: float, cap: int = DEFAULT_MAX_CLICKS) -> int:
        return noc(self.dice, target, cap)[0]

    def dice_at(self, k: int) -> float:
        """Dice after ``k`` clicks (the last value when the session stopped earlier: no error left)."""
        if not self.dice:
            return 0.0
        return self.dice[min(k, len(self.dice)) - 1]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
    if total == 0:
        return 1.0
    return float(2.0 * np.count_nonzero(a & b) / total)


def noc(dices: Sequence[float], target: float, cap: int = DEFAULT_MAX_CLICKS) -> tuple[int, bool]:
    """Clicks needed to reach Dice ``target``: ``(count, reached)``; ``(cap, False)`` when never."""
    for i, d in enumerate(list(dices)[:cap]):
        if d >= target:
            return i + 1, True
    return int(cap), False


def deepest_point(mask: np.ndarray, sampling: Sequence[float] | None = None) -> tuple[int, ...] | None:
    """The voxel of ``mask`` farthest from its edge (the array border counts as edge); None if empty.

    ``sampling`` is the voxel size per axis (millimetres), so a 3D mask of anisotropic voxels is
    measured in millimetres. Ties go to the first voxel in C order (deterministic).
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    dist = ndi.distance_transform_edt(np.pad(m, 1), sampling=sampling)
    dist = dist[tuple(slice(1, -1) for _ in range(m.ndim))]
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(dist)), m.shape))


def next_click(pred: np.ndarray, truth: np.ndarray, sampling: Sequence[float] | None = None) -> Click | None:
    """The click a user makes next: the deepest point of the largest error region; None if no error.

    Missed target (false negative) -> positive click; leak (false positive) -> negative click.
    Regions are connected components (face connectivity); the largest one wins whatever its kind,
    a tie goes to the miss.
    """
    pred = np.asarray(pred, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from the reference {truth.shape}")
    best: tuple[int, bool, np.ndarray] | None = None
    for positive, err in ((True, truth & ~pred), (False, pred & ~truth)):
        if not err.any():
            continue
        lab, n = ndi.label(err)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        sizes[0] = 0
        k = int(np.argmax(sizes))
        if best is None or sizes[k] > best[0]:
            best = (int(sizes[k]), positive, lab == k)
    if best is None:
        return None
    size, positive, region = best
    return Click(point=deepest_point(region, sampling), positive=positive, region_size=size)


def first_click(truth: np.ndarray, sampling: Sequence[float] | None = None) -> Click | None:
    """The first click: a positive one at the deepest point of the target (None for an empty one)."""
    point = deepest_point(truth, sampling)
    if point is None:
        return None
    return Click(point=point, positive=True, region_size=int(np.count_nonzero(truth)))


def _prompt(clicks: Sequence[Click], mask: np.ndarray | None = None) -> Prompt:
    return Prompt(
        points=np.array([c.point[-2:] for c in clicks], dtype=float).reshape(-1, 2),
        labels=np.array([c.label for c in clicks], dtype=int),
        mask=mask if mask is not None and mask.any() else None,
    )


def simulate_slice(segmenter, slice_index: int, truth: np.ndarray, max_clicks: int = DEFAULT_MAX_CLICKS) -> Trace:
    """Run the click protocol on one slice of the image ``segmenter`` is bound to.

    ``truth`` is the reference (H, W) mask on that slice. Each click adds to the prompt (all clicks
    so far are given, as a user's points stay on screen); the backend predicts from the clicks.
    A click the backend refuses (:class:`PromptError`) ends the session with the message recorded.
    """
    truth = np.asarray(truth, dtype=bool)
    trace = Trace()
    click = first_click(truth)
    while click is not None and len(trace.clicks) < max_clicks:
        trace.clicks.append(click)
        try:
            pred = np.asarray(segmenter.predict(slice_index, _prompt(trace.clicks)).mask, dtype=bool)
        except PromptError as err:
            trace.errors.append(str(err))
            trace.clicks.pop()
            break
        trace.dice.append(dice(pred, truth))
        click = next_click(pred, truth)
    return trace


def _propagate(segmenter, seeds: dict[int, np.ndarray], shape, settings: PropagationSettings | None) -> np.ndarray:
    out = np.zeros(shape, dtype=bool)
    for z, m in seeds.items():
        out[z] = m
    for res in segmenter.propagate({1: dict(seeds)}, settings):
        if not res.lost:
            out[res.slice_index] = res.mask
    return out


def simulate_volume(
    segmenter,
    truth: np.ndarray,
    max_clicks: int = DEFAULT_MAX_CLICKS,
    spacing: Sequence[float] | None = None,
    settings: PropagationSettings | None = None,
) -> Trace:
    """Run the 3D click protocol (see the module docstring) on the bound volume; ``truth`` is (z, y, x).

    Returns a :class:`Trace` of 3D Dice after each interaction (click + re-propagation); the clicks'
    points are ``(z, row, col)``.
    """
    truth = np.asarray(truth, dtype=bool)
    if truth.ndim != 3:
        raise ValueError(f"simulate_volume needs a (z, y, x) reference, got shape {truth.shape}")
    trace = Trace()
    if not truth.any():
        return trace
    z0 = int(np.argmax(truth.sum(axis=(1, 2))))
    c2 = first_click(truth[z0])
    click: Click | None = Click(point=(z0, *c2.point), positive=True, region_size=int(np.count_nonzero(truth)))
    per_slice: dict[int, list[Click]] = {}
    base: dict[int, np.ndarray] = {}  # a slice first corrected by a negative click: the mask it corrects
    seeds: dict[int, np.ndarray] = {}
    pred = np.zeros_like(truth)
    while click is not None and len(trace.clicks) < max_clicks:
        z = int(click.point[0])
        if z not in per_slice and not click.positive:
            base[z] = pred[z].copy()  # a leak: the user corrects the propagated mask on that slice
        clicks_here = per_slice.get(z, []) + [click]
        try:
            mask = np.asarray(segmenter.predict(z, _prompt(clicks_here, base.get(z))).mask, dtype=bool)
        except PromptError as err:
            trace.errors.append(f"slice {z}: {err}")
            break
        per_slice[z] = clicks_here
        seeds[z] = mask
        trace.clicks.append(click)
        if any(m.any() for m in seeds.values()):
            pred = _propagate(segmenter, seeds, truth.shape, settings)
        else:
            pred = np.zeros_like(truth)
        trace.dice.append(dice(pred, truth))
        click = next_click(pred, truth, spacing)
    return trace
