"""When does a propagated object end? The stop rule shared by every propagation mode.

Zero-shot segmenters keep inventing a mask after the structure has ended, so propagation watches
each new slice and calls it *bad* when

- the backend's object score is below ``settings.min_object_score`` (when the backend gives one),
- the mask vanished (fewer than ``settings.min_area_px`` pixels), or
- the area jumped: it changed by more than a factor ``settings.max_area_ratio`` against the last
  good slice (a leak into a neighbour, or a collapse), or
- the object thinned out into a tube: its area fell below ``settings.min_area_fraction`` of the
  largest area of this run (the seed's, usually) *and* its thickness (the radius of the largest
  disc inside it) below ``settings.min_thickness_fraction`` of the thickest section's. Gradual
  shrinking never trips the jump check, so without this a propagation slides from the end of an
  organ down the vessel leaving it (the liver into the inferior vena cava) and goes on for many
  slices. An organ's last sliver is judged the same way, which costs its tip a slice or two.
- optionally, the mask outgrew the seed: its area above ``settings.max_seed_area_ratio`` times the
  seed's, or more than ``settings.max_outside_seed_fraction`` of it outside the seed's extent (its
  bounding box grown by a quarter of its size each side). Gradual growth never trips the jump check
  either; on images without an absolute scale (MR) a band leaks that way.

After ``settings.patience`` consecutive bad slices the object counts as lost and that direction
stops. A good slice resets the count and becomes the new area reference.

Optionally (``regrow_ratio``), a slice is also bad when the object had shrunk to less than
``shrink_fraction`` of its largest area in this run and then grows again by more than
``regrow_ratio`` over its smallest area since: an organ's cross-section rarely narrows and widens
again, while a segmenter that slid off the end of the organ into a neighbour does exactly that.
"""

from __future__ import annotations

import numpy as np

from napari_medprompt.segment.base import PropagationSettings


class StopRule:
    """Stateful judge for one propagation run (one object, one direction, from one seed).

    ``reset(seed_mask)`` starts a run; ``update(mask, object_score)`` judges the next slice and returns
    True when the object is lost there (``patience`` bad slices in a row). After each update,
    ``last_ok`` says whether that slice was good, ``reason`` why it was not ("" when it was), and
    ``streak`` how many bad slices are in the current run of bad ones.
    """

    def __init__(
        self,
        settings: PropagationSettings | None = None,
        *,
        regrow_ratio: float | None = None,
        shrink_fraction: float = 0.5,
    ) -> None:
        self.settings = settings if settings is not None else PropagationSettings()
        if regrow_ratio is not None and regrow_ratio <= 1.0:
            raise ValueError(f"regrow_ratio must be greater than 1, got {regrow_ratio}")
        self.regrow_ratio = regrow_ratio
        self.shrink_fraction = float(shrink_fraction)
        if self.settings.patience < 1:
            raise ValueError(f"patience must be at least 1, got {self.settings.patience}")
        if self.settings.max_area_ratio <= 1.0:
            raise ValueError(
                f"max_area_ratio must be greater than 1, got {self.settings.max_area_ratio}"
            )
        self.reference_area: float = 0.0
        self.max_area = 0.0
        self.max_thickness = 0.0
        self.min_after_shrink: float | None = None
        self.streak = 0
        self.last_ok = True
        self.reason = ""

    def reset(self, seed_mask: np.ndarray | None) -> None:
        """Start a run from ``seed_mask`` (its area is the first reference)."""
        self.reference_area = float(np.count_nonzero(seed_mask)) if seed_mask is not None else 0.0
        self.max_area = self.reference_area
        self.max_thickness = thickness(seed_mask) if seed_mask is not None else 0.0
        self.seed_area = self.reference_area
        self.seed_extent = _extent(seed_mask)
        self.min_after_shrink = None
        self.streak = 0
        self.last_ok = True
        self.reason = ""

    def judge(self, mask: np.ndarray, object_score: float | None = None) -> str:
        """Why this slice is bad ("" when it is good), without changing the state."""
        s = self.settings
        if object_score is not None and float(object_score) < s.min_object_score:
            return f"object score {float(object_score):.2f} < {s.min_object_score:.2f}"
        area = float(np.count_nonzero(mask))
        if area == 0 or area < s.min_area_px:
            return f"mask vanished ({int(area)} px < {max(s.min_area_px, 1)} px)"
        ref = self.reference_area
        if ref > 0 and ref >= s.min_area_px:
            ratio = max(area / ref, ref / area)
            if ratio > s.max_area_ratio:
                return f"area jumped by x{ratio:.1f} (> x{s.max_area_ratio:g})"
        tail = self._tail(mask, area) or self._outgrown(mask, area)
        if tail:
            return tail
        low = self.min_after_shrink
        if self.regrow_ratio is not None and low is not None and area > self.regrow_ratio * low:
            return f"area grew again (x{area / low:.1f}) after the object had shrunk"
        return ""

    def _tail(self, mask: np.ndarray, area: float) -> str:
        """The thinned-out check (see the module docstring): a reason, or ""."""
        s = self.settings
        frac = float(getattr(s, "min_area_fraction", 0.0) or 0.0)
        thin = float(getattr(s, "min_thickness_fraction", 0.0) or 0.0)
        if frac <= 0 or thin <= 0 or self.max_area <= 0 or area >= frac * self.max_area:
            return ""
        t = thickness(mask)
        if self.max_thickness > 0 and t < thin * self.max_thickness:
            return (
                f"the object thinned out to {100 * area / self.max_area:.0f}% of its largest area and "
                f"{2 * t:.0f} px across ({100 * t / self.max_thickness:.0f}% of its thickest): a thin "
                "tubular structure (a vessel?) or the last sliver, not the object"
            )
        return ""

    def _outgrown(self, mask: np.ndarray, area: float) -> str:
        s = self.settings
        cap = getattr(s, "max_seed_area_ratio", None)
        if cap and self.seed_area > 0 and area > cap * self.seed_area:
            return f"area grew to x{area / self.seed_area:.1f} the seed's (> x{cap:g}): a leak"
        frac = getattr(s, "max_outside_seed_fraction", None)
        ext = getattr(self, "seed_extent", None)
        if frac is not None and ext is not None and area > 0:
            r0, c0, r1, c1 = ext
            dr, dc = max((r1 - r0) // 4, 2), max((c1 - c0) // 4, 2)
            inside = np.count_nonzero(mask[max(r0 - dr, 0) : r1 + dr + 1, max(c0 - dc, 0) : c1 + dc + 1])
            out = 1.0 - inside / area
            if out > frac:
                return f"{100 * out:.0f}% of the mask lies outside the seed's extent: a leak"
        return ""

    def update(self, mask: np.ndarray, object_score: float | None = None) -> bool:
        """Judge the next slice; True when the object is lost here (stop this direction)."""
        self.reason = self.judge(mask, object_score)
        self.last_ok = not self.reason
        if self.last_ok:
            area = float(np.count_nonzero(mask))
            self.streak = 0
            self.reference_area = area
            if area > self.max_area:
                self.max_area = area
                self.max_thickness = max(self.max_thickness, thickness(mask))
            if self.min_after_shrink is not None:
                self.min_after_shrink = min(self.min_after_shrink, area)
            elif area < self.shrink_fraction * self.max_area:
                self.min_after_shrink = area
            return False
        self.streak += 1
        return self.streak >= self.settings.patience


def thickness(mask: np.ndarray | None) -> float:
    """Radius (px) of the largest disc inside ``mask`` (the maximum of its distance transform)."""
    if mask is None:
        return 0.0
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0.0
    from scipy import ndimage as ndi

    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    crop = m[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return float(ndi.distance_transform_edt(np.pad(crop, 1)).max())


def _extent(mask: np.ndarray | None) -> tuple[int, int, int, int] | None:
    if mask is None:
        return None
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return None
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return int(rows[0]), int(cols[0]), int(rows[-1]), int(cols[-1])
