"""Input checks shared by every segmentation backend.

Each check raises :class:`~napari_medprompt.segment.base.PromptError` with a message a user can act
on (what is wrong, the numbers involved, what to do instead), so the GUI can show it as is.
Coordinates are in array order: points ``(row, col)``, boxes ``(row0, col0, row1, col1)``.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from napari_medprompt.segment.base import Prompt, PromptError


def check_image(image: np.ndarray) -> np.ndarray:
    """A bindable image: 2D ``(y, x)`` or 3D ``(z, y, x)``, numeric, non-empty."""
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise PromptError(
            f"the image has {arr.ndim} dimensions {tuple(arr.shape)}; segmentation needs a 2D slice "
            "(y, x) or a volume (z, y, x). Split channels or time points into separate layers first."
        )
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 8:
        raise PromptError(
            f"the image looks like a colour (RGB/RGBA) picture, shape {tuple(arr.shape)}: convert it to "
            "grey levels (one value per pixel) before segmenting"
        )
    if arr.size == 0:
        raise PromptError(f"the image is empty (shape {tuple(arr.shape)})")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise PromptError(f"the image has a non-numeric data type ({arr.dtype})")
    return arr


def check_slice_index(slice_index: int, n_slices: int, is_2d: bool = False) -> int:
    """``slice_index`` as an int in ``[0, n_slices)``."""
    try:
        idx = int(slice_index)
    except (TypeError, ValueError):
        raise PromptError(f"slice index {slice_index!r} is not a whole number") from None
    if idx != slice_index:
        raise PromptError(f"slice index {slice_index!r} is not a whole number")
    if is_2d and idx != 0:
        raise PromptError(f"this is a 2D image (a single slice): use slice index 0, not {idx}")
    if not 0 <= idx < n_slices:
        raise PromptError(
            f"slice index {idx} is out of range: the volume has {n_slices} slices (0 to {n_slices - 1})"
        )
    return idx


def require_volume(ndim: int) -> None:
    """Propagation needs a volume; say so clearly for a 2D image."""
    if ndim != 3:
        raise PromptError(
            "this image is 2D (a single slice), so there is nothing to propagate through: use a "
            "prediction on the slice instead, or open the whole volume (z, y, x) to propagate"
        )


def check_slice_range(slice_range: tuple[int, int] | None, n_slices: int) -> tuple[int, int]:
    """The inclusive ``(first, last)`` range to work in; the whole volume when None."""
    if slice_range is None:
        return 0, n_slices - 1
    try:
        first, last = (int(v) for v in slice_range)
    except (TypeError, ValueError):
        raise PromptError(
            f"slice range {slice_range!r} must be two slice indices (first, last)"
        ) from None
    if first > last:
        raise PromptError(f"slice range ({first}, {last}) is reversed: give (first, last) with first <= last")
    if first < 0 or last >= n_slices:
        raise PromptError(
            f"slice range ({first}, {last}) is outside the volume, which has slices 0 to {n_slices - 1}"
        )
    return first, last


def _check_points(prompt: Prompt, shape: tuple[int, int]) -> None:
    h, w = shape
    pts = prompt.points
    if not np.all(np.isfinite(pts)):
        raise PromptError("a point has no valid coordinates (NaN or infinite); remove it and click again")
    for (r, c), lab in zip(pts, prompt.labels):
        if not (-0.5 <= r < h - 0.5 and -0.5 <= c < w - 0.5):
            kind = "positive" if lab == 1 else "negative"
            raise PromptError(
                f"{kind} point at (row {r:.1f}, col {c:.1f}) is outside the {h} x {w} slice; "
                "remove it and click inside the image"
            )


def _check_box(box, shape: tuple[int, int]) -> tuple[float, float, float, float]:
    h, w = shape
    try:
        r0, c0, r1, c1 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise PromptError(f"box {box!r} must be four numbers (row0, col0, row1, col1)") from None
    if not np.all(np.isfinite([r0, c0, r1, c1])):
        raise PromptError("the box has invalid corners (NaN or infinite); draw it again")
    r0, r1 = sorted((r0, r1))
    c0, c1 = sorted((c0, c1))
    if r1 - r0 < 1 or c1 - c0 < 1:
        raise PromptError(
            f"the box ({r0:.0f}, {c0:.0f}) - ({r1:.0f}, {c1:.0f}) has zero area; drag to draw a box "
            "around the structure, or click a point instead"
        )
    if r1 < 0 or c1 < 0 or r0 > h - 1 or c0 > w - 1:
        raise PromptError(
            f"the box ({r0:.0f}, {c0:.0f}) - ({r1:.0f}, {c1:.0f}) lies entirely outside the {h} x {w} "
            "slice; draw it on the image"
        )
    r0, r1 = max(r0, 0.0), min(r1, h - 1.0)
    c0, c1 = max(c0, 0.0), min(c1, w - 1.0)
    if r1 - r0 < 1 or c1 - c0 < 1:
        raise PromptError("the part of the box inside the slice has zero area; draw it on the image")
    return r0, c0, r1, c1


def check_prompt(prompt: Prompt, shape: tuple[int, int]) -> Prompt:
    """Validate ``prompt`` for an ``(H, W)`` slice; returns a normalised copy.

    The returned box has ordered corners clipped to the slice; the mask is a bool array.
    """
    if not isinstance(prompt, Prompt):
        raise PromptError(f"expected a Prompt, got {type(prompt).__name__}")
    shape = (int(shape[0]), int(shape[1]))
    mask = None
    if prompt.mask is not None:
        mask = np.asarray(prompt.mask)
        if mask.shape != shape:
            raise PromptError(
                f"the mask prompt has shape {mask.shape} but the slice is {shape[0]} x {shape[1]}"
            )
        mask = mask.astype(bool)
    bad_labels = sorted(set(np.unique(prompt.labels).tolist()) - {0, 1})
    if bad_labels:
        raise PromptError(f"point labels must be 1 (positive) or 0 (negative), got {bad_labels}")
    has_positive = bool(np.any(prompt.labels == 1))
    has_box = prompt.box is not None
    has_mask = mask is not None and bool(mask.any())
    if not (has_positive or has_box or has_mask):
        if len(prompt.points):
            raise PromptError(
                "only negative points were given: add a positive point or a box on the structure"
            )
        raise PromptError("the prompt is empty: click on the structure, or draw a box around it")
    _check_points(prompt, shape)
    box = _check_box(prompt.box, shape) if has_box else None
    return Prompt(points=prompt.points.copy(), labels=prompt.labels.copy(), box=box, mask=mask)


def check_seeds(
    seeds: Mapping[int, Mapping[int, np.ndarray]], n_slices: int, slice_shape: tuple[int, int]
) -> dict[int, dict[int, np.ndarray]]:
    """Seed masks per object and slice, as bool arrays, with every index and shape checked."""
    if not seeds:
        raise PromptError(
            "nothing to propagate from: segment the object on at least one slice first"
        )
    out: dict[int, dict[int, np.ndarray]] = {}
    for oid, per_slice in seeds.items():
        if not per_slice:
            raise PromptError(f"object {oid} has no seed slice: segment it on one slice first")
        out[int(oid)] = {}
        for z, m in per_slice.items():
            idx = check_slice_index(z, n_slices)
            arr = np.asarray(m)
            if arr.shape != tuple(slice_shape):
                raise PromptError(
                    f"object {oid}: the mask on slice {idx} has shape {arr.shape}, but slices are "
                    f"{slice_shape[0]} x {slice_shape[1]}"
                )
            out[int(oid)][idx] = arr.astype(bool)
        if not any(m.any() for m in out[int(oid)].values()):
            raise PromptError(
                f"object {oid}: every seed mask is empty; segment it on at least one slice first"
            )
    return out
