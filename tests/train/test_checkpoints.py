"""Checkpoints: safetensors round trip with identical predictions; never overwritten; mismatches
(backbone, method, preprocessing, weights hash) and corrupt files refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.train.checkpoints import CheckpointError, load_checkpoint, read_metadata, save_checkpoint
from napari_medprompt.train.data import from_annotations
from napari_medprompt.train.loop import TrainConfig, train_iter
from napari_medprompt.train.predict import predict
from napari_medprompt.train.preprocess import Preprocess
from tests.classify.synthetic import blob_task

torch.set_num_threads(2)


def _train(method, bb_name, tmp_path, **options):
    t = blob_task(8, seed=3)
    data = from_annotations(t.as_items(), classes=t.classes)
    cfg = TrainConfig(method=method, backbone=bb_name, pretrained="random", method_options=options, epochs=3,
                      lr=1e-2, out_dir=str(tmp_path))
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
    side = json.loads((tmp_path / "adapter.safetensors.json").read_text())
    assert side["method"] == method and len(side["weights_sha256"]) == 64
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


def test_checkpoints_are_never_overwritten(tmp_path):
    model, path, data = _train("linear-probe", "test-resnet", tmp_path)
    first = open(path, "rb").read()
    with pytest.raises(CheckpointError, match="already exists; nothing was overwritten"):
        save_checkpoint(path, model)
    model2, path2, _ = _train("linear-probe", "test-resnet", tmp_path)  # same out_dir: a new file name
    assert path2.endswith("adapter-2.safetensors") and path2 != path
    assert open(path, "rb").read() == first


def test_tampered_weights_and_other_preprocessing_are_refused(tmp_path):
    model, path, _ = _train("linear-probe", "test-resnet", tmp_path)
    spec = Preprocess.from_dict(read_metadata(path)["preprocessing"])
    load_checkpoint(path, preprocess=spec)  # the same preprocessing: fine
    assert load_checkpoint(path).preprocess == spec  # the model carries what it was trained with
    other = Preprocess.from_backbone(model.backbone, intensity="window", window=(40, 400))
    with pytest.raises(CheckpointError, match="other preprocessing than the caller's.*intensity"):
        load_checkpoint(path, preprocess=other)
    raw = bytearray(open(path, "rb").read())
    raw[-3] ^= 0xFF  # one weight byte flipped: still a readable safetensors file
    open(path, "wb").write(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256 differs"):
        load_checkpoint(path)
