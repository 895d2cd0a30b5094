import numpy as np
import pytest

from napari_medprompt.train.seg_data import SegData

SIZE = 64  # the real rd64-refined config at a small input (position embeddings interpolate)


@pytest.fixture(scope="module")
def base():
    """One random-weight CLIPSeg (real config) per test module; tests detach their hooks."""
    from napari_medprompt.seg_adapters.clipseg import load_clipseg

    return load_clipseg("random", image_size=SIZE)


def synth(n: int, seed: int, size: int = 48, per_group: int = 4) -> SegData:
    """Bright disks of random size and place on noise; mask = the disk; two phrasings."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    ims, ms, groups = [], [], []
    for i in range(n):
        r = rng.uniform(6, 12)
        cy, cx = rng.uniform(r, size - r, 2)
        m = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
        ims.append((rng.normal(60, 20, (size, size)) + m * 120).clip(0, 255).astype(np.uint8))
        ms.append(m.astype(np.uint8))
        groups.append(f"vol{seed}_{i // per_group}")
    return SegData(ims, ms, [["bright disk", "round blob"]] * n, groups=groups)
