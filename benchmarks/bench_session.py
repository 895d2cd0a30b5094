"""Session autosave cost on a 512x512x300 label map (the session saves after every change).

Records the median wall time of a one-slice commit with its autosave, of an eight-slice
propagation batch, of an accept over 120 slices (status only), of the first full save and of a
restore; the baseline is writing the whole label map atomically as one .npy (what a naive
autosave would do after each change).

    python -m benchmarks.bench_session [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.runner import Record, median, time_repeats


def _blob(shape_yx, z: int) -> np.ndarray:
    yy, xx = np.mgrid[: shape_yx[0], : shape_yx[1]]
    r = 90 + 30 * np.sin(z / 15.0)
    return (yy - 250) ** 2 / 1.3 + (xx - 200) ** 2 <= r**2


def run(args) -> list[Record]:
    from napari_medprompt.io.atomic import atomic_write
    from napari_medprompt.session import AnnotationSession

    quick = bool(getattr(args, "quick", False))
    shape = (300, 512, 512) if not quick else (60, 512, 512)
    repeats = 15 if not quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="medprompt-bench-session-"))
    records: list[Record] = []
    try:
        s = AnnotationSession(shape, (1.5, 0.8, 0.8), image_key="bench", folder=tmp / "s")
        filled = range(shape[0] // 5, shape[0] // 5 + min(120, shape[0] // 2))
        liver = s.new_object("liver")
        s.commit_slices(liver.id, {z: _blob(shape[1:], z) for z in filled}, "propagated")
        other = s.new_object("spleen")

        zs = iter(range(10**9))

        def one_slice() -> None:
            z = next(zs) % shape[0]
            s.commit_slices(other.id, {z: _blob(shape[1:], z + 7)}, "propagated")

        t1 = time_repeats(one_slice, repeats=repeats)
        bz = iter(range(10**9))

        def batch8() -> None:
            z0 = (next(bz) * 8) % (shape[0] - 8)
            s.commit_slices(other.id, {z: _blob(shape[1:], z + 3) for z in range(z0, z0 + 8)}, "propagated")

        t8 = time_repeats(batch8, repeats=repeats)
        third = s.new_object("kidney")
        shift = iter(range(10**9))
        n_big = min(100, shape[0] // 2)

        variants = [{z: np.roll(_blob(shape[1:], z), 5 * k, axis=1) for z in range(n_big)} for k in range(4)]

        def batch100() -> None:  # a whole propagation committed at once (masks built beforehand)
            s.commit_slices(third.id, variants[next(shift) % 4], "propagated", overwrite=True)

        t100 = time_repeats(batch100, repeats=3)

        def accept_range() -> None:
            # a review change: status and provenance only, the label voxels stay the same
            s.set_status(liver.id, filled, "accepted")

        ta = time_repeats(accept_range, repeats=repeats)

        def naive() -> None:
            with atomic_write(tmp / "labels.npy", "wb") as f:
                np.save(f, s.labels)

        tn = time_repeats(naive, repeats=max(3, repeats // 3))

        def full_save() -> None:
            s.set_folder(tmp / "full", save=True)

        tf = time_repeats(full_save, repeats=3)

        def restore() -> None:
            AnnotationSession.load(tmp / "s")

        tr = time_repeats(restore, repeats=3)
        base = median(tn)
        dims = "x".join(map(str, shape))
        records += [
            Record("session.autosave_commit_1_slice", "median", median(t1) * 1e3, "ms", base * 1e3,
                   notes=f"commit + autosave, {dims} uint16, fsync on; baseline = whole-volume .npy atomic write"),
            Record("session.autosave_commit_8_slices", "median", median(t8) * 1e3, "ms", base * 1e3,
                   notes="propagation batch of 8 slices"),
            Record(f"session.autosave_commit_{n_big}_slices", "median", median(t100) * 1e3, "ms", base * 1e3,
                   notes="a whole propagation in one commit"),
            Record("session.autosave_accept_120_slices", "median", median(ta) * 1e3, "ms", base * 1e3,
                   notes="status change only: session.json rewritten, no slice files"),
            Record("session.full_save", "median", median(tf) * 1e3, "ms", base * 1e3,
                   notes=f"every slice, {len(filled)} non-empty"),
            Record("session.restore", "median", median(tr) * 1e3, "ms", notes="CRC-checked load"),
            Record("session.naive_npy_save", "median", base * 1e3, "ms"),
        ]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    for r in run(p.parse_args()):
        ratio = f"  ({r.ratio:.3f} x baseline)" if r.ratio else ""
        print(f"{r.benchmark:40s} {r.value:9.2f} {r.unit}{ratio}  {r.notes}")
