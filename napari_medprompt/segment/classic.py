"""The classic backend: region growing with scikit-image / SciPy. No weights, works offline.

Prompts (array order, see :mod:`napari_medprompt.segment.base`):

- positive points: seeds; the intensity band is learned from their neighbourhood
  (:mod:`napari_medprompt.segment.region_grow`);
- a box: a hard limit (nothing outside it); with no positive point, candidate seeds inside the box
  (its centre, and the deepest point of each Otsu class of its content) are grown and the region
  whose bounding box fits the drawn box best is kept;
- negative points: background markers; the region is cut between them and the seeds;
- a previous mask (a model's or the user's correction): its interior seeds the growth, its
  intensities set the band, and the result stays within a few millimetres of it (refinement).

3D: :meth:`ClassicSegmenter.propagate` runs the shared slice-to-slice driver
(:func:`~napari_medprompt.segment.propagation.propagate_by_projection`) with the shared stop rule.
On each new slice the previous mask's interior seeds the growth and bounds it; the object score is
the share of those pixels whose intensity still matches the object's seed slices, so the object
counts as absent once the tissue under the previous mask has changed.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import replace
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
from scipy import ndimage as ndi

from napari_medprompt.segment.base import PromptError, PropagationSettings, Prompt, SliceResult
from napari_medprompt.segment.propagation import propagate_by_projection
from napari_medprompt.segment.region_grow import (
    Band,
    adaptive_neighbourhood,
    GrowParams,
    PixelParams,
    boundary_support,
    choose_band,
    dilate,
    disk,
    grow,
    reference_band,
    robust_stats,
    seed_neighbourhood,
    smooth,
)
from napari_medprompt.segment.validate import check_image, check_prompt, check_slice_index, require_volume

_SMOOTH_CACHE_SLICES = 8
PROPAGATION_MODES = ("auto", "projection", "connected")
ASSUMED_FOV_MM = 400.0  # field of view assumed when bind() gets no spacing
XRAY_MODALITIES = ("DX", "CR", "XR", "RG", "RF", "MG", "PX")
XRAY_PARAMS = GrowParams(k_sweep=(1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0), leak_jump=float("inf"),
                         max_area_fraction=0.25, correction_reach=4.0)


class ClassicSegmenter:
    """Region growing / flood fill segmenter (see the module docstring). Never uses weights."""

    name = "classic"
    random_weights = False

    def __init__(
        self,
        params: GrowParams | None = None,
        refine_mm: float = 9.0,
        step_mm: float = 4.0,
        regrow_ratio: float | None = 1.5,
    ) -> None:
        self.params = params or GrowParams()
        # propagation also stops where an object that had shrunk grows again (slid into a neighbour)
        self.regrow_ratio = regrow_ratio
        self.refine_mm = float(refine_mm)  # predict: how far a result may move from a mask prompt
        self.step_mm = float(step_mm)  # propagate: how far the outline may move from one slice to the next
        self._image: np.ndarray | None = None
        self._smoothed: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()  # the GUI may predict while a worker propagates
        self.model_window = None
        self.display_preset: str | None = None

    # ------------------------------------------------------------------ binding
    def bind(
        self,
        image: np.ndarray,
        *,
        modality: str = "CT",
        window: tuple[float, float] | None = None,
        spacing: Sequence[float] | None = None,
        key: str | None = None,
        display_preset: str | None = None,
    ) -> None:
        """Use ``image`` ((z, y, x) or (y, x)) from now on; it is read, never modified.

        The classic backend works on the image's own values (HU for CT); ``window`` only scales the
        minimum intensity spread for non-CT images (2% of its width). Its settings are in millimetres,
        so pass ``spacing``; without it the slice is assumed to span 400 mm (a body field of view).
        """
        arr = check_image(image)
        self._image = arr
        self.modality = str(modality or "").upper()
        self.is_ct = self.modality == "CT"
        self.key = key
        if display_preset is not None:
            self.display_preset = display_preset  # recorded only (see set_model_window)
        if spacing is None:
            # unknown pixel size: assume the slice spans a typical 400 mm body field of view
            px_mm = ASSUMED_FOV_MM / max(arr.shape[-2:])
            sp = (px_mm, px_mm)
        else:
            sp_all = tuple(float(v) for v in spacing)
            if len(sp_all) < 2 or any(not np.isfinite(v) or v <= 0 for v in sp_all):
                raise PromptError(f"spacing {spacing!r} must be positive numbers, one per axis")
            sp = sp_all[-2:]
        self.spacing_yx = sp
        self.px = PixelParams.from_mm(self.params, sp)
        self.step_px = max(int(round(self.step_mm / float(np.sqrt(sp[0] * sp[1])))), 1)
        self.grow_params = self.params
        if self.modality in XRAY_MODALITIES and self.params == GrowParams():
            # radiographs: superimposed structures (ribs across the lungs) make the intensity drift
            # across an organ, so no area jump is trusted; only the area cap stops the band
            self.grow_params = XRAY_PARAMS
        if self.is_ct:
            self.spread_floor = self.params.spread_floor
        else:
            if window is None:
                from napari_medprompt.imaging.normalize import default_model_window

                window = default_model_window(arr, self.modality or "OTHER")
            self.spread_floor = 0.02 * abs(float(window[1]) - float(window[0])) or 1e-6
        with self._lock:
            self._smoothed.clear()

    def set_model_window(self, model_window=..., *, display_preset=...) -> None:
        """Recorded only: region growing works on the image's own values (HU on CT), whatever the
        display or model window, so there is no model input to re-window (returns None)."""
        from napari_medprompt.imaging.window import check_model_window_choice

        if model_window is not ...:
            try:
                check_model_window_choice(model_window)
            except ValueError as err:
                raise PromptError(str(err)) from None
            self.model_window = model_window
        if display_preset is not ...:
            self.display_preset = display_preset
        return None

    def provenance_info(self) -> dict:
        """Fields a commit records in provenance besides backend / model / device."""
        return {"model_window": {"window": None, "source": "image values (classic works on raw intensities)"}}

    @property
    def is_2d(self) -> bool:
        return self._require_image().ndim == 2

    @property
    def n_slices(self) -> int:
        img = self._require_image()
        return 1 if img.ndim == 2 else img.shape[0]

    @property
    def slice_shape(self) -> tuple[int, int]:
        img = self._require_image()
        return tuple(img.shape[-2:])  # type: ignore[return-value]

    def _require_image(self) -> np.ndarray:
        if self._image is None:
            raise PromptError("no image is bound: bind an image before segmenting")
        return self._image

    def _slice(self, z: int) -> np.ndarray:
        """The smoothed slice ``z`` (float32), cached for a few slices."""
        with self._lock:
            if z in self._smoothed:
                self._smoothed.move_to_end(z)
                return self._smoothed[z]
        img = self._require_image()
        s = smooth(img if img.ndim == 2 else img[z], self.px.smooth_sigma)
        with self._lock:
            self._smoothed[z] = s
            while len(self._smoothed) > _SMOOTH_CACHE_SLICES:
                self._smoothed.popitem(last=False)
        return s

    # ------------------------------------------------------------------ prediction
    def predict(self, slice_index: int, prompt: Prompt, object_id: int = 1) -> SliceResult:
        """Segment one object on one slice from points / box / previous mask."""
        z = check_slice_index(slice_index, self.n_slices, self.is_2d)
        prompt = check_prompt(prompt, self.slice_shape)
        s = self._slice(z)
        mask, score = self._segment(s, prompt)
        return SliceResult(slice_index=z, mask=mask, score=score, object_id=object_id, source="predicted",
                           flag=flood_flag(mask))

    def _points_mask(self, prompt: Prompt, label: int) -> np.ndarray:
        h, w = self.slice_shape
        m = np.zeros((h, w), dtype=bool)
        pts = prompt.points[prompt.labels == label]
        if len(pts):
            rc = np.clip(np.rint(pts).astype(int), 0, [h - 1, w - 1])
            m[rc[:, 0], rc[:, 1]] = True
        return m

    def _box_mask(self, box) -> np.ndarray:
        h, w = self.slice_shape
        m = np.zeros((h, w), dtype=bool)
        r0, c0, r1, c1 = (int(round(v)) for v in box)
        m[r0 : r1 + 1, c0 : c1 + 1] = True
        return m

    def _box_candidates(self, s: np.ndarray, box) -> list[np.ndarray]:
        """Seed pixels to try for a box without positive points.

        The box content is split by an Otsu threshold; each class's deepest point (largest distance
        to its edge) is a candidate, and so is the box centre.
        """
        from skimage.filters import threshold_otsu

        r0, c0, r1, c1 = (int(round(v)) for v in box)
        sub = s[r0 : r1 + 1, c0 : c1 + 1]
        points = [((r0 + r1) // 2, (c0 + c1) // 2)]
        if sub.size >= 4 and float(sub.max()) > float(sub.min()):
            t = threshold_otsu(sub)
            for cls in (sub > t, sub <= t):
                if cls.any():
                    dist = ndi.distance_transform_edt(np.pad(cls, 1))[1:-1, 1:-1]
                    r, c = np.unravel_index(int(np.argmax(dist)), sub.shape)
                    points.append((r0 + int(r), c0 + int(c)))
        out = []
        for r, c in dict.fromkeys(points):
            m = np.zeros(s.shape, dtype=bool)
            m[r, c] = True
            out.append(m)
        return out

    def _segment(self, s: np.ndarray, prompt: Prompt) -> tuple[np.ndarray, float]:
        pos = self._points_mask(prompt, 1)
        neg = self._points_mask(prompt, 0)
        allowed = self._box_mask(prompt.box) if prompt.box is not None else None
        prev = prompt.mask if prompt.mask is not None and prompt.mask.any() else None
        if prev is not None:
            refine = max(int(round(self.refine_mm / float(np.sqrt(np.prod(self.spacing_yx))))), 1)
            near = dilate(prev, refine)
            allowed = near if allowed is None else (allowed & near)
            core = ndi.binary_erosion(prev, disk(1))
            return self._grow_from(s, pos, core if core.any() else prev, allowed, neg)
        if pos.any():
            return self._grow_clicks(s, prompt, allowed, neg)
        # a box alone: the object is what fills the box best (its outline's bounding box fits the box)
        best = None
        for seed in self._box_candidates(s, prompt.box):
            mask, score = self._grow_from(s, seed, None, allowed, neg)
            fit = _box_fit(mask, prompt.box)
            if best is None or fit > best[0]:
                best = (fit, mask, score)
        return best[1], best[2]

    def _grow_clicks(
        self, s: np.ndarray, prompt: Prompt, allowed: np.ndarray | None, neg: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Positive clicks: the first one defines the object (its statistics, its band); each later
        click outside the region grown so far adds the region grown from that click alone (a
        correction: "this belongs too"), kept local when it would flood. A later click's
        neighbourhood never changes the first click's band: one click on an edge pixel would
        otherwise widen it into the surrounding tissue. On images without HU a correction's region
        also stays within ``correction_reach`` times the click's distance from the region so far."""
        h, w = self.slice_shape
        pts = np.clip(np.rint(prompt.points[prompt.labels == 1]).astype(int), 0, [h - 1, w - 1])
        first = np.zeros((h, w), dtype=bool)
        first[pts[0, 0], pts[0, 1]] = True
        mask, score = self._grow_from(s, first, None, allowed, neg)
        local = max(int(round(20.0 / float(np.sqrt(np.prod(self.spacing_yx))))), 2 * self.px.seed_radius)
        for r, c in pts[1:]:
            if mask[r, c]:
                continue
            seed = np.zeros((h, w), dtype=bool)
            seed[r, c] = True
            extra, _ = self._grow_from(s, seed, None, allowed, np.zeros_like(neg))
            if np.count_nonzero(extra) > max(np.count_nonzero(mask), 1):
                extra &= dilate(seed, local)  # a flood from a correction click: keep its surroundings
            if not self.is_ct and mask.any():
                # no HU: a click on a missed strip along the border (a wall, a blurred edge) gets a
                # band that also takes the neighbour beyond; keep what lies about as far from the
                # region as the strip is thick (correction_reach x the click's distance from it)
                away = float(ndi.distance_transform_edt(~mask)[r, c])
                extra &= dilate(mask, max(self.grow_params.correction_reach * away, 1.5)) | seed
            if neg.any():  # negative clicks keep their neighbourhood out of a correction's region
                extra &= ~seed_neighbourhood(neg, self.px.seed_radius)
            mask |= _keep_component(extra, seed)
        return mask, score

    def _grow_from(
        self,
        s: np.ndarray,
        pos: np.ndarray,
        core: np.ndarray | None,
        allowed: np.ndarray | None,
        neg: np.ndarray,
    ) -> tuple[np.ndarray, float]:
        """Grow from positive pixels ``pos`` and/or the interior ``core`` of a mask prompt."""
        px = self.px
        if core is not None:
            # statistics from the inner half of the mask: a rough outline's rim holds other tissue
            depth = ndi.distance_transform_edt(np.pad(core, 1))[1:-1, 1:-1]
            inner = depth >= max(float(np.median(depth[core])), 1.0)
            stats_from = inner if np.count_nonzero(inner) >= 4 else core
        else:
            if self.is_ct:
                around = seed_neighbourhood(pos, px.seed_radius)
            else:  # no absolute scale: the statistics come from the clicked region itself
                around = adaptive_neighbourhood(s, pos, px.seed_radius, self.spread_floor)
            stats_from = around & allowed if allowed is not None else around
            if not stats_from.any():  # a click outside the box: its own neighbourhood still counts
                stats_from = around
        med, sd = robust_stats(s[stats_from])
        keep_off = seed_neighbourhood(neg, px.seed_radius) if neg.any() else None
        seeds = pos
        if core is not None:
            # the mask's interior seeds the growth, minus pixels of other tissue it may hold
            near_med = core & (np.abs(s - med) <= 2.5 * max(sd, self.spread_floor))
            seeds = pos | (near_med if near_med.any() else core)
            if keep_off is not None and (seeds & ~keep_off).any():
                seeds = seeds & ~keep_off
        band = choose_band(
            s, seeds, (med, sd), is_ct=self.is_ct, params=self.grow_params,
            spread_floor=self.spread_floor, allowed=allowed, blur_px=px.smooth_sigma,
        )
        if core is not None:
            in_band = pos | (seeds & band.contains(s))
            seeds = in_band if in_band.any() else seeds
        mask = grow(s, seeds, band, px, allowed=allowed, negatives=neg if neg.any() else None)
        if allowed is not None:
            mask &= allowed
        if core is None and band.tissue in ("soft", "other") and _share(mask) > CLICK_MAX_FRACTION:
            # a click on a partial-volume pixel (an organ's edge) gets a band that floods the slice:
            # fall back to the narrowest band around the clicked region's statistics
            sd_n = max(sd, self.spread_floor)
            band = Band(med - self.grow_params.k_sweep[0] * sd_n, med + self.grow_params.k_sweep[0] * sd_n,
                        band.tissue)
            narrow = grow(s, seeds, band, px, allowed=allowed, negatives=neg if neg.any() else None)
            if allowed is not None:
                narrow &= allowed
            if np.count_nonzero(narrow) < np.count_nonzero(mask):
                mask = narrow
            if _share(mask) > CLICK_MAX_FRACTION:  # still a flood: keep what lies around the click
                local = max(int(round(20.0 / float(np.sqrt(np.prod(self.spacing_yx))))), 2 * px.seed_radius)
                mask = _keep_component(mask & dilate(seeds, local), seeds)
        return mask, boundary_support(s, mask, band)

    # ------------------------------------------------------------------ 3D
    def propagate(
        self,
        seeds: Mapping[int, Mapping[int, np.ndarray]],
        settings: PropagationSettings | None = None,
    ) -> Iterator[SliceResult]:
        """Propagate objects slice by slice from their seed masks (both directions, stop rule).

        ``settings.mode``: "projection" (or "auto", the default): on each slice the growth is seeded
        by the previous mask's interior and may move its outline by ``step_mm`` at most, with the leak
        cut; "connected": plain connected growth in the intensity band from slice to slice (what a
        3D flood fill gives), meant for high-contrast structures such as lungs, airways or bone.
        """
        require_volume(self._require_image().ndim)
        settings = settings if settings is not None else PropagationSettings()
        if settings.mode not in PROPAGATION_MODES:
            raise PromptError(
                f"the classic backend has no propagation mode {settings.mode!r}; "
                f"use one of {', '.join(PROPAGATION_MODES)}"
            )
        if not self.is_ct and settings.max_seed_area_ratio is None and settings.max_outside_seed_fraction is None:
            # no HU: a band can leak gradually into a neighbour of similar signal, slice after slice
            settings = replace(settings, max_seed_area_ratio=2.0, max_outside_seed_fraction=0.3)
        connected = settings.mode == "connected"
        refs: dict[int, Band] = {}

        def reference(oid: int) -> Band:
            if oid not in refs:
                vals = [self._slice(z)[np.asarray(m, bool)] for z, m in seeds[oid].items() if np.any(m)]
                refs[oid] = reference_band(np.concatenate(vals), self.is_ct, self.spread_floor)
            return refs[oid]

        def predict_next(z: int, prev_mask: np.ndarray, oid: int):
            s = self._slice(z)
            ref = reference(oid)
            core = ndi.binary_erosion(prev_mask, disk(1))
            core = core if core.any() else prev_mask
            inside = ref.contains(s[core])
            presence = float(np.mean(inside))
            seeds = np.zeros_like(core)
            seeds[core] = inside
            if not seeds.any():
                return np.zeros_like(prev_mask), 0.0, presence
            if connected:
                lab, _ = ndi.label(ref.contains(s) | seeds)
                ids = np.unique(lab[seeds])
                mask = np.isin(lab, ids[ids > 0])
            else:
                allowed = dilate(prev_mask, self.step_px)
                mask = grow(s, seeds, ref, self.px, allowed=allowed)
            return mask, boundary_support(s, mask, ref), presence

        return propagate_by_projection(
            predict_next, seeds, self.n_slices, settings, regrow_ratio=self.regrow_ratio
        )

    def prefetch(self, slices: Sequence[int], cancel: threading.Event | None = None) -> Iterator[int]:
        """Nothing to precompute (no embeddings): yields each valid index, honouring ``cancel``."""
        for z in slices:
            if cancel is not None and cancel.is_set():
                return
            yield check_slice_index(z, self.n_slices, self.is_2d)


FLOOD_FRACTION = 0.5
CLICK_MAX_FRACTION = 0.45  # a soft-tissue region grown from one click larger than this is a flood


def _share(mask: np.ndarray) -> float:
    return float(np.count_nonzero(mask)) / max(mask.size, 1)


def flood_flag(mask: np.ndarray) -> str:
    """A warning when ``mask`` covers most of the image (a flood, rarely an object), else ""."""
    share = float(np.count_nonzero(mask)) / max(mask.size, 1)
    if share < FLOOD_FRACTION:
        return ""
    return (f"the mask covers {100 * share:.0f}% of the image: probably a flood into the surroundings, "
            "not the object; add a negative click outside it or draw a box")


def _keep_component(mask: np.ndarray, seed: np.ndarray) -> np.ndarray:
    lab, _ = ndi.label(mask | seed)
    ids = np.unique(lab[seed])
    return np.isin(lab, ids[ids > 0])


def _box_fit(mask: np.ndarray, box) -> float:
    """Intersection over union of ``mask``'s bounding box and ``box`` (0 for an empty mask)."""
    rows = np.flatnonzero(mask.any(axis=1))
    if rows.size == 0:
        return 0.0
    cols = np.flatnonzero(mask.any(axis=0))
    a = (rows[0], cols[0], rows[-1], cols[-1])
    b = tuple(float(v) for v in box)
    ih = min(a[2], b[2]) - max(a[0], b[0]) + 1
    iw = min(a[3], b[3]) - max(a[1], b[1]) + 1
    if ih <= 0 or iw <= 0:
        return 0.0
    inter = ih * iw
    area = lambda r: (r[2] - r[0] + 1) * (r[3] - r[1] + 1)  # noqa: E731
    return float(inter / (area(a) + area(b) - inter))
