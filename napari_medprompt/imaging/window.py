"""Window/level presets (display contrast limits) and the windows segmentation models see.

CT presets are fixed windows in Hounsfield units (centre/width as used on radiology workstations).
MR, X-ray and other images have no absolute scale, so their presets are percentiles of the image.
Voxel values are never changed: a window is only a (low, high) range.

**Model windows.** A model such as SAM2 sees the slice mapped to [0, 1] through a window. By default
that is the window the clinician chose for the display (a lung window for lung nodules, bone for
bone: the model sees what the clinician sees); :func:`resolve_model_window` also takes an explicit
preset, explicit limits, or a checkpoint's own convention. Conventions of published medical SAM
checkpoints (:data:`MODEL_WINDOW_CONVENTIONS`), applied when a checkpoint declares one:

=========  ===================================  =============================================
name       CT                                   MR and other modalities
=========  ===================================  =============================================
medsam     level 40 / width 400 (-160..240 HU)  0.5-99.5 percentiles of the non-zero voxels
medsam2    level 40 / width 400 (-160..240 HU)  0.5-99.5 percentiles of the non-zero voxels
=========  ===================================  =============================================

(MedSAM: ``pre_CT_MR.py`` in bowang-lab/MedSAM, window level 40 / width 400 for CT, percentiles of
the voxels above 0 for MR; MedSAM2 (bowang-lab/MedSAM2) was trained on data prepared the same way.)
Meta's SAM 2 / SAM 2.1 checkpoints were trained on natural images and declare no convention.
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


# ----------------------------------------------------------------------------- model windows

#: What a segmenter's ``model_window`` means when the user has not chosen one.
FOLLOW_DISPLAY = "display"


@dataclass(frozen=True)
class ModelWindowConvention:
    """How a checkpoint's training data was windowed (see the module docstring's table)."""

    name: str
    title: str
    ct_center: float
    ct_width: float
    percentiles: tuple[float, float]  # every other modality: image-relative
    nonzero_only: bool  # percentiles over the voxels > 0 (MedSAM's rule for MR)
    source: str

    def limits(self, image: np.ndarray, modality: str) -> tuple[float, float]:
        if (modality or "").upper() == "CT":
            return float(self.ct_center - self.ct_width / 2.0), float(self.ct_center + self.ct_width / 2.0)
        arr = np.asarray(image)
        if self.nonzero_only:
            vals = arr[arr > 0]
            if vals.size >= 16:
                arr = vals
        return _percentile_limits(arr, self.percentiles)


MODEL_WINDOW_CONVENTIONS: dict[str, ModelWindowConvention] = {
    c.name: c
    for c in (
        ModelWindowConvention(
            "medsam", "MedSAM (CT L40/W400, MR 0.5-99.5 %)", 40.0, 400.0, (0.5, 99.5), True,
            "bowang-lab/MedSAM pre_CT_MR.py: CT window level 40 / width 400; MR 0.5-99.5 percentiles "
            "of the voxels > 0",
        ),
        ModelWindowConvention(
            "medsam2", "MedSAM2 (CT L40/W400, MR 0.5-99.5 %)", 40.0, 400.0, (0.5, 99.5), True,
            "bowang-lab/MedSAM2: trained on CT windowed at level 40 / width 400 and MR clipped to the "
            "0.5-99.5 percentiles (the MedSAM preparation)",
        ),
    )
}


def model_window_choices(modality: str) -> list[str]:
    """What a model-window chooser offers: follow the display, every preset, every convention."""
    return [FOLLOW_DISPLAY, *preset_names(modality), *MODEL_WINDOW_CONVENTIONS]


def check_model_window_choice(choice) -> None:
    """Raise ValueError unless ``choice`` is a valid ``model_window`` (None, a name, or (low, high))."""
    if choice is None:
        return
    if isinstance(choice, str):
        if choice in (FOLLOW_DISPLAY, *PRESETS, *MODEL_WINDOW_CONVENTIONS):
            return
        raise ValueError(
            f"unknown model window {choice!r}; choose one of "
            f"{[FOLLOW_DISPLAY, *PRESETS, *MODEL_WINDOW_CONVENTIONS]} or (low, high)"
        )
    resolve_model_window(np.zeros((1, 1), np.float32), "OT", choice)


def resolve_model_window(
    image: np.ndarray,
    modality: str,
    choice=None,
    *,
    display_preset: str | None = None,
    convention: str | None = None,
) -> tuple[tuple[float, float], str]:
    """The ``(low, high)`` window a model sees, and a description of where it came from.

    ``choice``: None (the checkpoint's ``convention`` when it declares one, else follow the
    display), ``"display"`` (the display preset ``display_preset``, the modality's default preset
    when None), a preset name (``"lung"``), a convention name (``"medsam"``) or explicit
    ``(low, high)`` limits. Raises ValueError naming the valid choices for anything else.
    """
    mod = (modality or "").upper()
    if choice is None:
        choice = convention if convention else FOLLOW_DISPLAY
    if isinstance(choice, str):
        name = choice.strip()
        if name == FOLLOW_DISPLAY:
            preset = display_preset if display_preset in preset_names(mod) else default_preset(mod)
            return contrast_limits(image, mod, preset), f"display preset '{preset}'"
        if name in MODEL_WINDOW_CONVENTIONS:
            conv = MODEL_WINDOW_CONVENTIONS[name]
            return conv.limits(image, mod), f"checkpoint convention '{name}'"
        if name in PRESETS:
            if PRESETS[name].is_fixed and mod != "CT":
                raise ValueError(
                    f"the model window preset {name!r} is in Hounsfield units and the image is {mod or 'not CT'}; "
                    f"choose one of {model_window_choices(mod)}"
                )
            return contrast_limits(image, mod, name), f"preset '{name}'"
        raise ValueError(f"unknown model window {choice!r}; choose one of {model_window_choices(mod)} or (low, high)")
    try:
        lo, hi = (float(v) for v in choice)
    except (TypeError, ValueError):
        raise ValueError(f"model window {choice!r} must be a name or two numbers (low, high)") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise ValueError(f"the model window must have finite low < high, got ({lo}, {hi})")
    return (lo, hi), "explicit limits"
