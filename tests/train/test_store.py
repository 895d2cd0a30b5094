"""The versioned model store: a new version per run, exact rollback, nothing overwritten, refused
deletes, corrupt index and missing backbone reported without losing a version."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from napari_medprompt.train.data import from_annotations
from napari_medprompt.train.loop import TrainConfig, train_iter
from napari_medprompt.train.predict import predict
from napari_medprompt.train.store import ModelStore, StoreError
from tests.classify.synthetic import blob_task

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def data():
    t = blob_task(6, seed=3)
    return from_annotations(t.as_items(), classes=t.classes)


@pytest.fixture(scope="module")
def test_images():
    return list(blob_task(3, seed=9).images)


def _run(store, data, seed, **kw):
    cfg = TrainConfig(method="linear-probe", backbone="test-vit-tiny", pretrained="random", epochs=2, lr=5e-2,
                      batch_size=4, seed=seed, store=str(store.root), **kw)
    events = list(train_iter(cfg, data))
    version = next(e for e in events if e.kind == "version")
    return events[-1].model, version.message


@pytest.fixture(scope="module")
def _trained(tmp_path_factory, data, test_images):
    store = ModelStore(tmp_path_factory.mktemp("store") / "models")
    m1, v1 = _run(store, data, seed=1)
    p1 = predict(m1, test_images)
    m2, v2 = _run(store, data, seed=2)
    p2 = predict(m2, test_images)
    assert not np.array_equal(p1, p2)
    return store, (v1, p1), (v2, p2)


@pytest.fixture()
def two_versions(_trained, tmp_path):
    """A fresh copy of a store holding two trained versions (v0002 active)."""
    store, a, b = _trained
    shutil.copytree(store.root, tmp_path / "models")
    return ModelStore(tmp_path / "models"), a, b


def test_every_run_is_a_new_version_with_its_record(two_versions, data):
    store, (v1, _), (v2, _) = two_versions
    assert (v1, v2) == ("v0001", "v0002")
    listed = store.list()
    assert [v["id"] for v in listed] == [v1, v2] and [v["active"] for v in listed] == [False, True]
    rec = store.get(v2)
    assert rec["parent"] == v1 and rec["method"] == "linear-probe" and rec["status"] == "finished"
    assert rec["backbone"]["name"] == "test-vit-tiny" and rec["backbone"]["random_weights"] is True
    assert rec["backbone"]["pretrained"] == "random"
    assert rec["data_fingerprint"] == data.fingerprint() and rec["created_at"].endswith("+00:00")
    assert rec["options"] == {"normalize": "standardize"}  # the full option dict, defaults filled in
    assert rec["preprocessing"]["image_size"] > 0 and "intensity" in rec["preprocessing"]
    assert rec["metrics"]["n_train"] == len(data) and "fixed schedule" in rec["metrics"]["selection"]
    assert len(rec["weights_sha256"]) == 64 and rec["train_config"]["seed"] == 2
    assert listed[1]["random_weights"] is True


def test_rollback_restores_the_exact_earlier_predictions(two_versions, test_images):
    store, (v1, p1), (v2, p2) = two_versions
    np.testing.assert_array_equal(predict(store.load(), test_images), p2)
    assert store.rollback() == v1 and store.active == v1
    np.testing.assert_array_equal(predict(store.load(), test_images), p1)
    with pytest.raises(StoreError, match="no earlier version"):
        store.rollback()
    store.rollback(v2)
    np.testing.assert_array_equal(predict(store.load(), test_images), p2)


def test_nothing_is_overwritten(two_versions, data):
    store, (v1, _), _ = two_versions
    files = {p: p.read_bytes() for p in (store.root / "versions" / v1).iterdir()}
    _run(store, data, seed=1)  # the same run again: a third version, v1 untouched
    assert [v["id"] for v in store.list()] == ["v0001", "v0002", "v0003"]
    assert {p: p.read_bytes() for p in (store.root / "versions" / v1).iterdir()} == files


def test_deleting_the_active_version_is_refused_or_moves_activation_explicitly(two_versions, data):
    store, (v1, _), (v2, _) = two_versions
    with pytest.raises(StoreError, match="v0002 is the active model.*new_active"):
        store.delete(v2)
    assert [v["id"] for v in store.list()] == [v1, v2]
    store.delete(v2, new_active=v1)
    assert store.active == v1 and [v["id"] for v in store.list()] == [v1]
    assert not (store.root / "versions" / v2).exists()
    _, v3 = _run(store, data, seed=5)
    assert v3 == "v0003"  # a deleted id is never reused
    store.delete(v1)  # inactive: no question asked
    assert [v["id"] for v in store.list()] == [v3]
    with pytest.raises(StoreError, match="no version 'v0001'"):
        store.activate(v1)
    store.delete(v3, leave_none_active=True)  # the user's explicit choice: no model stays active
    assert store.active is None and store.list() == [] and not (store.root / "versions" / v3).exists()


def test_corrupt_index_is_reported_and_rebuilt_without_losing_a_version(two_versions, test_images):
    store, (v1, p1), (v2, p2) = two_versions
    store.index_path.write_text('{"format": "napari-medprompt-store/1", "versions": {')  # truncated
    for call in (store.list, store.load, lambda: store.activate(v1)):
        with pytest.raises(StoreError, match="index .*index.json is corrupt.*No version is lost.*rebuild_index"):
            call()
    with pytest.raises(StoreError, match="corrupt"):  # training refuses before it starts
        next(train_iter(TrainConfig(store=str(store.root)), blob_as_data()))
    backup = store.rebuild_index()
    assert backup is not None and backup.read_text().endswith("{")  # the corrupt file is kept aside
    assert [v["id"] for v in store.list()] == [v1, v2] and store.active is None  # activation could not be read
    store.activate(v1)
    np.testing.assert_array_equal(predict(store.load(), test_images), p1)


def blob_as_data():
    t = blob_task(2, seed=0)
    return from_annotations(t.as_items(), classes=t.classes)


def test_tampered_weights_and_missing_backbone_are_clear_errors(two_versions, test_images):
    store, (v1, p1), (v2, _) = two_versions
    path = store.weights_path(v2)
    raw = bytearray(path.read_bytes())
    raw[-2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(StoreError, match="version v0002.*SHA-256 differs"):
        store.load(v2)
    rec_path = store.root / "versions" / v1 / "version.json"
    rec = json.loads(rec_path.read_text())
    rec["backbone"]["name"] = "vanished-net"  # a version trained on a backbone this install lacks
    rec_path.write_text(json.dumps(rec))
    with pytest.raises(StoreError, match="version v0001: its backbone 'vanished-net'.*cannot be loaded here.*version is kept"):
        store.load(v1)
    assert [v["id"] for v in store.list()] == [v1, v2]


def test_load_checks_the_callers_preprocessing(two_versions):
    from napari_medprompt.train.preprocess import Preprocess

    store, _, (v2, _) = two_versions
    spec = Preprocess.from_dict(store.get(v2)["preprocessing"])
    store.load(v2, preprocess=spec)
    with pytest.raises(StoreError, match="other preprocessing"):
        store.load(v2, preprocess=Preprocess(spec.image_size + 8, spec.mean, spec.std))


def test_a_failed_write_leaves_no_half_version(two_versions, monkeypatch):
    import napari_medprompt.train.store as store_mod

    store, (v1, _), (v2, _) = two_versions
    model = store.load(v1)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod, "save_checkpoint", disk_full)
    with pytest.raises(OSError, match="No space left"):
        store.add(model)
    assert [v["id"] for v in store.list()] == [v1, v2] and store.active == v2
    assert sorted(p.name for p in (store.root / "versions").iterdir() if p.is_dir()) == [v1, v2]
    monkeypatch.undo()
    assert store.add(model) == "v0004"  # v0003's id, taken by the failed write, is not reused
