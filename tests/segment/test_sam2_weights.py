"""SAM2 weights: model table, checkpoints loaded like downloads, readable errors, random weights."""

from __future__ import annotations

import logging
from importlib import resources

import pytest

from tests.segment.sam2_support import MODEL, checkpoint_file, install_in_hf_cache, torch

from napari_medprompt.models.cache import WeightsUnavailable
from napari_medprompt.models.sam2_weights import (
    SAM2_MODELS,
    CheckpointError,
    build_model,
    load_state_dict,
    model_spec,
    resolve_checkpoint,
)
from napari_medprompt.segment import available_segmenters, create_segmenter


def test_model_table_matches_registry_and_sam2_configs():
    sam2_names = {n for n in available_segmenters() if n.startswith("sam2")}
    assert sam2_names == set(SAM2_MODELS)
    configs = resources.files("sam2")
    for spec in SAM2_MODELS.values():
        assert (configs / spec.config).is_file(), spec.config
        assert spec.repo_id == f"facebook/{spec.name}"
    tiny = model_spec("sam2.1-hiera-tiny")
    assert (tiny.config, tiny.filename) == ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1_hiera_tiny.pt")
    assert model_spec("sam2-hiera-base-plus").filename == "sam2_hiera_base_plus.pt"
    with pytest.raises(ValueError, match="unknown SAM2 model"):
        model_spec("sam3-huge")


def test_checkpoint_in_the_hf_cache_loads_like_a_download(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDPROMPT_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    install_in_hf_cache(tmp_path)
    path = resolve_checkpoint(MODEL)
    assert path.name == "sam2.1_hiera_tiny.pt" and str(path).startswith(str(tmp_path))
    net, random_weights = build_model(MODEL, path, "cpu")
    assert random_weights is True  # the test file was written by write_random_checkpoint (flagged)
    saved = load_state_dict(checkpoint_file())
    plain = tmp_path / "meta_format.pt"  # Meta's own files hold only {"model": state_dict}
    torch.save({"model": saved}, plain)
    assert build_model(MODEL, plain, "cpu")[1] is False
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(net.state_dict()[key], saved[key])


def test_offline_without_the_file_says_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as e:
        resolve_checkpoint("sam2.1-hiera-small")
    assert "sam2.1_hiera_small.pt" in str(e.value) and "facebook/sam2.1-hiera-small" in str(e.value)
    with pytest.raises(WeightsUnavailable, match="local checkpoint"):
        create_segmenter("sam2.1-hiera-tiny")


def test_missing_local_checkpoint_names_the_path(tmp_path):
    with pytest.raises(WeightsUnavailable, match="nope.pt"):
        resolve_checkpoint(MODEL, tmp_path / "nope.pt")


def test_truncated_checkpoint_gives_a_readable_error(tmp_path):
    bad = tmp_path / "sam2.1_hiera_tiny.pt"
    data = checkpoint_file().read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        build_model(MODEL, resolve_checkpoint(MODEL, bad), "cpu")
    msg = str(e.value)
    assert str(bad) in msg and "truncated" in msg


def test_wrong_checkpoints_are_refused_with_the_reason(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state": {"w": torch.zeros(2)}}, other)
    with pytest.raises(CheckpointError, match="not a SAM2 checkpoint"):
        build_model(MODEL, other, "cpu")
    sd = load_state_dict(checkpoint_file())
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    sd[key] = torch.zeros(3, 3)  # as in a checkpoint of another model size
    wrong_size = tmp_path / "wrong_size.pt"
    torch.save({"model": sd}, wrong_size)
    with pytest.raises(CheckpointError, match="another SAM2 size"):
        build_model(MODEL, wrong_size, "cpu")
    del sd[key]
    missing = tmp_path / "missing.pt"
    torch.save({"model": sd}, missing)
    with pytest.raises(CheckpointError, match="1 missing keys"):
        build_model(MODEL, missing, "cpu")


class _RunsCodeWhenUnpickled:
    def __reduce__(self):
        return (print, ("code ran while loading a checkpoint",))


def test_pickled_objects_are_not_loaded(tmp_path, capsys):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {"x": torch.zeros(1)}, "extra": _RunsCodeWhenUnpickled()}, evil)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_state_dict(evil)
    assert "code ran" not in capsys.readouterr().out


def test_random_weights_by_env_are_flagged_and_logged(monkeypatch, caplog):
    monkeypatch.setenv("MEDPROMPT_SAM2_RANDOM_WEIGHTS", "1")
    assert resolve_checkpoint(MODEL) is None
    assert resolve_checkpoint(MODEL, "random") is None
    with caplog.at_level(logging.WARNING):
        net, random_weights = build_model(MODEL, None, "cpu")
    assert random_weights is True
    assert "RANDOM weights" in caplog.text
    # same seed -> the same random network (a disk embedding cache stays valid between runs)
    net2, _ = build_model(MODEL, None, "cpu")
    key = "image_encoder.trunk.patch_embed.proj.weight"
    assert torch.equal(net.state_dict()[key], net2.state_dict()[key])
