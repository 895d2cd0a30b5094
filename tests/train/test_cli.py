"""medprompt-train / medprompt-eval drive the same loop from the command line: official splits, seeds
with mean ± sd, the model store, method options from the schema, recipes, errors as messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from napari_medprompt.classify.backbones.registry import create_backbone
from napari_medprompt.classify.base import available_methods, method_class, validate_method_options
from napari_medprompt.train.cli import eval_main, train_main
from napari_medprompt.train.cli_options import CONFIG_KEYS, load_config
from tests.classify.synthetic import blob_task

torch.set_num_threads(2)
REPO = Path(__file__).resolve().parents[2]


def _npz(path, n_train=8, n_val=3, n_test=4):
    """A MedMNIST-style archive with the official train / val / test splits."""
    arrays = {}
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1), ("test", n_test, 2)):
        t = blob_task(n, seed=seed)
        arrays[f"{split}_images"] = (t.images * 255).astype(np.uint8)
        arrays[f"{split}_labels"] = t.labels[:, None]
    np.savez(path, **arrays)
    return path


def test_fractions_and_seeds_on_official_splits_then_eval(tmp_path, capsys):
    data = _npz(tmp_path / "t.npz")
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: clip-adapter\nbackbone: test-vit-tiny\npretrained: random\nepochs: 2\nlr: 0.01\n"
                   "method_options:\n  head: linear\nfractions: [0.5, 1.0]\nseeds: [0, 1]\nclasses: [smooth, striped]\n")
    rc = train_main(["--config", str(cfg), "--data", str(data), "--out", str(tmp_path / "run"),
                     "--ratio", "0.5", "--opt", "reduction=2", "--quiet"])  # a schema flag and --opt
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "official 'val' split (6 images)" in captured.err and "'test' (8 images)" in captured.err
    assert "val balanced_accuracy" in captured.out and "±" in captured.out and "RANDOM" in captured.out
    for frac, n in (("0.5", 8), ("1", 16)):
        s = json.loads((tmp_path / "run" / f"fraction_{frac}" / "summary.json").read_text())
        assert s["seeds"] == [0, 1] and [r["n_train"] for r in s["runs"]] == [n, n]
        assert s["val"]["n"] == 2 and s["test"]["n"] == 2 and s["test"]["sd"]["balanced_accuracy"] is not None
        assert all(r["test"]["n"] == 8 and r["val"]["n"] == 6 for r in s["runs"])
        vals = [r["test"]["balanced_accuracy"] for r in s["runs"]]
        assert s["test"]["mean"]["balanced_accuracy"] == pytest.approx(np.mean(vals))
        assert s["test"]["sd"]["balanced_accuracy"] == pytest.approx(np.std(vals, ddof=1))
        for seed in (0, 1):
            run = json.loads((tmp_path / "run" / f"fraction_{frac}" / f"seed_{seed}" / "metrics.json").read_text())
            assert run["checkpoint"].endswith(f"seed_{seed}/adapter.safetensors")
    half = json.loads((tmp_path / "run" / "fraction_0.5" / "summary.json").read_text())
    assert half["runs"][0]["train_set_sha256"] != half["runs"][1]["train_set_sha256"]  # sampled per seed
    ckpt = tmp_path / "run" / "fraction_1" / "seed_0" / "adapter.safetensors"
    meta = json.loads(Path(str(ckpt) + ".json").read_text())
    assert meta["method_config"]["ratio"] == 0.5 and meta["method_config"]["head"] == "linear"
    assert meta["method_config"]["reduction"] == 2
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(data), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 8 and m["random_weights"] is True and len(m["confusion"]) == 2
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == m["accuracy"]
    # the test metrics the training run reported are the ones medprompt-eval computes
    assert m["accuracy"] == pytest.approx(json.loads((ckpt.parent / "metrics.json").read_text())["test"]["accuracy"])


def test_k_shot_with_a_store_and_no_validation(tmp_path, capsys):
    data = _npz(tmp_path / "t.npz", n_train=6)
    store = tmp_path / "models"
    rc = train_main(["--data", str(data), "--method", "linear-probe", "--backbone", "test-vit-tiny", "--pretrained",
                     "random", "--shots", "4", "--seeds", "3", "4", "--epochs", "2", "--val-split", "none",
                     "--store", str(store), "--out", str(tmp_path / "o"), "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "validation: none: fixed schedule" in captured.err and "fixed schedule" in captured.err
    s = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert [r["n_train_per_class"] for r in s["runs"]] == [[4, 4], [4, 4]]  # exactly k per class
    assert [r["version"] for r in s["runs"]] == ["v0001", "v0002"] and s["val"]["n"] == 0
    assert train_main(["--store", str(store), "--list-versions"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  v0001") and lines[1].startswith("* v0002") and "RANDOM" in lines[1]
    assert eval_main(["--store", str(store), "--data", str(data)]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith(":v0002")
    (store / "index.json").write_text("garbage")
    assert train_main(["--store", str(store), "--list-versions"]) == 2
    assert "is corrupt" in capsys.readouterr().err
    assert train_main(["--store", str(store), "--rebuild-index"]) == 0
    assert "rebuilt from 2 version folder(s)" in capsys.readouterr().out


def test_val_fraction_is_carved_from_the_pool_before_the_shots(tmp_path, capsys):
    data = _npz(tmp_path / "t.npz", n_train=10)
    rc = train_main(["--data", str(data), "--method", "linear-probe", "--backbone", "test-vit-tiny", "--pretrained",
                     "random", "--shots", "5", "--val-fraction", "0.3", "--epochs", "1", "--out", str(tmp_path / "o"),
                     "--quiet"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "0.3 of the pool, grouped, fixed (6 images)" in captured.err
    run = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert run["n_train_per_class"] == [5, 5] and run["val"]["n"] == 6


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    data = _npz(tmp_path / "t.npz", n_train=2)
    base = ["--data", str(data), "--backbone", "test-vit-tiny", "--pretrained", "random", "--quiet", "--out", str(tmp_path / "o")]
    assert train_main(base + ["--shots", "5"]) == 2
    assert "fewer than 5 images" in capsys.readouterr().err
    assert train_main(base + ["--method", "linear-probe", "--opt", "normalise=l2"]) == 2
    assert "has no option 'normalise'; valid options: normalize" in capsys.readouterr().err
    assert train_main(base + ["--method", "linear-probe", "--opt", "normalize=cube"]) == 2
    assert "'cube' is not one of" in capsys.readouterr().err
    assert train_main(base + ["--method", "linear-probe", "--normalize", "cube"]) == 2  # the schema's flag
    assert "'cube' is not one of" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # another method's option is not a flag of this one
        train_main(base + ["--method", "linear-probe", "--ratio", "0.5"])
    bad_cfg = tmp_path / "bad.yaml"
    bad_cfg.write_text("method: linear-probe\nval_fration: 0.2\n")
    with pytest.raises(SystemExit, match="unknown key\\(s\\) val_fration"):
        train_main(base + ["--config", str(bad_cfg)])
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    assert eval_main(["--checkpoint", str(tmp_path / "bad.safetensors"), "--data", str(data), "--split", "train"]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_list_methods_shows_every_method_with_defaults_and_options(capsys):
    assert train_main(["--list-methods"]) == 0
    out = capsys.readouterr().out
    for name, info in available_methods().items():
        assert f"\n{name}: " in "\n" + out
        for o in info.options:
            assert f"--opt {o.name} (" in out


RECIPES = sorted((REPO / "training" / "configs").glob("*.yaml"))


@pytest.mark.parametrize("recipe", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_builds_its_method(recipe):
    cfg = load_config(str(recipe))  # unknown keys fail here
    assert set(cfg) <= set(CONFIG_KEYS)
    info = available_methods()[cfg["method"]]
    options = validate_method_options(cfg["method"], cfg.get("method_options") or {})  # a typo fails here
    tiny = "test-resnet" if "resnet" in cfg["backbone"] else "test-vit-tiny"  # no downloads in tests
    model = method_class(cfg["method"])(create_backbone(tiny, "random"), ["a", "b"], **(cfg.get("method_options") or {}))
    assert model.name == cfg["method"] and set(cfg.get("method_options") or {}) <= set(options)
    # training-free baselines (zero-shot, Tip-Adapter) train nothing; every other recipe trains
    assert cfg.get("epochs", info.defaults.epochs) >= 1 or (info.defaults.epochs == 0 and "epochs" not in cfg)
    assert "seeds" in cfg and len(cfg["seeds"]) >= 3  # results are reported as mean ± sd
    yaml.safe_dump(cfg)
