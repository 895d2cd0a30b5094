"""Few-shot data: loaders, k-shot / fraction sampling, preprocessing of mixed grey/RGB/16-bit images."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.train.data import (
    DataError,
    FewShotData,
    fraction,
    from_annotations,
    from_folder,
    from_npz,
    k_shot,
    k_shot_split,
    npz_splits,
    official_splits,
    split_train_val,
)
from tests.classify.synthetic import blob_task, write_npz


def _data(counts=(10, 6, 4)):
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(counts)])
    return FewShotData([np.zeros((8, 8))] * len(labels), labels, [f"c{i}" for i in range(len(counts))])


def test_k_shot_and_fraction_are_seeded_and_stratified():
    d = _data()
    a, b, c = k_shot(d, 3, seed=1), k_shot(d, 3, seed=1), k_shot(d, 3, seed=2)
    assert a.class_counts().tolist() == [3, 3, 3]
    assert a.sources == b.sources and a.sources != c.sources
    with pytest.raises(DataError, match="'c2' \\(4\\) have fewer than 5"):
        k_shot(d, 5)
    assert fraction(d, 0.5).class_counts().tolist() == [5, 3, 2]
    assert fraction(d, 0.05).class_counts().tolist() == [1, 1, 1]  # at least one per class
    assert fraction(d, 1.0).class_counts().tolist() == [10, 6, 4]
    with pytest.raises(DataError):
        fraction(d, 0.0)


def _grouped(counts=(12, 9, 6), per_group=3):
    """Classes of ``counts`` images, ``per_group`` consecutive images of a class per case."""
    d = _data(counts)
    groups, n = [], 0
    for c, k in enumerate(counts):
        groups += [f"case{c}-{i // per_group}" for i in range(k)]
        n += k
    return FewShotData(d.images, d.labels, d.classes, None, d.sources, groups)


def test_split_train_val_is_grouped_and_stratified():
    d = _grouped()
    for seed in range(5):
        tr, va = split_train_val(d, 0.34, seed=seed)
        assert set(tr.groups).isdisjoint(va.groups)  # no case on both sides
        assert len(tr) + len(va) == len(d)
        assert (va.class_counts() >= 1).all() and (tr.class_counts() >= 1).all()
        assert va.class_counts().tolist() == [3, 3, 3]  # a third of each class, whole cases
    a, b = split_train_val(d, 0.34, seed=1)[1], split_train_val(d, 0.34, seed=1)[1]
    assert a.sources == b.sources
    assert split_train_val(d, 0.0)[1] is None


def test_a_group_holding_all_of_a_class_cannot_be_split():
    d = _grouped((6, 3), per_group=3)  # class c1 is one case
    with pytest.raises(DataError, match="cannot split class 'c1'.*all its 3 image\\(s\\) belong to group 'case1-0'"):
        split_train_val(d, 0.3)
    d = _data((5, 1))
    with pytest.raises(DataError, match="class 'c1'"):
        split_train_val(d, 0.3)


def test_k_shot_is_exact_grouped_and_spreads_over_cases():
    d = _grouped((12, 9, 6))
    shots, rest = k_shot_split(d, 2, seed=3)
    assert shots.class_counts().tolist() == [2, 2, 2]
    assert len(set(shots.groups)) == 6  # 2 shots per class from 2 different cases each
    assert set(shots.groups).isdisjoint(rest.groups)  # the rest of the pool shares no case with the shots
    assert len(rest) == len(d) - 6 * 3
    shots5 = k_shot(d, 5, seed=0)
    assert shots5.class_counts().tolist() == [5, 5, 5]
    assert len(set(g for g, y in zip(shots5.groups, shots5.labels) if y == 2)) == 2  # c2 has only 2 cases


def test_fingerprint_covers_pixels_masks_labels_and_groups():
    t = blob_task(3, seed=0)
    d = from_annotations(t.as_items(), classes=t.classes)
    fp = d.fingerprint()
    assert fp == from_annotations(t.as_items(), classes=t.classes).fingerprint()
    img = [im.copy() for im in d.images]
    img[2][5, 5] += 0.01
    assert FewShotData(img, d.labels, d.classes, d.masks, d.sources, d.groups).fingerprint() != fp
    masks = [m.copy() for m in d.masks]
    masks[0][0, 0] = ~masks[0][0, 0]
    assert FewShotData(d.images, d.labels, d.classes, masks, d.sources, d.groups).fingerprint() != fp
    assert FewShotData(d.images, d.labels, d.classes, None, d.sources, d.groups).fingerprint() != fp
    regrouped = ["one"] * len(d)
    assert FewShotData(d.images, d.labels, d.classes, d.masks, d.sources, regrouped).fingerprint() != fp
    renamed = [f"elsewhere/{s}" for s in d.sources]  # same content from another path: same data
    assert FewShotData(d.images, d.labels, d.classes, d.masks, renamed, d.groups).fingerprint() == fp


def test_annotations_carry_their_series_as_group():
    vol = np.random.default_rng(0).random((4, 8, 8)).astype(np.float32)
    items = [(vol[z], None, "a" if z < 2 else "b", "ct-001") for z in range(4)]
    items += [(np.zeros((8, 8)), None, "a"), (np.ones((8, 8)), None, "b", None)]
    d = from_annotations(items)
    assert d.groups == ["ct-001"] * 4 + ["annotation[4]", "annotation[5]"]
    assert d.subset([1, 4]).groups == ["ct-001", "annotation[4]"]
    with pytest.raises(DataError, match="expected \\(image, mask, class\\[, group\\]\\)"):
        from_annotations([(np.zeros((4, 4)), None)])


def test_bad_training_sets_have_clear_errors():
    with pytest.raises(DataError, match="'c1' have no examples"):
        FewShotData([np.zeros((4, 4))] * 2, [0, 0], ["c0", "c1"]).validate()
    with pytest.raises(DataError, match="at least two classes"):
        FewShotData([np.zeros((4, 4))] * 2, [0, 0], ["only"]).validate()
    d = from_annotations([(np.zeros((4, 4)), None, "a"), (np.zeros((4, 4)), np.ones((4, 4)), "b")])
    with pytest.raises(DataError, match="needs a mask for every image.*annotation\\[0\\]"):
        d.validate(require_masks=True)
    with pytest.raises(DataError, match="not among the classes"):
        from_annotations([(np.zeros((4, 4)), None, "x")], classes=["a", "b"])


def test_folder_with_16bit_rgb_and_masks(tmp_path):
    from PIL import Image

    (tmp_path / "normal").mkdir()
    (tmp_path / "lesion").mkdir()
    Image.fromarray(np.arange(64 * 48, dtype=np.uint16).reshape(48, 64) * 20).save(tmp_path / "normal" / "a.png")
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(tmp_path / "normal" / "b.png")
    Image.fromarray(np.full((20, 20), 200, np.uint8)).save(tmp_path / "lesion" / "c.png")
    Image.fromarray(np.eye(20, dtype=np.uint8) * 255).save(tmp_path / "lesion" / "c_mask.png")
    d = from_folder(tmp_path)
    assert d.classes == ["lesion", "normal"] and d.labels.tolist() == [0, 1, 1]
    assert d.images[1].dtype == np.uint16 and d.images[2].shape == (30, 40, 3)
    assert d.masks[0].sum() == 20 and d.masks[1] is None
    assert d.groups == [str(tmp_path / "lesion" / "c.png"), str(tmp_path / "normal" / "a.png"), str(tmp_path / "normal" / "b.png")]
    (tmp_path / "lesion" / "patient7").mkdir()  # a case folder: its slices are one group
    for z in range(2):
        Image.fromarray(np.full((20, 20), 100 + z, np.uint8)).save(tmp_path / "lesion" / "patient7" / f"s{z}.png")
    d = from_folder(tmp_path)
    assert d.groups[:3] == [str(tmp_path / "lesion" / "c.png"), "patient7", "patient7"] and d.labels.tolist() == [0, 0, 0, 1, 1]
    (tmp_path / "normal" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="broken.png"):
        from_folder(tmp_path)


def test_npz_loader(tmp_path):
    t = blob_task(3, seed=0)
    write_npz(tmp_path / "t.npz", t, t)
    d = from_npz(tmp_path / "t.npz", "test", classes=["smooth", "striped"])
    assert len(d) == 6 and d.classes == ["smooth", "striped"] and d.sources[0] == "t.npz:test[0]"
    with pytest.raises(DataError, match="no 'val_images'"):
        from_npz(tmp_path / "t.npz", "val")
    assert npz_splits(tmp_path / "t.npz") == ["train", "test"]
    splits = official_splits(tmp_path / "t.npz", ["smooth", "striped"])
    assert set(splits) == {"train", "test"} and splits["test"].classes == ["smooth", "striped"]
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.npz"):
        from_npz(tmp_path / "bad.npz")


def test_medmnist_official_splits():
    from tests.conftest import shared_file

    s = official_splits(shared_file("medmnist/breastmnist.npz"), ["malignant", "normal-benign"])
    assert [len(s[k]) for k in ("train", "val", "test")] == [546, 78, 156]
    assert all(d.classes == ["malignant", "normal-benign"] for d in s.values())


def test_preprocessing_mixed_sizes_channels_and_bit_depths():
    import torch

    from napari_medprompt.train.preprocess import Preprocess, images_to_tensor, masks_to_tensor, to_unit_rgb

    spec = Preprocess(32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), pad_to_square=False)  # stretched: no black padding
    grey8 = np.full((20, 30), 255, np.uint8)
    rgb = np.zeros((40, 40, 3), np.uint8)
    rgb[..., 0] = 255
    ct = np.linspace(-1000, 3000, 50 * 60, dtype=np.float32).reshape(50, 60)  # HU
    x16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16)
    chw = np.zeros((3, 16, 16), np.float32)
    keep = ct.copy()
    x = images_to_tensor([grey8, rgb, ct, x16, chw], spec)
    assert x.shape == (5, 3, 32, 32) and torch.isfinite(x).all()
    np.testing.assert_array_equal(ct, keep)  # the caller's array is untouched
    torch.testing.assert_close(x[0], torch.full((3, 32, 32), 2.0))  # white grey image: (1 - .5) / .25
    assert x[1, 0].mean() > 1.9 and x[1, 1].mean() < -1.9  # red stays red
    u16 = to_unit_rgb(x16)
    assert u16.min() == 0.0 and u16.max() == 1.0
    m = masks_to_tensor([np.ones((20, 30), bool)], [grey8], spec)
    assert m.shape == (1, 1, 32, 32) and float(m.min()) == 1.0
    with pytest.raises(DataError, match="does not match"):
        masks_to_tensor([np.ones((10, 10), bool)], [grey8], spec, ["scan.png"])
    with pytest.raises(DataError, match="scan.png: expected a 2D grey or RGB"):
        images_to_tensor([np.zeros((4, 5, 6, 7))], spec, ["scan.png"])
    with pytest.raises(DataError, match="NaN"):
        images_to_tensor([np.full((8, 8), np.nan, np.float32)], spec)
