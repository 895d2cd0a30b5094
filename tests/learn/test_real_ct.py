"""The learn loop on the real CT of ../shared/data (skipped when absent): liver and spleen of the
TotalSegmentator example as two classed objects, a short run with the CT window, per-object
predictions and a heat-map layer with the image layer's shape, scale and affine."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.io.layers import volume_to_layer_data
from napari_medprompt.io.read import read_image
from napari_medprompt.learn import LearnError, LearnRun, LearnWorkspace, Predictor
from napari_medprompt.session import AnnotationSession
from tests.conftest import shared_file

LIVER, SPLEEN = 5, 1  # TotalSegmentator "total" label ids


def test_real_ct_objects_train_predict_and_overlay(tmp_path):
    ct = read_image(shared_file("totalsegmentator/example_ct_sm.nii.gz"))[0]
    seg = read_image(shared_file("totalsegmentator/example_seg.nii.gz"))[0].data
    labels = np.where(np.isin(seg, (LIVER, SPLEEN)), seg, 0).astype(np.uint16)
    s = AnnotationSession(ct.data.shape, ct.spacing, image_key="content:example_ct_sm", image_name="example_ct_sm.nii.gz",
                          labels=labels, folder=tmp_path / "example_ct_sm.medprompt")
    for oid, name in ((LIVER, "liver"), (SPLEEN, "spleen")):
        s.new_object(name, object_id=oid)
        s.set_status(oid, range(ct.data.shape[0]), "accepted")
        s.set_object_class(oid, name)
    ws = LearnWorkspace.beside(s.folder)
    added = ws.examples.add_session(s, ct.data, modality=ct.modality)
    counts = ws.examples.counts()
    assert set(counts) == {"liver", "spleen"} and min(counts.values()) >= 2 and len(added) == sum(counts.values())
    run = LearnRun(ws.examples, ws.store, method="linear-probe", backbone="test-resnet", epochs=2, device="cpu")
    assert run.val_fraction == 0.0, "one series: no grouped validation split, a fixed schedule"
    res = run.run()
    assert res.version == "v0001" and res.random_weights
    assert run.model.preprocess.intensity == "window", "CT examples are seen through the HU window"
    with pytest.raises(LearnError, match="trained on CT images; this image is MR"):
        Predictor.load(ws.store, modality="MR")
    p = Predictor.load(ws.store, modality="CT", backbone="test-resnet")
    per_object = p.predict_objects(s, ct.data)
    assert set(per_object) == {LIVER, SPLEEN}
    assert per_object[LIVER].slices == sorted(s.slice_voxels(LIVER))
    image_data, image_kw, _ = volume_to_layer_data(ct)
    hm = p.heatmap_volume(ct.data, slices=per_object[SPLEEN].slices, batch_size=8)
    data, kw, kind = hm.layer_data(image_data.shape, scale=image_kw["scale"], affine=image_kw["affine"])
    assert data.shape == image_data.shape and kind == "image"
    assert tuple(kw["scale"]) == tuple(image_kw["scale"]) and kw["affine"] == np.asarray(image_kw["affine"]).tolist()
    assert all(data[z].max() == pytest.approx(1.0) for z in hm.done) and "RANDOM" in kw["name"]
