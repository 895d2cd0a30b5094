"""medprompt-train / medprompt-eval drive the same loop from the command line (configs, fractions, errors)."""

from __future__ import annotations

import json
from pathlib import Path

from napari_medprompt.train.cli import eval_main, train_main
from tests.classify.synthetic import blob_task, write_npz

REPO = Path(__file__).resolve().parents[2]


def test_train_then_eval_on_an_npz(tmp_path, capsys):
    write_npz(tmp_path / "t.npz", blob_task(10, seed=0), blob_task(6, seed=1))
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: clip-adapter\nbackbone: test-vit-tiny\npretrained: random\nepochs: 2\nlr: 0.01\n"
                   "method_options:\n  head: linear\nfractions: [0.5, 1.0]\nclasses: [smooth, striped]\n")
    rc = train_main(["--config", str(cfg), "--data", str(tmp_path / "t.npz"), "--out", str(tmp_path / "run"),
                     "--method-option", "ratio=0.5", "--quiet"])
    assert rc == 0
    for frac, n in (("0.5", 10), ("1", 20)):
        result = json.loads((tmp_path / "run" / f"fraction_{frac}" / "metrics.json").read_text())
        assert result["n_images"] == n and result["checkpoint"].endswith("adapter.safetensors")
    ckpt = tmp_path / "run" / "fraction_1" / "adapter.safetensors"
    meta = json.loads(Path(str(ckpt) + ".json").read_text())
    assert meta["method_config"]["ratio"] == 0.5 and meta["method_config"]["head"] == "linear"
    capsys.readouterr()
    assert eval_main(["--checkpoint", str(ckpt), "--data", str(tmp_path / "t.npz"), "--json", str(tmp_path / "m.json")]) == 0
    m = json.loads(capsys.readouterr().out)
    assert m["n"] == 12 and m["random_weights"] is True and len(m["confusion"]) == 2
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == m["accuracy"]


def test_cli_errors_are_messages_not_tracebacks(tmp_path, capsys):
    write_npz(tmp_path / "t.npz", blob_task(2, seed=0))
    rc = train_main(["--data", str(tmp_path / "t.npz"), "--backbone", "test-vit-tiny", "--pretrained", "random",
                     "--shots", "5", "--quiet", "--out", str(tmp_path / "o")])
    assert rc == 2 and "fewer than 5 images" in capsys.readouterr().err
    (tmp_path / "bad.safetensors").write_bytes(b"junk")
    assert eval_main(["--checkpoint", str(tmp_path / "bad.safetensors"), "--data", str(tmp_path / "t.npz"), "--split", "train"]) == 2
    assert "bad.safetensors" in capsys.readouterr().err


def test_shipped_training_configs_parse_and_name_registered_methods():
    import yaml

    from napari_medprompt.classify.base import available_methods

    files = sorted((REPO / "training" / "configs").glob("*.yaml"))
    assert files
    for f in files:
        cfg = yaml.safe_load(f.read_text())
        assert cfg["method"] in available_methods(), f
        assert "backbone" in cfg and cfg.get("epochs", 1) >= 1
