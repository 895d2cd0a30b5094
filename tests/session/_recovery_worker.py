"""Run as ``python -m tests.session._recovery_worker FOLDER``: builds a session, accepts objects,
then commits propagation-like results forever until it is killed (see test_recovery.py)."""

from __future__ import annotations

import sys

from napari_medprompt.session import AnnotationSession
from tests.session._synthetic import KEY, SHAPE, SPACING, kidney, liver, wanderer

LIVER_SLICES = range(5, 21)
KIDNEY_SLICES = range(10, 16)


def main(folder: str) -> None:
    s = AnnotationSession(SHAPE, SPACING, image_key=KEY, image_name="synthetic", folder=folder)
    a = s.new_object("liver")
    s.commit_slices(a.id, {z: liver(z) for z in LIVER_SLICES}, "propagated", {"backend": "classic"})
    s.set_status(a.id, LIVER_SLICES, "accepted")
    s.set_locked(a.id, True)
    b = s.new_object("kidney")  # accepted but not locked
    s.commit_slices(b.id, {z: kidney(z) for z in KIDNEY_SLICES}, "prompted", {"backend": "classic"})
    s.set_status(b.id, KIDNEY_SLICES, "accepted")
    c = s.new_object("spleen")
    print("READY", flush=True)
    step = 0
    while True:  # a propagation that never ends: one slice per commit, like the GUI's batches
        z = step % SHAPE[0]
        s.commit_slices(c.id, {z: wanderer(z, step)}, "propagated", {"backend": "classic"})
        if step % 5 == 0:  # a re-propagation of the kidney must skip its accepted slices
            s.commit_slices(b.id, {zz: wanderer(zz, step) for zz in KIDNEY_SLICES}, "propagated")
        step += 1
        print(f"STEP {step}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
