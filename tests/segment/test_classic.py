"""The classic (region-growing) backend on the real TotalSegmentator CT, and its input checks.

Clicks are what a user would do: one positive point well inside the organ (the deepest point of the
reference label) on the slice where the organ is largest. The label map is TotalSegmentator output,
used as the reference.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_medprompt.segment import (
    PromptError,
    PropagationSettings,
    Prompt,
    Segmenter,
    create_segmenter,
)
from napari_medprompt.segment.propagation import mask_to_box
from tests.conftest import shared_file

ORGANS = {  # label ids in example_seg_fast_force_split (lobes merged per lung)
    "liver": [5],
    "lung_left": [10, 11],
    "lung_right": [12, 13, 14],
    "kidney_left": [3],
    "spleen": [1],
    "urinary_bladder": [21],
}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1))


def deepest_point(mask: np.ndarray) -> tuple[int, int]:
    dist = ndi.distance_transform_edt(mask)
    r, c = np.unravel_index(int(np.argmax(dist)), mask.shape)
    return int(r), int(c)


@pytest.fixture(scope="module")
def ct_case():
    import nibabel as nib

    img = nib.load(shared_file("totalsegmentator/example_ct.nii.gz"))
    seg = nib.load(shared_file("totalsegmentator/example_seg_fast_force_split.nii.gz"))
    ct = np.asarray(img.dataobj).transpose(2, 1, 0)  # nibabel (x, y, z) -> (z, y, x)
    labels = np.asarray(seg.dataobj).transpose(2, 1, 0)
    spacing = tuple(float(v) for v in img.header.get_zooms()[::-1])
    return ct, labels, spacing


@pytest.fixture(scope="module")
def classic(ct_case):
    ct, _, spacing = ct_case
    seg = create_segmenter("classic")
    seg.bind(ct, modality="CT", spacing=spacing, key="example_ct")
    return seg


def organ(labels: np.ndarray, name: str) -> tuple[np.ndarray, int, tuple[int, int]]:
    ref = np.isin(labels, ORGANS[name])
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    return ref, z, deepest_point(ref[z])


def test_is_a_segmenter_without_weights():
    seg = create_segmenter("classic")
    assert isinstance(seg, Segmenter)
    assert seg.name == "classic" and seg.random_weights is False


# measured: liver 0.919, left lung 0.981, right lung 0.982, left kidney 0.967, spleen 0.956,
# bladder 0.967
@pytest.mark.parametrize(
    "name, minimum",
    [
        ("liver", 0.88),
        ("lung_left", 0.95),
        ("lung_right", 0.95),
        ("kidney_left", 0.90),
        ("spleen", 0.90),
        ("urinary_bladder", 0.90),
    ],
)
def test_single_click_slice_dice(ct_case, classic, name, minimum):
    ct, labels, _ = ct_case
    before = ct.copy()
    ref, z, point = organ(labels, name)
    res = classic.predict(z, Prompt(points=[point], labels=[1]))
    assert res.mask.shape == ref[z].shape and res.mask.dtype == bool
    assert res.slice_index == z and res.source == "predicted" and 0.0 <= res.score <= 1.0
    assert dice(res.mask, ref[z]) >= minimum
    np.testing.assert_array_equal(ct, before)  # the HU values are never modified


# measured: liver 0.891 (z 55-111 vs reference 69-111), left lung 0.956, right lung 0.963,
# left kidney 0.903 (z 73-103 vs 72-104)
@pytest.mark.parametrize(
    "name, minimum", [("liver", 0.83), ("lung_left", 0.92), ("lung_right", 0.92), ("kidney_left", 0.86)]
)
def test_propagation_from_the_click_gives_usable_3d_dice(ct_case, classic, name, minimum):
    _, labels, _ = ct_case
    ref, z, point = organ(labels, name)
    first = classic.predict(z, Prompt(points=[point], labels=[1]))
    vol = np.zeros_like(ref)
    vol[z] = first.mask
    seen, lost = set(), []
    for res in classic.propagate({1: {z: first.mask}}, PropagationSettings()):
        assert res.slice_index not in seen and res.slice_index != z
        seen.add(res.slice_index)
        if res.lost:
            lost.append(res.slice_index)
            assert not res.mask.any()
        else:
            vol[res.slice_index] = res.mask
    assert dice(vol, ref) >= minimum
    # it stopped by itself, in every direction it went
    assert lost
    ref_z = np.flatnonzero(ref.any(axis=(1, 2)))
    if ref_z[0] > 0:
        assert min(seen) > 0 or 0 in lost


@pytest.mark.parametrize("name", ["liver", "kidney_left"])
def test_any_deep_click_works_not_just_the_deepest(ct_case, classic, name):
    # ten clicks anywhere in the inner part of the organ (depth >= half the maximum); measured min
    # Dice liver 0.916, left kidney 0.928 (before the k-sweep fix one liver click gave 0.43)
    _, labels, _ = ct_case
    ref, z, _ = organ(labels, name)
    depth = ndi.distance_transform_edt(ref[z])
    candidates = np.argwhere(depth >= 0.5 * depth.max())
    clicks = candidates[np.random.default_rng(0).choice(len(candidates), 10, replace=False)]
    scores = [dice(classic.predict(z, Prompt(points=[p], labels=[1])).mask, ref[z]) for p in clicks]
    assert min(scores) >= 0.88, scores


def _kidney_3d_dice(seg, ref, seeds) -> float:
    vol = np.zeros_like(ref)
    for z, m in seeds.items():
        vol[z] = m
    for res in seg.propagate({1: seeds}):
        assert res.slice_index not in seeds
        if not res.lost:
            vol[res.slice_index] = res.mask
    return dice(vol, ref)


def test_a_corrected_slice_reenters_as_a_seed_and_fixes_the_propagation(ct_case):
    # with the plain stop rule, seeded on slice 83 the left kidney's lower pole slides into a
    # neighbour and on down the body (measured 3D Dice 0.32); the user corrects slice 74 (here: the
    # reference outline) and propagation from both seeds recovers it (measured 0.93)
    ct, labels, spacing = ct_case
    ref = np.isin(labels, ORGANS["kidney_left"])
    seg = create_segmenter("classic", regrow_ratio=None)
    seg.bind(ct, modality="CT", spacing=spacing)
    first = seg.predict(83, Prompt(points=[deepest_point(ref[83])], labels=[1])).mask
    before = _kidney_3d_dice(seg, ref, {83: first})
    after = _kidney_3d_dice(seg, ref, {83: first, 74: ref[74]})
    assert after >= 0.88 and after > before + 0.2


def test_regrowth_after_shrinking_stops_the_slide_into_a_neighbour(ct_case, classic):
    # the same seed with the classic default (stop where a shrinking object grows again): 0.87
    _, labels, _ = ct_case
    ref = np.isin(labels, ORGANS["kidney_left"])
    first = classic.predict(83, Prompt(points=[deepest_point(ref[83])], labels=[1])).mask
    assert _kidney_3d_dice(classic, ref, {83: first}) >= 0.83


def test_box_is_a_hard_limit(ct_case, classic):
    _, labels, _ = ct_case
    ref, z, (r, c) = organ(labels, "liver")
    free = classic.predict(z, Prompt(points=[(r, c)], labels=[1])).mask
    box = (r - 12, c - 15, r + 12, c + 15)
    boxed = classic.predict(z, Prompt(points=[(r, c)], labels=[1], box=box)).mask
    inside = np.zeros_like(boxed)
    inside[box[0] : box[2] + 1, box[1] : box[3] + 1] = True
    assert not (boxed & ~inside).any()
    assert boxed.sum() < free.sum()
    assert dice(boxed, ref[z] & inside) >= 0.9


def test_box_alone_finds_the_object(ct_case, classic):
    _, labels, _ = ct_case
    for name in ("liver", "kidney_left", "lung_right"):
        ref, z, _ = organ(labels, name)
        res = classic.predict(z, Prompt(box=mask_to_box(ref[z], margin=2)))
        assert dice(res.mask, ref[z]) >= 0.9, name  # measured 0.945 / 0.967 / 0.979


def test_negative_point_cuts_the_region(ct_case, classic):
    _, labels, _ = ct_case
    ref, z, (r, c) = organ(labels, "liver")
    free = classic.predict(z, Prompt(points=[(r, c)], labels=[1])).mask
    # a negative click inside the liver, 20 px away: the region is cut between the two clicks
    neg = (r, c - 20)
    assert free[neg]
    cut = classic.predict(z, Prompt(points=[(r, c), neg], labels=[1, 0])).mask
    assert not cut[neg] and cut[r, c]
    assert cut.sum() < 0.95 * free.sum()
    assert not (cut & ~free).any()


def test_previous_mask_is_refined(ct_case, classic):
    _, labels, _ = ct_case
    for name in ("kidney_left", "lung_right"):
        ref, z, _ = organ(labels, name)
        rough = ndi.binary_dilation(ref[z], iterations=2)  # a sloppy outline drawn by hand
        res = classic.predict(z, Prompt(mask=rough))
        assert dice(res.mask, ref[z]) > dice(rough, ref[z]) + 0.1, name  # 0.76 -> 0.97, 0.78 -> 0.98


def test_two_dimensional_image_predicts_and_refuses_to_propagate(ct_case):
    ct, labels, spacing = ct_case
    ref, z, point = organ(labels, "kidney_left")
    seg = create_segmenter("classic")
    seg.bind(ct[z], modality="CT", spacing=spacing[1:])
    res = seg.predict(0, Prompt(points=[point], labels=[1]))
    assert dice(res.mask, ref[z]) >= 0.9
    with pytest.raises(PromptError, match="2D"):
        seg.propagate({1: {0: res.mask}})
    with pytest.raises(PromptError, match="use slice index 0"):
        seg.predict(3, Prompt(points=[point], labels=[1]))


@pytest.mark.parametrize(
    "kwargs, prompt, message",
    [
        ({}, Prompt(points=[(50, 130)], labels=[1]), "outside the 101 x 122 slice"),
        ({}, Prompt(points=[(-3, 10)], labels=[1]), "outside"),
        ({}, Prompt(), "empty"),
        ({}, Prompt(points=[(40, 40)], labels=[0]), "only negative points"),
        ({}, Prompt(box=(40, 40, 40, 60)), "zero area"),
        ({}, Prompt(box=(200, 200, 220, 230)), "entirely outside"),
        ({}, Prompt(mask=np.ones((10, 10), bool)), "shape"),
        ({}, Prompt(points=[(40, 40)], labels=[2]), "1 \\(positive\\) or 0"),
        ({"slice_index": 112}, Prompt(points=[(40, 40)], labels=[1]), "out of range.*0 to 111"),
        ({"slice_index": -1}, Prompt(points=[(40, 40)], labels=[1]), "out of range"),
    ],
)
def test_bad_prompts_get_clear_errors(classic, kwargs, prompt, message):
    with pytest.raises(PromptError, match=message):
        classic.predict(kwargs.get("slice_index", 60), prompt)


def test_mismatched_point_labels_and_unbound_segmenter():
    with pytest.raises(PromptError, match="one label"):
        Prompt(points=[(1, 2), (3, 4)], labels=[1])
    with pytest.raises(PromptError, match="bind"):
        create_segmenter("classic").predict(0, Prompt(points=[(1, 1)], labels=[1]))
    with pytest.raises(PromptError, match="dimensions"):
        create_segmenter("classic").bind(np.zeros((2, 3, 4, 5)))
    with pytest.raises(PromptError, match="colour"):
        create_segmenter("classic").bind(np.zeros((64, 64, 3), np.uint8))


def test_non_finite_pixels_do_not_spread():
    img = np.full((40, 40), 10.0, np.float32)
    img[10:30, 10:30] = 300.0
    img[20, 26] = np.nan  # a bad pixel inside the object
    seg = create_segmenter("classic")
    seg.bind(img, modality="MR")
    res = seg.predict(0, Prompt(points=[(20, 20)], labels=[1]))
    truth = np.zeros((40, 40), bool)
    truth[10:30, 10:30] = True
    assert dice(res.mask, truth) >= 0.95


def test_several_objects_and_cancel(ct_case, classic):
    _, labels, _ = ct_case
    liver, zl, pl = organ(labels, "liver")
    kidney, zk, pk = organ(labels, "kidney_left")
    seeds = {
        1: {zl: classic.predict(zl, Prompt(points=[pl], labels=[1])).mask},
        2: {zk: classic.predict(zk, Prompt(points=[pk], labels=[1])).mask},
    }
    out = list(classic.propagate(seeds, PropagationSettings(slice_range=(88, 108))))
    assert {r.object_id for r in out} == {1, 2}
    assert all(88 <= r.slice_index <= 108 for r in out)
    kid = {r.slice_index: r.mask for r in out if r.object_id == 2 and not r.lost}
    assert np.mean([dice(kid[z], kidney[z]) for z in kid]) >= 0.85

    cancel = threading.Event()
    it = classic.propagate(seeds, PropagationSettings(cancel=cancel))
    got = [next(it), next(it)]
    cancel.set()
    assert list(it) == [] and len(got) == 2


def test_prefetch_yields_indices_and_honours_cancel(classic):
    assert list(classic.prefetch([5, 6, 4])) == [5, 6, 4]
    cancel = threading.Event()
    it = classic.prefetch(range(10), cancel)
    assert next(it) == 0
    cancel.set()
    assert list(it) == []
    with pytest.raises(PromptError, match="out of range"):
        list(classic.prefetch([500]))


def test_other_modality_uses_the_seed_statistics():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:96, :96]
    truth = (yy - 40) ** 2 / 400 + (xx - 50) ** 2 / 700 <= 1
    img = rng.normal(200.0, 15.0, (96, 96)) + 300.0 * truth  # an MR-like bright lesion
    seg = create_segmenter("classic")
    seg.bind(img.astype(np.float32), modality="MR", spacing=(1.0, 1.0))
    res = seg.predict(0, Prompt(points=[(40, 50)], labels=[1]))
    assert dice(res.mask, truth) >= 0.95


def test_connected_mode_for_high_contrast_and_unknown_modes(ct_case, classic):
    _, labels, _ = ct_case
    ref, z, point = organ(labels, "lung_right")
    first = classic.predict(z, Prompt(points=[point], labels=[1]))
    vol = np.zeros_like(ref)
    vol[z] = first.mask
    for res in classic.propagate({1: {z: first.mask}}, PropagationSettings(mode="connected")):
        if not res.lost:
            vol[res.slice_index] = res.mask
    assert dice(vol, ref) >= 0.92  # measured 0.963
    with pytest.raises(PromptError, match="no propagation mode 'memory'"):
        classic.propagate({1: {z: first.mask}}, PropagationSettings(mode="memory"))


def test_a_tight_box_keeps_the_blurred_edge():
    img = np.zeros((50, 50), np.float32)
    img[10:40, 10:40] = 100.0
    truth = img > 0
    seg = create_segmenter("classic")
    seg.bind(img, modality="CT", spacing=(1.0, 1.0))
    free = seg.predict(0, Prompt(points=[(20, 20)], labels=[1])).mask
    boxed = seg.predict(0, Prompt(points=[(20, 20)], labels=[1], box=(10, 10, 39, 39))).mask
    assert dice(free, truth) >= 0.98 and dice(boxed, truth) >= 0.98


@pytest.fixture(scope="module")
def dicom_case():
    from napari_medprompt.io.nifti import read_nifti
    from napari_medprompt.io.read import read_image

    vol = read_image(shared_file("totalsegmentator/example_ct_dicom"))[0]
    ref_vol = read_nifti(shared_file("totalsegmentator/example_seg_dicom.nii.gz"))
    # the label map's rows run the other way (its affine's y axis is flipped against the series')
    assert np.allclose(ref_vol.affine[1, 1], -vol.affine[1, 1])
    return vol, np.asarray(ref_vol.data)[:, ::-1, :]


@pytest.mark.parametrize(
    "label_id, min_2d, min_3d", [(5, 0.90, 0.88), (1, 0.85, 0.85)], ids=["liver", "spleen"]
)
def test_fine_spacing_512_dicom_series(dicom_case, label_id, min_2d, min_3d):
    # the same millimetre settings on a 512 x 512, 0.98 mm, contrast-enhanced DICOM series;
    # measured: liver 0.944 (slice) / 0.935 (3D), spleen 0.902 / 0.915
    vol, labels = dicom_case
    ref = labels == label_id
    seg = create_segmenter("classic")
    seg.bind(vol.data, modality="CT", spacing=vol.spacing)
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    first = seg.predict(z, Prompt(points=[deepest_point(ref[z])], labels=[1]))
    assert dice(first.mask, ref[z]) >= min_2d
    out = np.zeros_like(ref)
    out[z] = first.mask
    for res in seg.propagate({1: {z: first.mask}}):
        if not res.lost:
            out[res.slice_index] = res.mask
    assert dice(out, ref) >= min_3d


def test_without_spacing_a_body_field_of_view_is_assumed(ct_case):
    # the settings are in millimetres; with no spacing the 122-px-wide slice is taken as 400 mm wide
    # (3.3 mm pixels, close to the true 3 mm). Measured: left kidney 0.969 (with spacing 0.967).
    ct, labels, _ = ct_case
    ref, z, point = organ(labels, "kidney_left")
    seg = create_segmenter("classic")
    seg.bind(ct, modality="CT")
    assert seg.spacing_yx == pytest.approx((400 / 122, 400 / 122))
    assert dice(seg.predict(z, Prompt(points=[point], labels=[1])).mask, ref[z]) >= 0.9


def test_the_liver_does_not_slide_down_the_vena_cava(ct_case, classic):
    # before the thinned-out check the liver went on 14 slices (42 mm) below its lower tip, down the
    # inferior vena cava (a 30 px section, gradually reached, so no area jump), and the run only
    # stopped at slice 54. Measured now: extent 70-111 against the reference 69-111.
    _, labels, _ = ct_case
    ref, z, point = organ(labels, "liver")
    first = classic.predict(z, Prompt(points=[point], labels=[1]))
    kept, lost = [z], {}
    for res in classic.propagate({1: {z: first.mask}}):
        if res.lost:
            lost[res.slice_index] = res.flag
        else:
            kept.append(res.slice_index)
    ref_z = np.flatnonzero(ref.any(axis=(1, 2)))
    assert min(kept) >= ref_z[0] - 2 and max(kept) <= ref_z[-1] + 2
    below = [zz for zz in lost if zz < z]
    # the run reports the end where it really is, and why
    assert below and max(below) >= ref_z[0] - 2
    assert any("thinned out" in lost[zz] for zz in below)


# ------------------------------------------------------------------ beyond CT: MR and X-ray


def _mr_lesion(name: str):
    from napari_medprompt.io.read import read_image

    vol = read_image(shared_file(f"pyradiomics/{name}_image.nrrd"))[0]
    ref = np.asarray(read_image(shared_file(f"pyradiomics/{name}_label.nrrd"))[0].data) > 0
    return vol, ref


# measured one-click Dice: brain1 0.847, brain2 0.722 (before: 0.015, the region took 31041 px, half
# the slice), breast1 0.861 (before: 0.03, the whole sub-volume slice)
@pytest.mark.parametrize("name, minimum", [("brain1", 0.80), ("brain2", 0.65), ("breast1", 0.80)])
def test_mr_lesion_one_click_stays_on_the_lesion(name, minimum):
    vol, ref = _mr_lesion(name)
    assert vol.modality == "MR"  # inferred from the NRRD's values
    seg = create_segmenter("classic")
    seg.bind(vol.data, modality=vol.modality, spacing=vol.spacing)
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    res = seg.predict(z, Prompt(points=[deepest_point(ref[z])], labels=[1]))
    assert dice(res.mask, ref[z]) >= minimum
    assert res.mask.sum() < 3 * ref[z].sum() and res.flag == ""


# measured one-click Dice on the TotalSegmentator MR example: spleen 0.937, right kidney 0.896,
# left kidney 0.849, liver 0.729
@pytest.mark.parametrize("label_id, minimum", [(1, 0.88), (2, 0.85), (3, 0.80), (5, 0.68)],
                         ids=["spleen", "kidney_right", "kidney_left", "liver"])
def test_abdominal_mr_one_click(label_id, minimum):
    from napari_medprompt.io.read import read_image

    vol = read_image(shared_file("totalsegmentator/example_mr_sm.nii.gz"))[0]
    ref = np.asarray(read_image(shared_file("totalsegmentator/example_seg_mr.nii.gz"))[0].data) == label_id
    seg = create_segmenter("classic")
    seg.bind(vol.data, modality=vol.modality, spacing=vol.spacing)
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    assert dice(seg.predict(z, Prompt(points=[deepest_point(ref[z])], labels=[1])).mask, ref[z]) >= minimum


def test_chest_x_ray_lungs_one_click():
    # measured: mean one-click Dice 0.744 over the 22 lungs of the 11 Shenzhen images (0.424 with the
    # MR/CT band rule, which stops at the first area jump that the ribs cause)
    import glob

    from PIL import Image

    from napari_medprompt.io.read import read_image

    folder = shared_file("shenzhen_cxr_lungmasks/images")
    scores = []
    for f in sorted(glob.glob(str(folder / "*.png"))):
        vol = read_image(f)[0]
        assert vol.modality == "DX"
        m = np.asarray(Image.open(f.replace("images", "masks").replace(".png", "_mask.png"))) >= 128
        m = m[..., 0] if m.ndim == 3 else m
        lab, _ = ndi.label(m)
        sizes = np.bincount(lab.ravel())[1:]
        seg = create_segmenter("classic")
        seg.bind(vol.data, modality=vol.modality)
        for k in np.argsort(sizes)[::-1][:2]:
            ref = lab == k + 1
            scores.append(dice(seg.predict(0, Prompt(points=[deepest_point(ref)], labels=[1])).mask, ref))
    assert len(scores) == 22 and np.mean(scores) >= 0.70, scores


def test_a_flood_over_most_of_the_image_is_flagged():
    img = np.full((60, 60), 100.0, np.float32)  # nothing to stop the growth
    seg = create_segmenter("classic")
    seg.bind(img, modality="CT", spacing=(1.0, 1.0))
    res = seg.predict(0, Prompt(points=[(30, 30)], labels=[1]))
    # a click never floods the whole slice: the band narrows, else only the click's surroundings stay
    assert res.mask[30, 30] and res.mask.mean() < 0.5 and res.flag == ""
    rough = np.zeros((60, 60), bool)
    rough[5:55, 5:55] = True  # a mask prompt (the user's own outline) is refined, not cut back
    res = seg.predict(0, Prompt(mask=rough))
    assert res.mask.mean() > 0.5 and "covers" in res.flag


def test_a_later_click_on_an_edge_never_floods_the_first_clicks_object(ct_case, classic):
    # the left kidney: a second positive click on an edge pixel whose neighbourhood is mostly fat
    # once widened the band into the fat (Dice 0.967 -> 0.056); it now only adds its own surroundings
    _, labels, _ = ct_case
    ref, z, point = organ(labels, "kidney_left")
    one = classic.predict(z, Prompt(points=[point], labels=[1])).mask
    two = classic.predict(z, Prompt(points=[point, (35, 33)], labels=[1, 1])).mask
    assert dice(two, ref[z]) >= 0.8 and two.sum() < 1.5 * one.sum()


def test_mr_lesion_propagation_stops_where_the_lesion_ends():
    # brain1 (glioblastoma, T1+Gd, 6.5 mm slices): without the seed-area cap and extent test the
    # band leaked gradually and the run went on to slice 24 (label: 11-17), 3D Dice 0.17; measured
    # now: slices 13-17, 3D Dice 0.47 (the lesion's slices far from the seed change too much)
    vol, ref = _mr_lesion("brain1")
    seg = create_segmenter("classic")
    seg.bind(vol.data, modality=vol.modality, spacing=vol.spacing)
    z = int(np.argmax(ref.sum(axis=(1, 2))))
    first = seg.predict(z, Prompt(points=[deepest_point(ref[z])], labels=[1])).mask
    out = np.zeros_like(ref)
    out[z] = first
    flags = []
    for res in seg.propagate({1: {z: first}}):
        if res.lost:
            flags.append(res.flag)
        else:
            out[res.slice_index] = res.mask
    kept = np.flatnonzero(out.any(axis=(1, 2)))
    ref_z = np.flatnonzero(ref.any(axis=(1, 2)))
    assert kept[-1] <= ref_z[-1] + 2 and kept[0] >= ref_z[0] - 2
    assert any("seed" in f for f in flags) and dice(out, ref) >= 0.4
