"""Worker processes of the session benchmark (``python -m benchmarks.session_worker MODE FOLDER ...``).

``build FOLDER N``: writes a reviewed session of N slices (committed in chunks of 12, as a
propagation does, then accepted) and exits. ``restore FOLDER``: restores it as the Segment widget
does (``partial=True``) and prints one JSON line: the slices restored and those reported damaged.
``propagate FOLDER``: commits a propagation in chunks of 8 slices inside one undo group, printing
``COMMITTED z...`` after each chunk is saved, until it is killed.
"""

from __future__ import annotations

import json
import sys

import numpy as np

SHAPE = (160, 256, 256)
SPACING = (1.5, 0.8, 0.8)
KEY = "bench-session|160x256x256"


def mask(z: int, salt: int = 0) -> np.ndarray:
    """A deterministic blob for slice ``z`` (``salt`` moves it: another propagation)."""
    yy, xx = np.mgrid[: SHAPE[1], : SHAPE[2]]
    r = 40 + 25 * np.sin(z / 9.0) + (salt % 5)
    return (yy - 120 - salt % 7) ** 2 / 1.2 + (xx - 110) ** 2 <= r * r


def build(folder: str, n: int) -> None:
    from napari_medprompt.session import AnnotationSession

    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="bench", folder=folder)
    a = s.new_object("liver")
    zs = list(range(20, 20 + n))
    for i in range(0, len(zs), 12):
        s.commit_slices(a.id, {z: mask(z) for z in zs[i : i + 12]}, "propagated")
    s.set_status(a.id, zs, "accepted")


def restore(folder: str) -> None:
    from napari_medprompt.session import AnnotationSession

    s = AnnotationSession.load(folder, image_key=KEY, shape=SHAPE, partial=True)
    report = s.restore_report
    ok = [z for z in range(SHAPE[0]) if (s.labels[z] == 1).any() and np.array_equal(s.labels[z] == 1, mask(z))]
    print(json.dumps({"identical": ok, "damaged": sorted(report.damaged_slices)}), flush=True)


def propagate(folder: str) -> None:
    from napari_medprompt.session import AnnotationSession

    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="bench", folder=folder)
    a = s.new_object("liver")
    s.commit_slices(a.id, {80: mask(80)}, "prompted")
    s.begin_undo_group("propagated liver")
    print("READY", flush=True)
    z = 81
    while True:  # a propagation that never ends (wrapping around the volume with new masks)
        chunk = [(z + i) % SHAPE[0] for i in range(8)]
        chunk = [c for c in chunk if c != 80]
        s.commit_slices(a.id, {c: mask(c, salt=z) for c in chunk}, "propagated")
        print("COMMITTED", z, *chunk, flush=True)
        z += 8


if __name__ == "__main__":
    mode, folder, *rest = sys.argv[1:]
    {"build": lambda: build(folder, int(rest[0])), "restore": lambda: restore(folder),
     "propagate": lambda: propagate(folder)}[mode]()
