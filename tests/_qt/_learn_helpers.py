"""Shared pieces of the Learn dock tests: synthetic volumes with two kinds of lesion, objects with classes."""

from __future__ import annotations

import numpy as np

SHAPE = (12, 64, 64)


def lesion_volume(seed: int) -> tuple[np.ndarray, dict[str, list[tuple[int, np.ndarray]]]]:
    """A CT-like (Z, Y, X) volume in HU: soft tissue with noise, a small faint round lesion on slices 1-5
    ("benign") and a large bright one on slices 6-10 ("malignant"). Returns the volume and, per class,
    (slice, mask) pairs of its lesion."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(40, 12, SHAPE).astype(np.float32)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    out: dict[str, list] = {"benign": [], "malignant": []}
    cy, cx = 22 + 4 * seed, 24 + 3 * seed
    for z in range(1, 6):
        m = (yy - cy) ** 2 + (xx - cx) ** 2 <= 5**2
        vol[z][m] += 60
        out["benign"].append((z, m))
    for z in range(6, 11):
        m = (yy - (40 - 2 * seed)) ** 2 + (xx - 38) ** 2 <= 11**2
        vol[z][m] += 400
        out["malignant"].append((z, m))
    return vol, out


def label_lesions(session, lesions) -> dict[str, int]:
    """Objects "benign lesion" / "malignant lesion" drawn in ``session`` (accepted slices), each given its
    class, as a clinician does with a label map and the Review panel. Returns class -> object id."""
    ids = {}
    for cls, items in lesions.items():
        obj = session.new_object(name=f"{cls} lesion")
        session.commit_slices(obj.id, {z: m for z, m in items}, "accepted")
        session.set_object_class(obj.id, cls)
        ids[cls] = obj.id
    return ids
