"""Window/level presets: display contrast limits only (the voxel values are never changed).

CT presets are fixed windows in Hounsfield units (centre/width as used on radiology workstations).
MR, X-ray and other images have no absolute scale, so their presets are percentiles of the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class WindowPreset:
    name: str
    title: str
    center: float | None = None  # HU, for fixed windows
    width: float | None = None
    percentiles: tuple[float, float] | None = None  # for image-relative windows

    @property
    def is_fixed(self) -> bool:
        return self.center is not None


_CT = [
    WindowPreset("soft_tissue", "Soft tissue", 40, 400),
    WindowPreset("lung", "Lung", -600, 1500),
    WindowPreset("bone", "Bone", 400, 1800),
    WindowPreset("brain", "Brain", 40, 80),
    WindowPreset("liver", "Liver / abdomen", 60, 160),
    WindowPreset("mediastinum", "Mediastinum", 50, 350),
]
_RELATIVE = [
    WindowPreset("auto", "Auto (0.5-99.5 %)", percentiles=(0.5, 99.5)),
    WindowPreset("narrow", "Narrow (2-98 %)", percentiles=(2.0, 98.0)),
    WindowPreset("full", "Full range", percentiles=(0.0, 100.0)),
]

#: Every preset by name.
PRESETS: dict[str, WindowPreset] = {p.name: p for p in _CT + _RELATIVE}
DEFAULT_PRESET = {"CT": "soft_tissue"}
_MAX_SAMPLE = 2_000_000


def preset_names(modality: str) -> list[str]:
    """Preset names offered for a modality, the default first."""
    if (modality or "").upper() == "CT":
        return [p.name for p in _CT] + [p.name for p in _RELATIVE]
    return [p.name for p in _RELATIVE]


def default_preset(modality: str) -> str:
    return DEFAULT_PRESET.get((modality or "").upper(), "auto")


def contrast_limits(image: np.ndarray, modality: str, preset: str | None = None) -> tuple[float, float]:
    """(low, high) display limits for ``image`` with ``preset`` (default: the modality's)."""
    name = preset or default_preset(modality)
    if name not in PRESETS:
        raise ValueError(f"unknown window preset {name!r}; choose from {preset_names(modality)}")
    p = PRESETS[name]
    if p.is_fixed:
        return float(p.center - p.width / 2.0), float(p.center + p.width / 2.0)
    return _percentile_limits(np.asarray(image), p.percentiles)


def _percentile_limits(image: np.ndarray, q: tuple[float, float]) -> tuple[float, float]:
    if q == (0.0, 100.0):
        finite = image[np.isfinite(image)] if image.dtype.kind in "fc" else image
        if finite.size == 0:
            return 0.0, 1.0
        lo, hi = float(finite.min()), float(finite.max())
        return (lo, hi) if hi > lo else (lo, lo + 1.0)
    sample = image
    if sample.size > _MAX_SAMPLE:  # a strided subset gives the same percentiles for far less work
        step = int(np.ceil((sample.size / _MAX_SAMPLE) ** (1.0 / sample.ndim)))
        sample = sample[(slice(None, None, step),) * sample.ndim]
    sample = sample[np.isfinite(sample)] if sample.dtype.kind in "fc" else sample.ravel()
    if sample.size == 0:
        return 0.0, 1.0
    lo, hi = (float(v) for v in np.percentile(sample, q))
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi
