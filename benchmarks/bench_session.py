"""Session autosave cost on a 512x512x300 label map (the session saves after every change).

Records the median wall time of a one-slice commit with its autosave, of an eight-slice
propagation batch, of an accept over 120 slices (status only), of the first full save and of a
restore; the baseline is writing the whole label map atomically as one .npy (what a naive
autosave would do after each change).

Recovery, measured with real processes (:mod:`benchmarks.session_worker`):
``session.restore_partial`` is the fraction of the undamaged slices restored byte-identical from a
56-slice reviewed session after one byte of one of its packs was flipped (goal 1.0);
``session.kill9_restored`` the fraction of committed propagation slices restored byte-identical
after the propagating process was killed with SIGKILL at three points of its run (goal 1.0).

    python -m benchmarks.bench_session [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
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
        records += [restore_partial(tmp / "partial"), kill9_restored(tmp / "kill9", quick)]
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return records


REPO = Path(__file__).resolve().parents[1]


def _worker(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benchmarks.session_worker", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def restore_partial(folder: Path) -> Record:
    """One flipped byte in one pack of a 56-slice reviewed session: the fraction of the slices it
    did not hit that a (partial) restore in a fresh process brings back byte-identical."""
    from napari_medprompt.session.store import MANIFEST, SLICE_DIR

    n = 56
    build = _worker("build", str(folder), str(n))
    _out, err = build.communicate(timeout=300)
    if build.returncode:
        raise RuntimeError(f"session build failed: {err}")
    entries = json.loads((folder / MANIFEST).read_text())["labels"]["slices"]
    packs: dict[str, list[int]] = {}
    for z, e in entries.items():
        packs.setdefault(e["pack"], []).append(int(z))
    name = max(packs, key=lambda k: len(packs[k]))  # the pack holding the most slices
    path = folder / SLICE_DIR / name
    data = bytearray(path.read_bytes())
    at = len(data) // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    hit = {int(z) for z, e in entries.items() if e["pack"] == name and e["offset"] <= at < e["offset"] + e["length"]}
    undamaged = {int(z) for z in entries} - hit
    restore = _worker("restore", str(folder))
    out, err = restore.communicate(timeout=300)
    if restore.returncode:
        raise RuntimeError(f"restore failed: {err}")
    result = json.loads(out.strip().splitlines()[-1])
    got = set(result["identical"]) & undamaged
    return Record("session.restore_partial", "fraction", len(got) / len(undamaged), "fraction", baseline=1.0,
                  notes=f"{len(got)}/{len(undamaged)} undamaged slices restored byte-identical; damaged pack "
                        f"held {len(packs[name])} of {n} slices, {len(hit)} hit, reported damaged "
                        f"{result['damaged']}; goal 1.0")


def kill9_restored(folder: Path, quick: bool = False) -> Record:
    """SIGKILL a process that commits a propagation chunk by chunk; the fraction of the slices it
    reported committed that a restore brings back byte-identical (min over the kill points)."""
    from benchmarks.session_worker import KEY, SHAPE, mask
    from napari_medprompt.session import AnnotationSession

    if not hasattr(signal, "SIGKILL"):
        return Record("session.kill9_restored", "fraction", float("nan"), "fraction", notes="no SIGKILL here")
    fractions, counts = [], []
    points = (3, 12) if quick else (3, 12, 30)
    for k, after in enumerate(points):
        sub = folder / f"run{k}"
        proc = _worker("propagate", str(sub))
        committed: dict[int, int] = {80: -1}
        chunks = 0
        try:
            while chunks < after:
                line = proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"worker exited early: {proc.stderr.read()}")
                if line.startswith("COMMITTED"):
                    salt, *zs = (int(v) for v in line.split()[1:])
                    committed.update({z: salt for z in zs})
                    chunks += 1
            os.kill(proc.pid, signal.SIGKILL)  # the next chunk is being written right now
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        s = AnnotationSession.load(sub, image_key=KEY, shape=SHAPE)  # strict: every CRC verified
        same = sum(np.array_equal(s.labels[z] == 1, mask(z) if salt < 0 else mask(z, salt=salt))
                   for z, salt in committed.items())
        fractions.append(same / len(committed))
        counts.append(f"{same}/{len(committed)}")
    return Record("session.kill9_restored", "fraction", min(fractions), "fraction", baseline=1.0,
                  notes=f"SIGKILL after {'/'.join(map(str, points))} chunks of 8: {', '.join(counts)} committed slices restored "
                        "byte-identical (strict CRC-checked load); goal 1.0")


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    for r in run(p.parse_args()):
        ratio = f"  ({r.ratio:.3f} x baseline)" if r.ratio else ""
        print(f"{r.benchmark:40s} {r.value:9.2f} {r.unit}{ratio}  {r.notes}")
