"""Heat map over a volume (group ``gui``): batched computation vs one slice at a time.

``gui.heatmap_volume``: seconds to compute the localization map of every slice of a 48-slice volume
(256 x 256 slices, synthetic lesions) with :meth:`napari_medprompt.learn.Predictor.heatmap_volume`
(one model snapshot, batches of 16 slices); baseline = the same maps computed slice by slice with
:func:`napari_medprompt.train.explain.explain` (what a loop over slices without batching does), in
the same run, interleaved; medians of the repeats after a warm-up (the untimed check that both give the
same maps). Target: batched <= 0.5 x baseline.

Model: VPT-shallow (trains through the encoder; the map is gradient-weighted attention rollout) on
ViT-B-16 at 224 px with random weights (the same compute as the published weights), trained for
one epoch on a few slices (the map's cost does not depend on the training). ``--quick``: the tiny
test ViT at 64 px. Both are stored as versions of a temporary model store and loaded back, as the
Learn dock does. Runs without a display.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from benchmarks.runner import Record, device_name, median

N_SLICES = 48
SIZE = 256
BATCH = 16


def _volume(n: int, size: int, seed: int = 0):
    """(n, size, size) float32: smooth background with noise and one lesion per slice (uniform on even
    slices, striped on odd ones), at a random place."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    vol = np.empty((n, size, size), np.float32)
    for z in range(n):
        img = 0.25 + rng.normal(0, 0.03, (size, size))
        r = rng.uniform(0.17, 0.27) * size
        cy, cx = rng.uniform(r + 2, size - r - 2, 2)
        inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        tex = 0.5 if z % 2 == 0 else 0.4 + 0.5 * np.sign(np.sin(2 * np.pi * (xx + yy) / (0.1 * size)))
        vol[z] = np.clip(np.where(inside, 0.35 + 0.45 * tex, img), 0, 1)
    return vol


def _predictor(backbone: str, folder: str):
    from napari_medprompt.learn import ExampleSet, LearnRun, Predictor

    ex = ExampleSet()
    vol = _volume(8, 64, seed=1)
    for z in range(8):
        ex.add(vol[z], ("smooth", "striped")[z % 2], source_key=f"s{z}", group=f"g{z}")
    run = LearnRun(ex, folder, method="vpt-shallow", backbone=backbone, pretrained="random", epochs=1,
                   batch_size=8, val_fraction=0)
    run.run()
    return Predictor.load(folder, device=next(run.model.parameters()).device)


def _bench(backbone: str, repeats: int, n_slices: int) -> list[Record]:
    import torch

    from napari_medprompt.train.explain import explain

    with tempfile.TemporaryDirectory() as tmp:
        p = _predictor(backbone, tmp)
        dev = next(p.model.parameters()).device
        vol = _volume(n_slices, SIZE)

        def sync():
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def batched():
            hm = p.heatmap_volume(vol, batch_size=BATCH)
            sync()
            return hm

        def baseline():
            out = np.zeros(vol.shape, np.float32)
            for z in range(len(vol)):
                out[z] = explain(p.model, vol[z]).heatmap
            sync()
            return out

        # same maps both ways (checked once, outside the timing)
        diff = float(np.abs(batched().data - baseline()).max())
        tb, ts = [], []
        for _ in range(repeats):  # interleaved, so both see the same machine load
            t0 = time.perf_counter()
            batched()
            tb.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            baseline()
            ts.append(time.perf_counter() - t0)
    notes = (f"{backbone} random weights, vpt-shallow, {n_slices}x{SIZE}x{SIZE}, batch {BATCH}, "
             f"{torch.get_num_threads()} torch thread(s), median of "
             f"{repeats}; max |batched - per-slice| = {diff:.1e}; target ratio <= 0.5")
    return [Record("gui.heatmap_volume", f"seconds ({backbone})", median(tb), "s", baseline=median(ts),
                   device=device_name(), notes=notes)]


def run(args) -> list[Record]:
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), 4)))
    if args.quick:
        return _bench("test-vit-tiny", 2, N_SLICES)
    # ViT-B-16 on a CPU: one timed repeat after the (untimed) equality check (each repeat costs
    # minutes slice by slice); three on a GPU
    return _bench("test-vit-tiny", 3, N_SLICES) + _bench("ViT-B-16", 3 if torch.cuda.is_available() else 1, N_SLICES)


if __name__ == "__main__":  # this group part alone: python -m benchmarks.bench_gui_heatmap [--quick]
    import argparse

    from benchmarks.__main__ import _print_table

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    _print_table(run(parser.parse_args()))
