"""The per-viewer controller shared by the Segment and Review widgets."""

from __future__ import annotations

import numpy as np

from napari_medprompt._qt.controller import controller_for


class _FakeSession:
    def __init__(self, shape):
        self.labels = np.zeros(shape, dtype=np.uint16)


def test_one_controller_per_viewer_and_slice_navigation(make_napari_viewer):
    v1 = make_napari_viewer()
    v2 = make_napari_viewer()
    c1 = controller_for(v1)
    assert controller_for(v1) is c1
    assert controller_for(v2) is not c1

    img = v1.add_image(np.zeros((10, 8, 8), np.int16), scale=(2.5, 1.0, 1.0))
    labels = v1.add_labels(np.zeros((10, 8, 8), np.uint16), scale=(2.5, 1.0, 1.0))
    session = _FakeSession((10, 8, 8))
    seen = []
    c1.session_changed.connect(seen.append)
    c1.bind_session(session, img, labels)
    assert seen == [session]

    c1.jump_to_slice(7)
    assert c1.current_slice() == 7
    c1.jump_to_slice(99)  # clamped to the last slice
    assert c1.current_slice() == 9

    session.labels[3, 2:4, 2:4] = 5
    c1.refresh_labels([3])
    assert labels.data[3, 2:4, 2:4].tolist() == [[5, 5], [5, 5]]
    session.labels[:] = 0
    c1.refresh_labels()
    assert not labels.data.any()
