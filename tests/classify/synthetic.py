"""A small classification task where the class is genuinely visible, with masks of the deciding region.

Every image is a grey 2D "scan" (smooth background with noise) holding one lesion-like ellipse at a
random place and size. The lesion's *texture* decides the class: class 0 ("smooth") is a uniform
bright blob, class 1 ("striped") has stripes (period 6-8 px, random angle), class 2 ("spotted", when ``n_classes=3``) a grid of
small spots. The mean intensity inside the lesion is about the same for every class, so a model has
to look at the lesion's texture; outside the lesion nothing depends on the class. ``masks`` mark the
lesion (the class-deciding region), for mask-using methods and localization checks.

Helpers build the same task as in-app annotations (``as_items``) or as a MedMNIST-style ``.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("smooth", "striped", "spotted")


@dataclass
class SyntheticTask:
    images: np.ndarray  # (N, H, W) float32 in [0, 1]
    masks: np.ndarray  # (N, H, W) bool: the lesion
    labels: np.ndarray  # (N,) int64
    classes: list[str]

    def as_items(self, dtype=None) -> list[tuple[np.ndarray, np.ndarray, str]]:
        """(image, mask, class name) triples, as the app's annotations provide them.

        Every image is its own case (copies, not views of one stacked array, which the data layer
        would group as slices of one volume)."""
        out = []
        for img, m, y in zip(self.images, self.masks, self.labels):
            im = img.copy() if dtype is None else _to_dtype(img, dtype)
            out.append((im, m.copy(), self.classes[int(y)]))
        return out

    def subset(self, idx) -> SyntheticTask:
        idx = np.asarray(idx)
        return SyntheticTask(self.images[idx], self.masks[idx], self.labels[idx], list(self.classes))


def _to_dtype(img: np.ndarray, dtype) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype.kind in "ui":
        return np.round(img * np.iinfo(dtype).max).astype(dtype)
    return img.astype(dtype)


def _texture(kind: int, yy: np.ndarray, xx: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind == 0:
        return np.full(yy.shape, 0.5, np.float32)
    if kind == 1:
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6.0, 8.0)
        phase = 2 * np.pi * (np.cos(angle) * xx + np.sin(angle) * yy) / period
        return (0.4 + 0.6 * np.sign(np.sin(phase))).astype(np.float32) * 0.9 + 0.05
    period = rng.uniform(5.0, 6.5)
    spots = (np.sin(2 * np.pi * xx / period) > 0.3) & (np.sin(2 * np.pi * yy / period) > 0.3)
    return np.where(spots, 1.0, 0.25).astype(np.float32)


def blob_task(n_per_class: int, *, size: int = 64, n_classes: int = 2, seed: int = 0) -> SyntheticTask:
    """``n_per_class`` images of each class, shuffled, reproducible from ``seed``."""
    if not 2 <= n_classes <= len(CLASS_NAMES):
        raise ValueError(f"n_classes must be 2..{len(CLASS_NAMES)}")
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_classes), n_per_class)
    rng.shuffle(labels)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((len(labels), size, size), np.float32)
    masks = np.empty((len(labels), size, size), bool)
    for i, y in enumerate(labels):
        # smooth background: low-frequency ramp + noise
        gy, gx = rng.uniform(-0.15, 0.15, 2)
        bg = 0.25 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5)
        img = bg + rng.normal(0, 0.03, (size, size))
        r_a, r_b = rng.uniform(0.17, 0.27, 2) * size
        cy, cx = rng.uniform(r_a + 2, size - r_a - 2), rng.uniform(r_b + 2, size - r_b - 2)
        inside = ((yy - cy) / r_a) ** 2 + ((xx - cx) / r_b) ** 2 <= 1.0
        tex = _texture(int(y), yy, xx, rng)
        img = np.where(inside, 0.35 + 0.45 * tex + rng.normal(0, 0.03, (size, size)), img)
        images[i] = np.clip(img, 0.0, 1.0)
        masks[i] = inside
    return SyntheticTask(images, masks, labels.astype(np.int64), list(CLASS_NAMES[:n_classes]))


def write_npz(path, task_train: SyntheticTask, task_test: SyntheticTask | None = None) -> None:
    """A MedMNIST-style archive (uint8 images, (N, 1) labels) of the task."""
    arrays = {
        "train_images": _to_dtype(task_train.images, np.uint8),
        "train_labels": task_train.labels[:, None],
    }
    if task_test is not None:
        arrays["test_images"] = _to_dtype(task_test.images, np.uint8)
        arrays["test_labels"] = task_test.labels[:, None]
    np.savez(path, **arrays)
