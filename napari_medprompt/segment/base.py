"""The Segmenter protocol every backend implements and the widgets depend on.

Coordinates: everything here is in *array* (napari) order. A point is ``(row, col)`` on a slice, a box
is ``(row0, col0, row1, col1)`` with row0 <= row1 and col0 <= col1 (pixel indices, inclusive corners).
Backends that speak another convention (SAM2 uses ``(x, y)``) convert internally.

A bound image is ``(z, y, x)`` for a volume or ``(y, x)`` for a 2D image; for a 2D image the slice
index is always 0. Coronal or sagittal work binds a transposed view of the volume.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


class PromptError(ValueError):
    """A prompt the backend cannot use (outside the image, empty, zero-area box, bad slice...).

    The message is written for the user: it says what is wrong and how to fix it.
    """


@dataclass
class Prompt:
    """Prompts for one object on one slice."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), dtype=float))  # (N, 2) row, col
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), dtype=int))  # 1 = positive, 0 = negative
    box: tuple[float, float, float, float] | None = None  # row0, col0, row1, col1
    mask: np.ndarray | None = None  # (H, W) bool: a previous or hand-corrected mask

    def __post_init__(self) -> None:
        self.points = np.asarray(self.points, dtype=float).reshape(-1, 2)
        self.labels = np.asarray(self.labels, dtype=int).reshape(-1)
        if len(self.points) != len(self.labels):
            raise PromptError(
                f"{len(self.points)} points but {len(self.labels)} point labels: give one label "
                "(1 = positive, 0 = negative) per point"
            )

    @property
    def is_empty(self) -> bool:
        return len(self.points) == 0 and self.box is None and (self.mask is None or not self.mask.any())


@dataclass
class SliceResult:
    """One predicted mask on one slice for one object."""

    slice_index: int
    mask: np.ndarray  # (H, W) bool
    score: float  # backend's quality estimate in [0, 1] (SAM2: predicted IoU)
    object_id: int = 1
    object_score: float | None = None  # SAM2's object-presence logit turned probability, if any
    source: str = "predicted"  # "predicted" | "propagated"
    lost: bool = False  # propagation: the object was judged absent here (mask is empty)
    flag: str = ""  # propagation: why the stop rule doubted this slice before a good one followed


@dataclass
class PropagationSettings:
    """How a propagation runs and when it stops by itself."""

    slice_range: tuple[int, int] | None = None  # inclusive (first, last); None = whole volume
    directions: tuple[str, ...] = ("forward", "backward")  # forward = increasing slice index
    mode: str = "auto"  # backend-specific: SAM2 "memory" | "projection" | "auto"
    min_object_score: float = 0.5  # below this the object counts as absent on that slice
    min_area_px: int = 10  # a mask smaller than this counts as vanished
    max_area_ratio: float = 2.5  # area change by more than this factor between slices = a jump
    patience: int = 2  # stop after this many consecutive lost slices
    # the object thinned out: below this share of its largest area in the run *and* ...
    min_area_fraction: float = 0.05
    # ... thinner than this share of its thickest section (inscribed radius) = a tail / vessel, not
    # the object (0 turns the check off)
    min_thickness_fraction: float = 0.3
    # optional (None = off; the classic backend turns both on for images without HU): a slice whose
    # area exceeds this multiple of the seed's is a leak ...
    max_seed_area_ratio: float | None = None
    # ... and so is one with more than this share of its area outside the seed's extent (its
    # bounding box grown by a quarter of its size on every side)
    max_outside_seed_fraction: float | None = None
    cancel: threading.Event | None = None  # set it to stop between slices


@runtime_checkable
class Segmenter(Protocol):
    """What the annotation widgets need from a segmentation backend."""

    name: str  # registry name, e.g. "sam2.1-hiera-tiny" or "classic"
    random_weights: bool  # True when the model runs without pretrained weights (say so on screen)

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
        """Use ``image`` ((z, y, x) or (y, x)) from now on.

        ``window`` fixes the intensity range the model sees for this image; without it the model
        window follows ``display_preset`` (the display's window preset) unless another model window
        was chosen (:meth:`set_model_window`). The array is never modified. ``key`` identifies the
        image for embedding caches.
        """

    def set_model_window(self, model_window=..., *, display_preset=...) -> tuple[float, float] | None:
        """Choose the intensity window the model sees (the display never changes the voxels).

        ``model_window``: None (the checkpoint's own convention if it declares one, else follow the
        display), ``"display"``, a preset name, a convention name (``"medsam2"``) or ``(low, high)``;
        ``display_preset``: the preset the display uses now (the dock passes it on every change).
        Leaving an argument out keeps it. Returns the window now in force, or None for a backend that
        works on the image's own values (classic) or before an image is bound. A change of window
        invalidates cached embeddings. See :mod:`napari_medprompt.imaging.window`.
        """

    def predict(self, slice_index: int, prompt: Prompt, object_id: int = 1) -> SliceResult:
        """Segment one object on one slice from points / box / previous mask."""

    def propagate(
        self,
        seeds: Mapping[int, Mapping[int, np.ndarray]],
        settings: PropagationSettings | None = None,
    ) -> Iterator[SliceResult]:
        """Propagate objects through the bound volume.

        ``seeds`` maps object id -> {slice index -> (H, W) bool mask} for every slice that has a
        prompt result or a user-accepted / corrected mask. Results are yielded slice by slice as they
        come, both directions, never for a seed slice itself; a result with ``lost=True`` marks where
        the object ended in that direction. Honors ``settings.cancel`` between slices.
        """

    def prefetch(self, slices: Sequence[int], cancel: threading.Event | None = None) -> Iterator[int]:
        """Compute embeddings for ``slices`` in order, yielding each index when done."""
