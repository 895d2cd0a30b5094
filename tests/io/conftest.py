"""Each I/O test starts with no remembered opened images (napari_medprompt.io.opened_images)."""

from __future__ import annotations

import pytest

from napari_medprompt.io import opened_images


@pytest.fixture(autouse=True)
def _forget_opened_images():
    opened_images.forget_all()
    yield
    opened_images.forget_all()
