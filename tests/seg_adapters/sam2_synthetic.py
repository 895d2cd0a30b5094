"""Shared pieces of the SAM2 adapter tests: a small synthetic set of corrected masks and a random-init
SAM2.1-hiera-tiny built from its real config at a reduced input size.

The reduced size (``TEST_SIZE`` px instead of 1024) keeps the tests fast. It is an honest use of the
config: the network and its parameters are the same (Hiera interpolates its position embedding to the
feature size and pads windows; SAM2 sizes the prompt encoder and the low-res grid from ``image_size``),
only the input is smaller. No pretrained weights exist here, so every model is random-init and says so.
"""

from __future__ import annotations

import monai  # noqa: F401 (a hard dependency: a broken install fails here)
import numpy as np
import sam2  # noqa: F401 (a hard dependency: a broken install fails here)
import torch

TEST_SIZE = 128


def synthetic_pairs(n: int, seed: int, size: int = 96, group_prefix: str = "series"):
    """``n`` slices with one bright ellipse each (the structure) on noise, the corrected mask (the
    ellipse), the model's original mask (the ellipse shifted sideways: a miss and a leak), two slices
    per series."""
    from napari_medprompt.seg_adapters.pairs import Sam2PairData

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    ims, masks, origs, groups = [], [], [], []
    for i in range(n):
        cy, cx = rng.uniform(30, size - 30, 2)
        ry, rx = rng.uniform(10, 22, 2)
        m = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        ims.append((rng.normal(0, 20, (size, size)) + 100 * m).astype(np.float32))
        masks.append(m)
        origs.append(np.roll(m, int(rng.integers(4, 9)), axis=1))
        groups.append(f"{group_prefix}{seed}-{i // 2}")
    n_ = len(ims)
    return Sam2PairData(ims, masks, [(-50.0, 150.0)] * n_, origs, [None] * n_, [f"slice{i}" for i in range(n_)], groups)


def small_base(model: str = "sam2.1-hiera-tiny", checkpoint="random", size: int = TEST_SIZE):
    from napari_medprompt.seg_adapters.sam2_model import Sam2Base

    return Sam2Base.build(model, checkpoint, "cpu", image_size=size)
