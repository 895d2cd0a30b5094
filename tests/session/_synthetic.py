"""Deterministic synthetic masks shared by the session tests and the recovery worker process."""

from __future__ import annotations

import numpy as np

SHAPE = (40, 96, 112)
SPACING = (2.5, 0.8, 0.8)
KEY = "synthetic-volume|40x96x112"


def disc(center: tuple[float, float], radius: float, shape=SHAPE[1:]) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius**2


def liver(z: int) -> np.ndarray:
    """A blob whose radius changes with z (slices 5..20)."""
    return disc((45, 40), 12 + 6 * np.sin(z / 4.0))


def kidney(z: int) -> np.ndarray:
    return disc((50, 80), 8 + (z % 3))


def wanderer(z: int, step: int) -> np.ndarray:
    """A large blob overlapping the others, moving with the step number."""
    return disc((48 + (step % 7), 60 + (step % 11)), 30)
