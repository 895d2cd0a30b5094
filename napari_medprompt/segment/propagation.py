"""Slice-to-slice ("projection") propagation, shared by every backend.

The driver knows nothing about models: a backend hands it ``predict_next(slice_index, prev_mask,
object_id) -> (mask, score, object_score_or_None)``, which segments ``object_id`` on ``slice_index``
given the mask on the neighbouring slice it came from (a backend typically derives a box and points
from ``prev_mask`` with :func:`prompt_from_mask`). The driver

- walks both directions from every seed slice of every object (a seed is a prompted, accepted or
  hand-corrected mask, so a correction re-enters as a seed and re-propagates from there);
- fills the slices between two seeds from the nearer one (a tie goes to the lower seed) and never
  predicts a seed slice; an empty seed mask ("the object is not on this slice") is a barrier that
  claims no slices, so the neighbouring seed propagates up to it;
- honours ``settings.slice_range`` (seeds outside it are ignored), ``settings.directions`` and
  ``settings.cancel`` (checked before each slice: the generator just ends);
- applies the :class:`~napari_medprompt.segment.stop_rule.StopRule`: a bad slice (low object score,
  vanished mask, area jump) is held back; a good slice after it releases it as predicted, while
  ``patience`` bad slices in a row end that direction and are yielded as ``lost=True`` with empty
  masks. Bad slices still pending at the end of the range are yielded as lost too. While slices are
  bad, the next prediction starts from the last good mask. A released bad slice carries the rule's
  reason in ``flag`` (the GUI commits it as "needs review", never as a plain propagated slice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace

import numpy as np
from scipy import ndimage as ndi

from napari_medprompt.segment.base import PromptError, PropagationSettings, Prompt, SliceResult
from napari_medprompt.segment.stop_rule import StopRule
from napari_medprompt.segment.validate import check_seeds, check_slice_range

log = logging.getLogger(__name__)

PredictNext = Callable[[int, np.ndarray, int], tuple[np.ndarray, float, float | None]]

_DIRECTIONS = ("forward", "backward")


def plan_runs(
    seed_slices: Mapping[int, bool], first: int, last: int, directions=_DIRECTIONS
) -> list[tuple[int, int, int]]:
    """Runs ``(seed_slice, step, end_slice_inclusive)`` that cover ``[first, last]`` for one object.

    ``seed_slices`` maps slice index -> whether its seed mask is non-empty. Between two non-empty seeds
    each slice goes to the nearer seed (ties to the lower one); with only one direction enabled, a seed
    runs all the way to the next seed.
    """
    unknown = set(directions) - set(_DIRECTIONS)
    if unknown:
        raise PromptError(f"unknown propagation direction(s) {sorted(unknown)}; use 'forward' / 'backward'")
    fwd, bwd = "forward" in directions, "backward" in directions
    zs = sorted(z for z in seed_slices if first <= z <= last)
    runs: list[tuple[int, int, int]] = []
    for i, z in enumerate(zs):
        if not seed_slices[z]:
            continue
        prev_z = zs[i - 1] if i > 0 else None
        next_z = zs[i + 1] if i + 1 < len(zs) else None
        if fwd:
            if next_z is None:
                end = last
            elif bwd and seed_slices[next_z]:
                end = z + (next_z - z) // 2
            else:
                end = next_z - 1
            if end > z:
                runs.append((z, 1, end))
        if bwd:
            if prev_z is None:
                end = first
            elif fwd and seed_slices[prev_z]:
                end = prev_z + (z - prev_z) // 2 + 1
            else:
                end = prev_z + 1
            if end < z:
                runs.append((z, -1, end))
    return runs


def _cancelled(settings: PropagationSettings) -> bool:
    return settings.cancel is not None and settings.cancel.is_set()


def _lost(res: SliceResult) -> SliceResult:
    return replace(res, mask=np.zeros_like(res.mask, dtype=bool), lost=True)


def _run(
    predict_next: PredictNext,
    seed_mask: np.ndarray,
    object_id: int,
    seed: int,
    step: int,
    end: int,
    settings: PropagationSettings,
    regrow_ratio: float | None = None,
) -> Iterator[SliceResult | None]:
    """One direction from one seed. Yields None when cancelled (the caller stops everything)."""
    rule = StopRule(settings, regrow_ratio=regrow_ratio)
    rule.reset(seed_mask)
    prev = seed_mask
    pending: list[SliceResult] = []
    for z in range(seed + step, end + step, step):
        if _cancelled(settings):
            yield None
            return
        mask, score, obj_score = predict_next(z, prev, object_id)
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != seed_mask.shape:
            raise ValueError(
                f"predict_next returned a mask of shape {mask.shape} for slice {z}; "
                f"expected {seed_mask.shape}"
            )
        res = SliceResult(
            slice_index=z,
            mask=mask,
            score=float(score),
            object_id=object_id,
            object_score=None if obj_score is None else float(obj_score),
            source="propagated",
        )
        lost = rule.update(mask, obj_score)
        if rule.reason:
            res = replace(res, flag=rule.reason)
        if lost:
            log.debug("object %s lost at slice %d going %+d: %s", object_id, z, step, rule.reason)
            for r in pending:
                yield _lost(r)
            yield _lost(res)
            return
        if rule.last_ok:
            yield from pending
            pending.clear()
            yield res
            prev = mask
        else:
            pending.append(res)
    for r in pending:
        yield _lost(r)


def propagate_by_projection(
    predict_next: PredictNext,
    seeds: Mapping[int, Mapping[int, np.ndarray]],
    n_slices: int,
    settings: PropagationSettings | None = None,
    *,
    regrow_ratio: float | None = None,
) -> Iterator[SliceResult]:
    """Propagate every object from its seed slices through ``n_slices`` slices, yielding as it goes.

    ``regrow_ratio`` turns on the stop rule's shrink-then-regrow check (see
    :class:`~napari_medprompt.segment.stop_rule.StopRule`); off by default.

    ``seeds`` maps object id -> {slice index -> (H, W) bool mask}. Never yields a seed slice. Raises
    :class:`PromptError` at the call itself (before any prediction) for bad seeds or a bad slice range.
    """
    settings = settings if settings is not None else PropagationSettings()
    n_slices = int(n_slices)
    if n_slices < 1:
        raise PromptError("the volume has no slices")
    if not seeds:
        raise PromptError("nothing to propagate from: segment the object on at least one slice first")
    first_masks = next(iter(seeds.values()))
    if not first_masks:
        raise PromptError("nothing to propagate from: segment the object on at least one slice first")
    shape = np.asarray(next(iter(first_masks.values()))).shape
    if len(shape) != 2:
        raise PromptError(f"seed masks must be 2D slices, got shape {shape}")
    checked = check_seeds(seeds, n_slices, shape)
    first, last = check_slice_range(settings.slice_range, n_slices)
    StopRule(settings, regrow_ratio=regrow_ratio)  # validates the settings before anything runs

    plans = {}
    for oid, per_slice in checked.items():
        runs = plan_runs({z: bool(m.any()) for z, m in per_slice.items()}, first, last, settings.directions)
        if not any(first <= z <= last and m.any() for z, m in per_slice.items()):
            log.warning("object %s has no segmented slice in %d-%d; it is not propagated", oid, first, last)
        plans[oid] = runs
    if not any(
        first <= z <= last and m.any() for per_slice in checked.values() for z, m in per_slice.items()
    ):
        raise PromptError(
            f"no object has a segmented slice inside the slice range {first}-{last}: "
            "segment it on a slice inside the range, or widen the range"
        )

    return _drive(predict_next, checked, plans, settings, regrow_ratio)


def _drive(predict_next, checked, plans, settings, regrow_ratio) -> Iterator[SliceResult]:
    for oid, runs in plans.items():
        for seed, step, end in runs:
            run = _run(predict_next, checked[oid][seed], oid, seed, step, end, settings, regrow_ratio)
            for res in run:
                if res is None:
                    return
                yield res


# ----------------------------------------------------------------------------- prompts from masks


def mask_to_box(mask: np.ndarray, margin: float = 0.0) -> tuple[float, float, float, float] | None:
    """Bounding box ``(row0, col0, row1, col1)`` of ``mask`` grown by ``margin`` px and clipped.

    None for an empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(m.any(axis=0))
    h, w = m.shape
    return (
        float(max(rows[0] - margin, 0)),
        float(max(cols[0] - margin, 0)),
        float(min(rows[-1] + margin, h - 1)),
        float(min(cols[-1] + margin, w - 1)),
    )


def mask_interior_points(mask: np.ndarray, n: int = 1, min_separation: float | None = None) -> np.ndarray:
    """Up to ``n`` well-inside points ``(row, col)`` of ``mask``, deepest first.

    The first is the maximum of the distance transform (the point farthest from the border, in the
    largest blob); further ones are the deepest points at least ``min_separation`` px (default: half
    that depth, at least 2) from those already chosen. Empty mask -> shape (0, 2).
    """
    m = np.asarray(mask, dtype=bool)
    if n < 1 or not m.any():
        return np.zeros((0, 2), dtype=float)
    dist = ndi.distance_transform_edt(np.pad(m, 1))[1:-1, 1:-1]
    order = np.argsort(dist, axis=None)[::-1]
    depth = float(dist.flat[order[0]])
    sep = max(depth / 2.0, 2.0) if min_separation is None else float(min_separation)
    chosen: list[tuple[int, int]] = []
    for flat in order:
        if dist.flat[flat] <= 0 or len(chosen) >= n:
            break
        r, c = divmod(int(flat), m.shape[1])
        if all((r - r2) ** 2 + (c - c2) ** 2 >= sep * sep for r2, c2 in chosen):
            chosen.append((r, c))
    return np.asarray(chosen, dtype=float).reshape(-1, 2)


def prompt_from_mask(
    mask: np.ndarray,
    *,
    n_points: int = 1,
    box: bool = True,
    box_margin: float = 2.0,
    include_mask: bool = True,
) -> Prompt:
    """A prompt for the next slice built from this slice's mask: interior points, a box, the mask."""
    m = np.asarray(mask, dtype=bool)
    pts = mask_interior_points(m, n_points)
    return Prompt(
        points=pts,
        labels=np.ones(len(pts), dtype=int),
        box=mask_to_box(m, box_margin) if box else None,
        mask=m.copy() if include_mask else None,
    )
