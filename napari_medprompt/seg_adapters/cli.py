"""``medprompt-train --method vlsm-...``: segmentation adapters from the command line.

    medprompt-train --method vlsm-shallow-vlc --data slices.npz --val-fraction 0.2 --store models/seg
    medprompt-train --method vlsm-dense-vl --data train.npz --val-data val.npz --pretrained random --epochs 2

Data: an ``.npz`` with ``images`` (N, H, W) or (N, H, W, 3), ``masks`` (N, H, W) (non-zero = the
structure), ``prompts`` (N,) strings, several phrasings of one sample separated by ``|`` ("liver|the
liver"), and optionally ``groups`` (N,) (image/series id: splits never separate a group). Runs go
through :func:`napari_medprompt.train.loop.train_iter` (same events, checkpoints, store versions).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load_seg_npz(path) -> "SegData":  # noqa: F821
    import numpy as np

    from napari_medprompt.train.data import DataError
    from napari_medprompt.train.seg_data import SegData

    p = Path(path)
    try:
        z = np.load(p, allow_pickle=False)
    except Exception as err:
        raise DataError(f"cannot read {p}: {err}") from None
    missing = [k for k in ("images", "masks", "prompts") if k not in z.files]
    if missing:
        raise DataError(f"{p}: segmentation data needs arrays images, masks and prompts; missing {', '.join(missing)}")
    images, masks, prompts = z["images"], z["masks"], z["prompts"]
    groups = [str(g) for g in z["groups"]] if "groups" in z.files else None
    phr = [[q.strip() for q in str(s).split("|") if q.strip()] for s in prompts]
    return SegData(list(images), list(masks), phr, [f"{p.name}[{i}]" for i in range(len(images))], groups)


def seg_train_main(args, cfg: dict, merged: dict, options: dict) -> int:
    """The segmentation runs of ``medprompt-train`` (one per seed), from what it parsed: ``args``, the
    ``--config`` dict ``cfg``, the :class:`~napari_medprompt.train.loop.TrainConfig` values ``merged``
    and the method ``options`` as given (checked here). Returns the exit status."""
    from napari_medprompt.seg_adapters.clipseg import SegAdapterError
    from napari_medprompt.seg_adapters.registry import validate_seg_options
    from napari_medprompt.train.checkpoints import CheckpointError
    from napari_medprompt.train.cli_options import run_settings
    from napari_medprompt.train.data import DataError
    from napari_medprompt.train.loop import TrainConfig, train_iter
    from napari_medprompt.train.store import StoreError

    method = merged.get("method") or args.method
    run = run_settings(args, cfg, method, options, validate_seg_options)
    if run is None:
        return 2
    out, seeds = run.out, run.seeds
    runs = []
    try:
        data = load_seg_npz(run.data)
        val = load_seg_npz(run.val_data) if run.val_data else None
        for seed in seeds:
            run_dir = out / f"seed_{seed}" if len(seeds) > 1 else out
            config = TrainConfig(**{**merged, "method": method}, method_options=run.options, seed=int(seed),
                                 val_fraction=float(run.val_fraction or 0.0) if val is None else 0.0,
                                 out_dir=str(run_dir), store=run.store)
            final = None
            for ev in train_iter(config, data, val=val):
                if ev.kind == "start":
                    if ev.message:
                        print(f"WARNING: {ev.message}", file=sys.stderr)
                    print(f"{method} seed {seed}: {ev.metrics['n_train']} slices "
                          f"({ev.metrics['n_train_empty']} without the structure), {ev.metrics['selection']}",
                          file=sys.stderr)
                elif ev.kind == "epoch" and ev.metrics and not args.quiet:
                    print(f"  epoch {ev.epoch}/{ev.epochs}: train loss {ev.loss:.4f}, val dice "
                          f"{ev.metrics.get('dice', float('nan')):.4f}", file=sys.stderr)
                elif ev.kind == "done":
                    final = ev.metrics
            from napari_medprompt.io.atomic import atomic_write_text
            from napari_medprompt.train.distributed import is_main

            if is_main():  # under torchrun rank 0 writes, whole or not at all
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(run_dir / "metrics.json", json.dumps({**final, "seed": seed}, indent=1, default=str))
            runs.append(final)
    except (DataError, CheckpointError, StoreError, SegAdapterError, ValueError, RuntimeError) as err:
        print(f"medprompt-train: {err}", file=sys.stderr)
        return 2
    for seed, r in zip(seeds, runs):
        v = r.get("val") or {}
        bits = [f"seed {seed}: {r['status']}, best epoch {r['best_epoch']}"]
        if v:
            bits.append(f"val dice {v['dice']:.4f} iou {v['iou']:.4f}")
        if r.get("version"):
            bits.append(f"store version {r['version']}")
        if r.get("random_weights"):
            bits.append("RANDOM CLIPSeg weights: not meaningful")
        print("; ".join(bits))
    return 0
