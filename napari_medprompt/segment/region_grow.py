"""Region growing on one slice: the algorithm behind the classic (no-weights) backend.

Everything works on the slice's own intensities (Hounsfield units for CT), lightly smoothed:

1. **Intensity band** from the seeds: median and robust spread (MAD) of the smoothed pixels around
   the positive clicks (or inside a previous mask). On CT the tissue class sets the band's shape:
   air / lung seeds (median below -400 HU) take everything darker than halfway to water, dense seeds
   (bone, contrast, above 180 HU) everything brighter than halfway to soft tissue (at most 150 HU,
   so cancellous bone is in); soft-tissue seeds (and every other modality) take
   ``median +- k * spread``, with ``k`` swept upwards and stopped just before the grown area jumps
   after a stable step (the moment the region leaks into a neighbour). Where most of the region's
   rim is clearly different, that band limit moves halfway towards it (blurred high-contrast edges).
2. **Flood fill**: the connected part of the band (inside the allowed area: box, neighbourhood of a
   previous mask) that touches the seeds.
3. **Leak cut** (soft tissue and bone, where neighbours share the intensity): a morphological
   opening splits the region at narrow bridges; the pieces that do not hold a seed become competing
   markers of a watershed on the intensity gradient, negative clicks cut the region by a random
   walker, and only the seeds' share is kept, trimmed to just beyond the opened core.
4. **Clean-up**: small holes filled (all holes for bone: the marrow), only components holding a
   positive seed kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

AIR_MAX_HU = -400.0  # seeds darker than this are air / lung
DENSE_MIN_HU = 180.0  # seeds brighter than this are bone / contrast
BONE_EDGE_HU = 150.0  # the dense band reaches down to at least this (cancellous bone)
WATER_HU = 0.0
SOFT_TISSUE_HU = 40.0


@dataclass(frozen=True)
class GrowParams:
    """Tuning in millimetres (converted to pixels with the slice's spacing)."""

    smooth_mm: float = 2.0  # Gaussian sigma of the light smoothing
    seed_radius_mm: float = 6.0  # neighbourhood around a click for the intensity statistics
    open_mm: float = 6.0  # opening radius of the leak cut
    hole_mm2: float = 180.0  # holes smaller than this are filled
    spread_floor: float = 10.0  # minimum spread (HU for CT; other modalities: scaled by window)
    k_sweep: tuple[float, ...] = (1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
    leak_jump: float = 1.6  # area growth between two k steps that counts as a leak
    max_area_fraction: float = 0.35  # non-HU images: a one-click region larger than this share of the
    # slice (or of the box) is a flood, not an object: the band stops before it
    edge_halfway: bool = True  # move a band limit to halfway towards a clearly different rim
    correction_reach: float = 2.0  # non-HU images: a later positive click outside the region adds only
    # pixels within this many times its distance from the region (a missed strip along the border is
    # about twice as thick as the distance from its deepest point to the region)


@dataclass(frozen=True)
class PixelParams:
    smooth_sigma: float
    seed_radius: int
    open_radius: int
    hole_px: int

    @classmethod
    def from_mm(cls, p: GrowParams, spacing_yx: tuple[float, float]) -> PixelParams:
        px = float(np.sqrt(spacing_yx[0] * spacing_yx[1]))
        return cls(
            smooth_sigma=float(np.clip(p.smooth_mm / px, 0.5, 2.0)),
            seed_radius=int(np.clip(round(p.seed_radius_mm / px), 1, 8)),
            open_radius=int(np.clip(round(p.open_mm / px), 1, 5)),
            hole_px=max(int(round(p.hole_mm2 / (spacing_yx[0] * spacing_yx[1]))), 4),
        )


def disk(radius: int) -> np.ndarray:
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return x * x + y * y <= radius * radius


def dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a Euclidean disk of ``radius`` (as with :func:`disk`), via a distance transform."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    win = _crop(mask, int(np.ceil(radius)))
    out = np.zeros_like(mask)
    out[win] = ndi.distance_transform_edt(~mask[win]) <= radius
    return out


def erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Erosion by a Euclidean disk of ``radius``; outside the image counts as background."""
    if radius <= 0 or not mask.any():
        return mask.copy()
    win = _crop(mask, 0)
    out = np.zeros_like(mask)
    out[win] = ndi.distance_transform_edt(np.pad(mask[win], 1))[1:-1, 1:-1] > radius
    return out


def opening(mask: np.ndarray, radius: float) -> np.ndarray:
    return dilate(erode(mask, radius), radius)


def smooth(slice_2d: np.ndarray, sigma: float) -> np.ndarray:
    """Float32 Gaussian-smoothed copy (the input is never modified; NaN / inf count as the minimum)."""
    arr = np.asarray(slice_2d, dtype=np.float32)
    finite = np.isfinite(arr)
    if not finite.all():
        arr = np.where(finite, arr, arr[finite].min() if finite.any() else 0.0).astype(np.float32)
    return ndi.gaussian_filter(arr, sigma=sigma, mode="nearest")


def robust_stats(values: np.ndarray) -> tuple[float, float]:
    """Median and MAD-based standard deviation."""
    med = float(np.median(values))
    return med, 1.4826 * float(np.median(np.abs(values - med)))


def adaptive_neighbourhood(s: np.ndarray, seeds: np.ndarray, radius: int, spread_floor: float) -> np.ndarray:
    """The clicked region for the statistics on images without an absolute scale (MR, X-ray).

    Around each seed pixel, a disc grown ring by ring (from 2 px up to ``radius``) while each new
    ring's median stays within 2 robust standard deviations of the inner disc's: a click in a small
    lesion takes its statistics from the lesion, not from the tissue around it.
    """
    out = np.zeros_like(seeds)
    pts = np.argwhere(seeds)
    h, w = s.shape
    for r0, c0 in pts[:: max(1, len(pts) // 64)]:  # a mask's interior: a sample of its pixels
        rr = int(radius)
        ys, xs = np.ogrid[max(r0 - rr, 0) : min(r0 + rr + 1, h), max(c0 - rr, 0) : min(c0 + rr + 1, w)]
        d2 = (ys - r0) ** 2 + (xs - c0) ** 2
        win = s[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
        inner = d2 <= 4
        med, sd = robust_stats(win[inner])
        sd = max(sd, spread_floor)
        keep = 2
        for r in range(3, rr + 1):
            ring = (d2 > (r - 1) ** 2) & (d2 <= r * r)
            if not ring.any() or abs(float(np.median(win[ring])) - med) > 2.0 * sd:
                break
            keep = r
        disc = d2 <= keep * keep
        out[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1] |= disc
    return out


def seed_neighbourhood(seeds: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of a seed pixel (dilation of the seeds' bounding box only: cheap)."""
    if radius <= 0 or not seeds.any():
        return seeds.copy()
    return dilate(seeds, radius)


@dataclass
class Band:
    lo: float
    hi: float
    tissue: str  # "air" | "dense" | "soft" | "other"

    def contains(self, values: np.ndarray) -> np.ndarray:
        return (values >= self.lo) & (values <= self.hi)


def _components_with(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """The connected components of ``mask`` that hold a seed pixel."""
    lab, n = ndi.label(mask)
    keep = np.zeros(n + 1, dtype=bool)
    keep[lab[seeds]] = True
    keep[0] = False
    return keep[lab]


def _flood(s: np.ndarray, seeds: np.ndarray, band: Band, allowed: np.ndarray | None) -> np.ndarray:
    inb = band.contains(s) | seeds
    if allowed is not None:
        inb &= allowed | seeds
    return _components_with(inb, seeds)


def choose_band(
    s: np.ndarray,
    seeds: np.ndarray,
    stats: tuple[float, float],
    *,
    is_ct: bool,
    params: GrowParams,
    spread_floor: float,
    allowed: np.ndarray | None,
    blur_px: float = 1.0,
) -> Band:
    """The intensity band for these seeds (see the module docstring).

    ``blur_px`` (the smoothing sigma) sets how far out the rim is sampled when a limit moves to a
    clearly different surrounding.
    """
    med, sd = stats
    sd = max(sd, spread_floor)
    if is_ct and med < AIR_MAX_HU:
        return Band(-np.inf, (med + WATER_HU) / 2.0, "air")
    if is_ct and med > DENSE_MIN_HU:
        return Band(min((med + SOFT_TISSUE_HU) / 2.0, BONE_EDGE_HU), np.inf, "dense")
    if not is_ct:
        band = _sweep_relative(s, seeds, med, sd, params, allowed)
        if params.edge_halfway:
            band = _extend_to_edges(s, seeds, band, med, sd, params, allowed, blur_px)
        return band
    # widen k while the area grows smoothly; a jump after a stable step is a leak (stop before it),
    # while jumps before any stable step mean the click sat in a small detail (a vessel, noise) and
    # the band is still reaching the structure itself
    ks = params.k_sweep
    prev_area = None
    chosen = ks[0]
    stable = False
    for k in ks:
        area = int(np.count_nonzero(_flood(s, seeds, Band(med - k * sd, med + k * sd, ""), allowed)))
        if prev_area is not None:
            if area > params.leak_jump * prev_area:
                if stable:
                    break
            else:
                stable = True
        chosen = k
        prev_area = area
    if not stable:
        chosen = ks[0]
    band = Band(med - chosen * sd, med + chosen * sd, "soft" if is_ct else "other")
    if params.edge_halfway:
        band = _extend_to_edges(s, seeds, band, med, sd, params, allowed, blur_px)
    return band


def _sweep_relative(
    s: np.ndarray, seeds: np.ndarray, med: float, sd: float, params: GrowParams, allowed: np.ndarray | None
) -> Band:
    """Band width for images without an absolute scale (MR, X-ray, other).

    ``k`` widens from the narrowest step and stops before the first leak: a region above
    ``max_area_fraction`` of the slice (or of the allowed area), or an area jump (``leak_jump``) once
    the region is larger than the clicked neighbourhood. Unlike on CT there is no tissue prior to
    say that an early jump is only the band reaching the structure, so any jump counts.
    """
    limit = params.max_area_fraction * (np.count_nonzero(allowed) if allowed is not None else s.size)
    min_area = 2 * max(int(np.count_nonzero(seeds)), 12)
    chosen, prev_area = params.k_sweep[0], None
    for k in params.k_sweep:
        area = int(np.count_nonzero(_flood(s, seeds, Band(med - k * sd, med + k * sd, ""), allowed)))
        if area > limit and prev_area is not None:
            break
        if prev_area is not None and prev_area >= min_area and area > params.leak_jump * prev_area:
            break
        chosen, prev_area = k, area
    return Band(med - chosen * sd, med + chosen * sd, "other")


def _extend_to_edges(
    s: np.ndarray,
    seeds: np.ndarray,
    band: Band,
    med: float,
    sd: float,
    params: GrowParams,
    allowed: np.ndarray | None,
    blur_px: float = 1.0,
) -> Band:
    """Move a band limit to halfway between the object and a clearly different surrounding.

    A narrow band stops short of a blurred high-contrast edge; where most of the region's rim lies
    well beyond one limit, that limit moves to halfway between the object's median and the rim's
    median on that side, unless the region then grows beyond its blurred edge (a leak).
    """
    region = _flood(s, seeds, band, allowed)
    if not region.any():
        return band
    gap = max(int(np.ceil(2 * blur_px)), 2)  # beyond the blurred edge
    win = _crop(region, gap + 4)
    dist_out = ndi.distance_transform_edt(~region[win])  # distance from the region
    ring = (dist_out > gap) & (dist_out <= gap + 3)  # may lie outside a box: it only informs
    vals = s[win][ring]
    if vals.size < 8:
        return band
    lo, hi = band.lo, band.hi
    below, above = vals[vals < band.lo], vals[vals > band.hi]
    if below.size >= 0.5 * vals.size and float(np.median(below)) < band.lo - 2 * sd:
        lo = min(lo, (med + float(np.median(below))) / 2.0)
    if above.size >= 0.5 * vals.size and float(np.median(above)) > band.hi + 2 * sd:
        hi = max(hi, (med + float(np.median(above))) / 2.0)
    if (lo, hi) == (band.lo, band.hi):
        return band
    wider = Band(lo, hi, band.tissue)
    grown = _flood(s, seeds, wider, allowed)
    # the wider band may only take the blurred edge: anything beyond it is a leak
    near = np.zeros_like(region)
    near[win] = dist_out <= gap + 1
    far = grown & ~near
    if np.count_nonzero(far) > 0.05 * np.count_nonzero(region):
        return band
    return wider


def reference_band(values: np.ndarray, is_ct: bool, spread_floor: float, k: float = 2.5) -> Band:
    """A fixed band for an object from its pixels (propagation): tissue-aware on CT, else +- k spread."""
    med, sd = robust_stats(values)
    sd = max(sd, spread_floor)
    if is_ct and med < AIR_MAX_HU:
        return Band(-np.inf, (med + WATER_HU) / 2.0, "air")
    if is_ct and med > DENSE_MIN_HU:
        return Band(min((med + SOFT_TISSUE_HU) / 2.0, BONE_EDGE_HU), np.inf, "dense")
    return Band(med - k * sd, med + k * sd, "soft" if is_ct else "other")


def _keep_seeded(mask: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    return _components_with(mask, seeds & mask)


def _fill_small_holes(mask: np.ndarray, max_hole_px: int) -> np.ndarray:
    """Fill the holes (background not connected to the crop's border) of at most ``max_hole_px``."""
    if not mask.any():
        return mask
    win = _crop(mask, 1)
    lab, n = ndi.label(~mask[win])
    if n <= 1:
        return mask
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    fill = sizes <= max_hole_px
    fill[border] = False
    fill[0] = False
    if not fill.any():
        return mask
    out = mask.copy()
    out[win] |= fill[lab]
    return out


def _crop(mask: np.ndarray, pad: int) -> tuple[slice, slice]:
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    h, w = mask.shape
    return (
        slice(max(rows[0] - pad, 0), min(rows[-1] + pad + 1, h)),
        slice(max(cols[0] - pad, 0), min(cols[-1] + pad + 1, w)),
    )


def leak_cut(
    s: np.ndarray, region: np.ndarray, seeds: np.ndarray, negatives: np.ndarray | None, open_radius: int
) -> np.ndarray:
    """Cut ``region`` at narrow bridges and at negative clicks; keep the seeds' side.

    Markers of a watershed on the gradient: the pieces left by an opening of radius ``open_radius``
    (those holding a seed are the object, the others are neighbours), and the negative clicks. A piece
    that holds both a seed and a negative click is replaced by the clicks themselves, so the region is
    cut between them. The kept part is trimmed to ``open_radius`` beyond the opened object.
    """
    from skimage.segmentation import watershed

    if not region.any():
        return region
    win = _crop(region, open_radius + 2)
    reg, sd, sub = region[win], seeds[win] & region[win], s[win]
    neg = negatives[win] & reg if negatives is not None else np.zeros_like(reg)
    if open_radius > 0:
        markers, _ = ndi.label(opening(reg, open_radius))
    else:
        markers = np.zeros(reg.shape, dtype=np.int32)
    core_ids = set(np.unique(markers[sd]).tolist()) - {0}
    body = np.isin(markers, list(core_ids)) if core_ids else sd.copy()
    mixed = core_ids & (set(np.unique(markers[neg]).tolist()) - {0})
    if mixed:
        markers[np.isin(markers, list(mixed))] = 0
        core_ids -= mixed
    if not core_ids or mixed:
        seed_id = int(markers.max()) + 1
        markers[sd] = seed_id
        core_ids.add(seed_id)
    if neg.any():
        markers[neg] = int(markers.max()) + 1
    if neg.any():
        reg = _random_walk_split(sub, reg, markers, core_ids)
    elif len(set(np.unique(markers).tolist()) - {0}) > len(core_ids):
        gy = ndi.sobel(sub, axis=0)
        gx = ndi.sobel(sub, axis=1)
        ws = watershed(np.hypot(gy, gx), markers, mask=reg)
        reg = np.isin(ws, list(core_ids))
    if open_radius > 0:
        reg &= dilate(body, open_radius)
    out = np.zeros_like(region)
    out[win] = reg
    return out


def _random_walk_split(
    sub: np.ndarray, reg: np.ndarray, markers: np.ndarray, core_ids: set[int]
) -> np.ndarray:
    """Random walker inside ``reg``: object markers against every other marker (negative clicks)."""
    from skimage.segmentation import random_walker

    labels = np.where(reg, 0, -1).astype(np.int32)
    has = markers > 0
    labels[has & reg] = np.where(np.isin(markers[has & reg], list(core_ids)), 1, 2)
    if not (labels == 2).any() or not (labels == 1).any():
        return reg
    out = random_walker(sub.astype(np.float64), labels, beta=130, mode="cg_j", tol=1e-3)
    return reg & (out == 1)


def grow(
    s: np.ndarray,
    seeds: np.ndarray,
    band: Band,
    px: PixelParams,
    *,
    allowed: np.ndarray | None = None,
    negatives: np.ndarray | None = None,
) -> np.ndarray:
    """Flood fill in ``band`` from ``seeds``, leak cut (soft tissue), clean-up."""
    region = _flood(s, seeds, band, allowed)
    hole_px = region.size if band.tissue == "dense" else px.hole_px  # bone: marrow is inside
    region = _fill_small_holes(region, hole_px)
    if allowed is not None:
        region &= allowed | seeds
    cut_radius = px.open_radius if band.tissue in ("soft", "other", "dense") else 0
    if cut_radius or (negatives is not None and negatives.any()):
        region = leak_cut(s, region, seeds, negatives, cut_radius)
        region = _fill_small_holes(region, hole_px)
        if allowed is not None:
            region &= allowed | seeds
    if negatives is not None:
        region &= ~negatives
    return _keep_seeded(region, seeds)


def boundary_support(s: np.ndarray, mask: np.ndarray, band: Band) -> float:
    """Share of the pixels just outside ``mask`` that lie outside the band (a real intensity edge).

    1.0 when the mask is bounded by intensity edges all round; lower where it was cut (leak cut,
    box, negative click) inside tissue of the same intensity. 0 for an empty mask.
    """
    if not mask.any():
        return 0.0
    ring = ndi.binary_dilation(mask) & ~mask
    if not ring.any():
        return 1.0
    return float(np.mean(~band.contains(s[ring])))
