"""Drawn prompts turned into what a backend takes: scribbles, lassos and existing label objects.

Coordinates are ``(row, col)`` on one slice (see :mod:`napari_medprompt.segment.base`), on an
``(H, W)`` slice of whichever plane was drawn on.

- **Scribble** (a freehand or straight path): :func:`scribble_points` samples it into positive or
  negative points every few pixels along its length (at most ``max_points``), keeping the samples
  that fall inside the slice; both ends are always kept.
- **Lasso** (a closed freehand polygon): :func:`lasso_mask` fills it into a mask; :func:`mask_prompt`
  makes the mask prompt *and* its bounding box. SAM2 takes the mask as its dense mask input and the
  box as a box prompt. The classic backend has no mask input as such: a mask prompt's interior seeds
  its region growing, the intensity band comes from the mask's inner half, and the result may not
  move further than ``refine_mm`` from the mask, inside the box (so a lasso drawn around an organ
  gives that organ, refined to its edges). An ellipse (:func:`ellipse_mask`) is a lasso too.
- **An existing label object** (a Labels layer's object on this slice): :func:`label_object_mask`
  picks it; it becomes a mask prompt like a lasso.

Bad input raises :class:`~napari_medprompt.segment.base.PromptError` with a message for the user: a
scribble of a single pixel or entirely outside the slice, a lasso with fewer than three distinct
corners, one that crosses itself, one enclosing no pixel of the slice, a label layer whose shape
differs from the image, an object absent from the slice.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from napari_medprompt.segment.base import Prompt, PromptError

#: Scribble samples are at least this many pixels apart ...
SCRIBBLE_STEP_PX = 3.0
#: ... and at most this many per scribble (longer scribbles are sampled more sparsely).
SCRIBBLE_MAX_POINTS = 12


def _vertices(path, what: str) -> np.ndarray:
    arr = np.asarray(path, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) == 0:
        raise PromptError(f"the {what} has no usable vertices (expected (row, col) pairs)")
    if not np.all(np.isfinite(arr)):
        raise PromptError(f"the {what} has a vertex without valid coordinates (NaN or infinite); draw it again")
    keep = np.ones(len(arr), dtype=bool)
    keep[1:] = np.any(np.abs(np.diff(arr, axis=0)) > 1e-9, axis=1)  # drop repeated vertices
    return arr[keep]


def _inside(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    return (points[:, 0] >= -0.5) & (points[:, 0] < h - 0.5) & (points[:, 1] >= -0.5) & (points[:, 1] < w - 0.5)


def scribble_points(
    path,
    shape: Sequence[int],
    positive: bool = True,
    step_px: float = SCRIBBLE_STEP_PX,
    max_points: int = SCRIBBLE_MAX_POINTS,
) -> tuple[np.ndarray, np.ndarray]:
    """``(points (N, 2), labels (N,))`` sampled along the scribble ``path`` ((M, 2) row, col).

    Samples are evenly spaced along the path's length, ``step_px`` apart or further (never more than
    ``max_points``), rounded to pixel centres without duplicates; those outside the slice are dropped.
    """
    shape = (int(shape[0]), int(shape[1]))
    v = _vertices(path, "scribble")
    seg = np.hypot(*np.diff(v, axis=0).T) if len(v) > 1 else np.zeros(0)
    length = float(seg.sum())
    if length < 1.0:
        raise PromptError(
            "the scribble covers a single pixel: drag along the structure (or click a point instead)"
        )
    n = int(min(max_points, max(2, np.floor(length / max(step_px, 1.0)) + 1)))
    along = np.concatenate([[0.0], np.cumsum(seg)])
    t = np.linspace(0.0, length, n)
    pts = np.stack([np.interp(t, along, v[:, 0]), np.interp(t, along, v[:, 1])], axis=1)
    pts = np.round(pts)
    _, first = np.unique(pts, axis=0, return_index=True)
    pts = pts[np.sort(first)]
    pts = pts[_inside(pts, shape)]
    if len(pts) == 0:
        raise PromptError(
            f"the scribble lies entirely outside the {shape[0]} x {shape[1]} slice: draw it on the image"
        )
    labels = np.full(len(pts), 1 if positive else 0, dtype=int)
    return pts, labels


def _segments_cross(p1, p2, q1, q2) -> np.ndarray:
    """Whether segment pairs (p1 p2) and (q1 q2) properly cross or touch (arrays of (K, 2))."""

    def orient(a, b, c):
        return np.sign((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0]))

    def on_seg(a, b, c):  # c collinear with a b: does it lie on the segment?
        return ((np.minimum(a[:, 0], b[:, 0]) <= c[:, 0]) & (c[:, 0] <= np.maximum(a[:, 0], b[:, 0]))
                & (np.minimum(a[:, 1], b[:, 1]) <= c[:, 1]) & (c[:, 1] <= np.maximum(a[:, 1], b[:, 1])))

    o1, o2 = orient(p1, p2, q1), orient(p1, p2, q2)
    o3, o4 = orient(q1, q2, p1), orient(q1, q2, p2)
    cross = (o1 * o2 < 0) & (o3 * o4 < 0)
    touch = ((o1 == 0) & on_seg(p1, p2, q1)) | ((o2 == 0) & on_seg(p1, p2, q2)) \
        | ((o3 == 0) & on_seg(q1, q2, p1)) | ((o4 == 0) & on_seg(q1, q2, p2))
    return cross | touch


def lasso_crosses_itself(polygon) -> bool:
    """Whether the closed polygon ``polygon`` ((M, 2)) has two non-adjacent edges that meet."""
    v = _vertices(polygon, "lasso")
    if len(v) > 1 and np.allclose(v[0], v[-1]):
        v = v[:-1]
    m = len(v)
    if m < 4:
        return False
    a, b = v, np.roll(v, -1, axis=0)  # edge i: v[i] -> v[i+1]
    i, j = np.triu_indices(m, k=2)
    adjacent = (i == 0) & (j == m - 1)  # the closing edge meets the first one at v[0]
    i, j = i[~adjacent], j[~adjacent]
    return bool(_segments_cross(a[i], b[i], a[j], b[j]).any())


def lasso_mask(polygon, shape: Sequence[int]) -> np.ndarray:
    """The pixels inside the closed lasso ``polygon`` ((M, 2) row, col) on an ``(H, W)`` slice."""
    from skimage.draw import polygon2mask

    shape = (int(shape[0]), int(shape[1]))
    v = _vertices(polygon, "lasso")
    if len(v) > 1 and np.allclose(v[0], v[-1]):
        v = v[:-1]
    if len(np.unique(np.round(v, 6), axis=0)) < 3:
        raise PromptError("the lasso needs at least three distinct corners: draw around the structure")
    if lasso_crosses_itself(v):
        raise PromptError(
            "the lasso crosses itself, so its inside is ambiguous: draw one closed loop around the "
            "structure without crossing your own line"
        )
    mask = polygon2mask(shape, v)
    if not mask.any():
        inside = _inside(v, shape).any()
        raise PromptError(
            "the lasso encloses no pixel of the slice: draw it around the structure"
            if inside else f"the lasso lies outside the {shape[0]} x {shape[1]} slice: draw it on the image"
        )
    return mask


def ellipse_mask(corners, shape: Sequence[int]) -> np.ndarray:
    """The pixels inside the axis-aligned ellipse inscribed in the box of ``corners`` ((M, 2) row, col;
    napari's ellipse shape stores its four bounding-box corners)."""
    from skimage.draw import ellipse

    shape = (int(shape[0]), int(shape[1]))
    v = _vertices(corners, "ellipse")
    (r0, c0), (r1, c1) = v.min(axis=0), v.max(axis=0)
    if r1 - r0 < 1 or c1 - c0 < 1:
        raise PromptError("the ellipse has zero area: drag to draw it around the structure")
    rr, cc = ellipse((r0 + r1) / 2, (c0 + c1) / 2, (r1 - r0) / 2, (c1 - c0) / 2, shape=shape)
    mask = np.zeros(shape, dtype=bool)
    mask[rr, cc] = True
    if not mask.any():
        raise PromptError(f"the ellipse lies outside the {shape[0]} x {shape[1]} slice: draw it on the image")
    return mask


def mask_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """The bounding box ``(row0, col0, row1, col1)`` of a non-empty mask."""
    rows, cols = np.nonzero(mask)
    return float(rows.min()), float(cols.min()), float(rows.max()), float(cols.max())


def mask_prompt(mask: np.ndarray, points=None, labels=None) -> Prompt:
    """A prompt from a mask (a lasso, a label object): the mask and its box, plus any points.

    A box narrower than 2 pixels is left out (it would have zero area); the mask alone then counts."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise PromptError("the mask prompt is empty: draw a lasso around the structure")
    r0, c0, r1, c1 = mask_box(mask)
    box = (r0, c0, r1, c1) if r1 - r0 >= 1 and c1 - c0 >= 1 else None
    pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=float).reshape(-1, 2)
    labs = np.zeros(0, dtype=int) if labels is None else np.asarray(labels, dtype=int).reshape(-1)
    return Prompt(points=pts, labels=labs, box=box, mask=mask)


def check_label_volume(labels_shape: Sequence[int], image_shape: Sequence[int], name: str = "labels") -> None:
    """A label layer can prompt the image only if it has the image's shape."""
    if tuple(int(n) for n in labels_shape) != tuple(int(n) for n in image_shape):
        raise PromptError(
            f"the label layer '{name}' has shape {tuple(labels_shape)} but the image is "
            f"{tuple(image_shape)}: choose a label layer made for this image"
        )


def label_object_mask(labels_slice: np.ndarray, object_id: int | None = None, name: str = "labels") -> tuple[int, np.ndarray]:
    """``(object id, mask)`` of one object of a label slice: ``object_id`` when given and present,
    else the largest object on the slice."""
    arr = np.asarray(labels_slice)
    if arr.dtype.kind not in "iub":
        raise PromptError(f"the layer '{name}' holds {arr.dtype} values, not integer labels")
    ids, counts = np.unique(arr[arr > 0], return_counts=True)
    if len(ids) == 0:
        raise PromptError(f"the label layer '{name}' has no object on this slice: go to a slice where it does")
    if object_id is not None and int(object_id) in ids:
        oid = int(object_id)
    else:
        oid = int(ids[np.argmax(counts)])
    return oid, arr == oid
