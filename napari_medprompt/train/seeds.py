"""Several seeds of one protocol, reported as mean ± sd: ``train_seeds(config, data, seeds, ...)``.

Per seed: the shots (``shots`` k per class) and/or the ``fraction`` of the pool are sampled with that
seed (grouped, :mod:`.data`), the model is trained with that seed (:func:`.loop.train_iter`, model
selection on ``val`` when given, else a fixed schedule), and evaluated on ``test`` when given. The
validation and test splits are the same for every seed (a fixed split: the dataset's own, or one the
caller made once), so the spread is that of sampling and training, not of the evaluation set.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from napari_medprompt.train.data import FewShotData, fraction as take_fraction, k_shot
from napari_medprompt.train.loop import TrainConfig, TrainEvent, train_iter
from napari_medprompt.train.metrics import classification_metrics, mean_sd


def evaluate(model, data: FewShotData, *, device=None) -> dict:
    """Classification metrics of ``model`` on ``data`` (masks passed to mask-using methods)."""
    from napari_medprompt.train.predict import predict

    from napari_medprompt.train import distributed as dd

    masks = data.masks if getattr(model, "uses_masks", False) else None
    if not dd.info().enabled:
        probs = predict(model, data.images, masks, device=device)
        return classification_metrics(data.labels, probs, len(model.classes))
    import numpy as np
    import torch

    mine = dd.shard_indices(len(data))  # under torchrun: each rank predicts its shard, gathered in order
    part = predict(model, [data.images[i] for i in mine], None if masks is None else [masks[i] for i in mine],
                   device=device)
    probs = dd.gather_ordered(torch.from_numpy(np.ascontiguousarray(part)), len(data)).numpy()
    return classification_metrics(data.labels, probs, len(model.classes))


def train_seeds(config: TrainConfig, data: FewShotData, seeds, *, val: FewShotData | None = None,
                test: FewShotData | None = None, shots: int | None = None, fraction: float | None = None,
                store=None, out_dir: str | None = None,
                on_event: Callable[[int, TrainEvent], None] | None = None) -> dict:
    """Train once per seed; returns ``{"seeds", "runs": [per-seed results], "val": mean/sd, "test":
    mean/sd, "train": mean/sd (training-free methods without validation)}``.

    ``out_dir``: each seed writes its checkpoint in ``out_dir/seed_<s>`` (else in ``config.out_dir``, if set). ``store``: each seed writes
    a new version. ``on_event(seed, event)`` sees every event (progress bars)."""
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must differ, got {seeds}")
    if test is not None and list(test.classes) != list(data.classes):
        raise ValueError(f"the test data's classes {test.classes!r} differ from the training data's {data.classes!r}")
    runs = []
    for seed in seeds:
        subset = k_shot(data, int(shots), seed) if shots else data
        subset = take_fraction(subset, float(fraction), seed) if fraction else subset
        cfg = dataclasses.replace(config, seed=seed)
        if out_dir is not None:
            cfg = dataclasses.replace(cfg, out_dir=f"{out_dir}/seed_{seed}")
        done = None
        for ev in train_iter(cfg, subset, val=val, store=store):
            if on_event is not None:
                on_event(seed, ev)
            if ev.kind == "done":
                done = ev
        m = done.metrics or {}
        run = {"seed": seed, "status": m.get("status"), "n_train": len(subset),
               "n_train_per_class": subset.class_counts().tolist(), "best_epoch": m.get("best_epoch"),
               "val": m.get("val"), "train": m.get("train"), "version": m.get("version"), "checkpoint": done.path,
               "selection": m.get("selection"), "train_set_sha256": m.get("train_set_sha256"),
               "random_weights": m.get("random_weights")}
        trained = m.get("status") != "stopped-before-first-epoch"
        run["test"] = evaluate(done.model, test) if test is not None and trained else None
        runs.append(run)
        if m.get("status") in ("stopped", "stopped-before-first-epoch"):
            break  # a stop request ends the whole series
    return {
        "seeds": [r["seed"] for r in runs], "runs": runs,
        "val": mean_sd([r["val"] for r in runs]), "test": mean_sd([r["test"] for r in runs]),
        "train": mean_sd([r["train"] for r in runs]),
        "shots": shots, "fraction": fraction,
    }
