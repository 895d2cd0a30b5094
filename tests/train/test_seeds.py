"""Several seeds through the Python API: per-seed results and mean ± sd."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from napari_medprompt.train.data import from_annotations
from napari_medprompt.train.loop import TrainConfig
from napari_medprompt.train.seeds import train_seeds
from tests.classify.synthetic import blob_task

torch.set_num_threads(2)


def test_train_seeds_reports_per_seed_metrics_and_mean_sd():
    pool = from_annotations(blob_task(8, seed=1).as_items(), classes=["smooth", "striped"])
    val = from_annotations(blob_task(3, seed=2).as_items(), classes=["smooth", "striped"])
    test = from_annotations(blob_task(4, seed=3).as_items(), classes=["smooth", "striped"])
    cfg = TrainConfig(method="linear-probe", backbone="test-vit-tiny", pretrained="random", epochs=2, batch_size=4)
    s = train_seeds(cfg, pool, [0, 1, 2], val=val, test=test, shots=3)
    assert s["seeds"] == [0, 1, 2] and [r["n_train_per_class"] for r in s["runs"]] == [[3, 3]] * 3
    assert len({r["train_set_sha256"] for r in s["runs"]}) == 3  # each seed draws its own shots
    for split, n in (("val", 6), ("test", 8)):
        vals = [r[split]["balanced_accuracy"] for r in s["runs"]]
        assert all(r[split]["n"] == n for r in s["runs"])
        assert s[split]["n"] == 3 and s[split]["mean"]["balanced_accuracy"] == pytest.approx(np.mean(vals))
        assert s[split]["sd"]["balanced_accuracy"] == pytest.approx(np.std(vals, ddof=1))
    assert s["train"]["n"] == 0
    with pytest.raises(ValueError, match="seeds must differ"):
        train_seeds(cfg, pool, [1, 1])
