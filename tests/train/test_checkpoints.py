"""Checkpoints: safetensors round trip with identical predictions; mismatches and corrupt files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_medprompt.classify.backbones.registry import create_backbone  # noqa: E402
from napari_medprompt.train.checkpoints import CheckpointError, load_checkpoint, read_metadata  # noqa: E402
from napari_medprompt.train.data import from_annotations  # noqa: E402
from napari_medprompt.train.loop import TrainConfig, train_iter  # noqa: E402
from napari_medprompt.train.predict import predict  # noqa: E402
from tests.classify.synthetic import blob_task  # noqa: E402

torch.set_num_threads(2)


def _train(method, bb_name, tmp_path, **options):
    t = blob_task(8, seed=3)
    data = from_annotations(t.as_items(), classes=t.classes)
    cfg = TrainConfig(method=method, backbone=bb_name, pretrained="random", method_options=options, epochs=3,
                      lr=1e-2, val_fraction=0.25, out_dir=str(tmp_path))
    events = list(train_iter(cfg, data))
    done = events[-1]
    assert done.kind == "done" and done.path
    assert any(e.kind == "checkpoint" and e.path == done.path for e in events)
    return done.model, done.path, data


@pytest.mark.parametrize("method,bb_name", [("linear-probe", "test-resnet"), ("tip-adapter-f", "test-vit-tiny"),
                                            ("full-finetune", "test-vit-tiny")])
def test_round_trip_gives_identical_predictions(tmp_path, method, bb_name):
    model, path, data = _train(method, bb_name, tmp_path)
    meta = read_metadata(path)
    assert meta["method"] == method and meta["backbone"]["name"] == bb_name
    assert meta["backbone"]["random_weights"] is True and meta["classes"] == data.classes
    assert meta["train_set_sha256"] == data.fingerprint() and meta["package_version"]
    assert meta["preprocessing"]["image_size"] == model.backbone.image_size
    assert json.loads((tmp_path / "adapter.safetensors.json").read_text())["method"] == method
    test = list(blob_task(4, seed=9).images)
    loaded = load_checkpoint(path)  # rebuilds the (seeded random) backbone by name
    np.testing.assert_array_equal(predict(model, test), predict(loaded, test))
    assert loaded.num_trainable() == model.num_trainable()


def test_mismatches_and_corrupt_files_are_refused(tmp_path):
    model, path, _ = _train("linear-probe", "test-resnet", tmp_path)
    with pytest.raises(CheckpointError, match="trained on backbone 'test-resnet'.*current backbone is 'test-vit-tiny'"):
        load_checkpoint(path, create_backbone("test-vit-tiny"))
    with pytest.raises(CheckpointError, match="different weights"):
        load_checkpoint(path, create_backbone("test-resnet", init_seed=5))
    with pytest.raises(CheckpointError, match="holds a 'linear-probe' adapter, not 'clip-adapter'"):
        load_checkpoint(path, method="clip-adapter")
    raw = path_bytes = open(path, "rb").read()
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(raw[: len(path_bytes) // 2])
    with pytest.raises(CheckpointError, match="corrupt.safetensors"):
        load_checkpoint(bad)
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="not a readable .safetensors"):
        read_metadata(bad)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(CheckpointError, match="not a napari-medprompt adapter"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.safetensors")
