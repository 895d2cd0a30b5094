"""medprompt-train --method vlsm-...: segmentation .npz -> the one loop -> a model-store version."""

import numpy as np

from napari_medprompt.train.cli import describe_methods, train_main
from napari_medprompt.train.store import ModelStore

from .conftest import SIZE, synth


def test_cli_trains_a_vlsm_adapter_into_the_store(tmp_path, capsys):
    d = synth(8, 1)
    npz = tmp_path / "slices.npz"
    np.savez(npz, images=np.stack(d.images), masks=np.stack(d.masks),
             prompts=np.array(["bright disk|round blob"] * 8), groups=np.array(d.groups))
    rc = train_main(["--method", "vlsm-shallow-v", "--data", str(npz), "--pretrained", "random", "--epochs", "1",
                     "--batch-size", "4", "--image-size", str(SIZE), "--val-fraction", "0.5", "--device", "cpu",
                     "--store", str(tmp_path / "store"), "--out", str(tmp_path / "run"), "--quiet"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "RANDOM" in err and "val dice" in out and "store version v" in out
    versions = ModelStore(tmp_path / "store").list()
    assert len(versions) == 1 and versions[0]["method"] == "vlsm-shallow-v"
    assert (tmp_path / "run" / "metrics.json").exists()


def test_cli_bad_segmentation_input(tmp_path, capsys):
    npz = tmp_path / "bad.npz"
    np.savez(npz, images=np.zeros((2, 8, 8)), masks=np.zeros((2, 8, 8)))
    rc = train_main(["--method", "vlsm-dense-v", "--data", str(npz), "--pretrained", "random", "--device", "cpu"])
    assert rc == 2 and "missing prompts" in capsys.readouterr().err
    rc = train_main(["--method", "vlsm-dense-v", "--data", str(npz), "--opt", "adapter_dim=-3"])
    assert rc == 2 and "adapter_dim" in capsys.readouterr().err
    assert "vlsm-shallow-vlc" in describe_methods() and "lr 0.0003" in describe_methods()
