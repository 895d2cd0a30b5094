"""Coronal and sagittal segmentation through plane views of the real CT."""

from __future__ import annotations

import numpy as np
import pytest

from napari_medprompt.segment import Prompt, create_segmenter
from napari_medprompt.segment.planes import plane_index, plane_spacing, plane_view
from tests.segment.test_classic import ORGANS, ct_case, deepest_point, dice  # noqa: F401


def test_plane_view_is_a_view_and_indexes_back():
    vol = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    cor = plane_view(vol, "coronal")
    assert cor.shape == (3, 2, 4) and np.shares_memory(cor, vol)
    np.testing.assert_array_equal(cor[1], vol[plane_index("coronal", 1)])
    sag = plane_view(vol, "sagittal")
    np.testing.assert_array_equal(sag[2], vol[plane_index("sagittal", 2)])
    assert plane_spacing((3.0, 0.8, 0.7), "sagittal") == (0.7, 3.0, 0.8)
    with pytest.raises(ValueError, match="unknown plane"):
        plane_view(vol, "oblique")
    with pytest.raises(ValueError, match="3D volume"):
        plane_view(vol[0], "coronal")


# measured with one click: coronal 0.72 (the liver runs into the heart/IVC on the largest coronal
# slice), sagittal 0.91
@pytest.mark.parametrize("plane, minimum", [("coronal", 0.7), ("sagittal", 0.88)])
def test_liver_click_on_a_coronal_or_sagittal_slice(ct_case, plane, minimum):  # noqa: F811
    ct, labels, spacing = ct_case
    ref = plane_view(np.isin(labels, ORGANS["liver"]), plane)
    s = int(np.argmax(ref.sum(axis=(1, 2))))
    seg = create_segmenter("classic")
    seg.bind(plane_view(ct, plane), modality="CT", spacing=plane_spacing(spacing, plane), key=f"ct-{plane}")
    res = seg.predict(s, Prompt(points=[deepest_point(ref[s])], labels=[1]))
    assert res.mask.shape == ref[s].shape
    assert dice(res.mask, ref[s]) >= minimum
    out = np.zeros(labels.shape, dtype=np.uint8)
    out[plane_index(plane, s)] = res.mask
    assert dice(out.astype(bool)[plane_index(plane, s)], ref[s]) == dice(res.mask, ref[s])
