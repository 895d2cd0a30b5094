"""Intensity normalisation for models. Returns new arrays; the caller's data is never modified."""

from __future__ import annotations

import numpy as np

# The window a model sees by default, per modality. CT: a wide abdominal window that keeps soft
# tissue, fat, lung and bone apart. Other modalities: robust percentiles of the bound image.
MODEL_WINDOW_CT: tuple[float, float] = (-300.0, 400.0)


def default_model_window(image: np.ndarray, modality: str = "CT") -> tuple[float, float]:
    """The intensity range mapped to [0, 1] for a model, unless the user picks another."""
    if modality.upper() == "CT":
        return MODEL_WINDOW_CT
    sample = np.asarray(image)
    if sample.size > 4_000_000:  # percentiles on a strided subset: same answer, far less work
        step = int(np.ceil((sample.size / 4_000_000) ** (1 / sample.ndim)))
        sample = sample[(slice(None, None, step),) * sample.ndim]
    lo, hi = np.percentile(sample[np.isfinite(sample)], [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def window_to_unit(image: np.ndarray, window: tuple[float, float]) -> np.ndarray:
    """Clip ``image`` to ``window`` = (low, high) and scale to float32 in [0, 1]."""
    lo, hi = float(window[0]), float(window[1])
    if not hi > lo:
        raise ValueError(f"window must have low < high, got {window}")
    out = np.asarray(image, dtype=np.float32) - lo
    out *= 1.0 / (hi - lo)
    np.clip(out, 0.0, 1.0, out=out)
    return out
