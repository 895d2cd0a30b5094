"""A small CT-like volume with two structures accepted on several slices, for the segmentation-adapter
tests: a bright ellipse ("liver") on slices 1-8 and a smaller round one ("left kidney") on slices 3-9."""

from __future__ import annotations

import numpy as np

SHAPE = (11, 64, 64)


def organ_volume(seed: int = 0):
    """(volume in HU, {name: {z: mask}})."""
    rng = np.random.default_rng(seed)
    vol = rng.normal(-50, 25, SHAPE).astype(np.float32)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    organs: dict[str, dict[int, np.ndarray]] = {"liver": {}, "left kidney": {}}
    for z in range(1, 9):
        ry, rx = 12 + (z % 3), 16 + (z % 2)
        m = ((yy - 24) / ry) ** 2 + ((xx - 22 - z) / rx) ** 2 <= 1
        vol[z][m] += 150
        organs["liver"][z] = m
    for z in range(3, 10):
        m = (yy - 46) ** 2 + (xx - 46) ** 2 <= (6 + z % 2) ** 2
        vol[z][m] += 260
        organs["left kidney"][z] = m
    return vol, organs


def organ_session(tmp_path=None, seed: int = 0, names=("liver", "left kidney"), status="accepted"):
    """An annotation session over :func:`organ_volume` with the organs committed as accepted objects."""
    from napari_medprompt.session import AnnotationSession

    vol, organs = organ_volume(seed)
    session = AnnotationSession(SHAPE, (2.0, 0.8, 0.8), image_key=f"synthetic-ct-{seed}",
                                image_name=f"synthetic CT {seed}", folder=None, autosave=False)
    for name in names:
        obj = session.new_object(name=name)
        session.commit_slices(obj.id, organs[name], status)
    return session, vol, organs


def disk_session(ranges: dict[str, range], seed: int = 0):
    """A session over :func:`organ_volume` with one accepted disk-shaped object per ``{name: slices}``
    (each name at its own place), for tests of the held-out split."""
    from napari_medprompt.session import AnnotationSession

    vol, _ = organ_volume(seed)
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    session = AnnotationSession(SHAPE, (2.0, 0.8, 0.8), image_key=f"disks-{seed}", image_name=f"disks {seed}",
                                folder=None, autosave=False)
    for i, (name, zs) in enumerate(ranges.items()):
        m = (yy - 16 - 20 * i) ** 2 + (xx - 20 - 12 * i) ** 2 <= 36
        obj = session.new_object(name=name)
        session.commit_slices(obj.id, {z: m for z in zs}, "accepted")
    return session, vol
