"""Synthetic volumes for the learn workflow: each slice holds one lesion whose texture decides the class.

The lesion task of :mod:`tests.classify.synthetic` laid out as a (Z, 64, 64) volume: slices
``0..n-1`` of object 1 hold a lesion of texture ``kinds[0]``, the next ``n`` slices object 2 with
``kinds[1]``; the lesion wanders from slice to slice (random centre and radii). Mean intensity
inside the lesion is about the same for both textures, and nothing outside the lesion depends on
the class, so a model that tells the classes apart has to look at the lesion.
"""

from __future__ import annotations

import numpy as np

from napari_medprompt.session import AnnotationSession
from tests.classify.synthetic import _texture

CLASSES = ("smooth", "striped")
SIZE = 64


def lesion_slice(rng, kind: int, size: int = SIZE):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    gy, gx = rng.uniform(-0.15, 0.15, 2)
    img = 0.25 + gy * (yy / size - 0.5) + gx * (xx / size - 0.5) + rng.normal(0, 0.03, (size, size))
    r_a, r_b = rng.uniform(0.17, 0.27, 2) * size
    cy, cx = rng.uniform(r_a + 2, size - r_a - 2), rng.uniform(r_b + 2, size - r_b - 2)
    inside = ((yy - cy) / r_a) ** 2 + ((xx - cx) / r_b) ** 2 <= 1.0
    img = np.where(inside, 0.35 + 0.45 * _texture(kind, yy, xx, rng) + rng.normal(0, 0.03, (size, size)), img)
    return np.clip(img, 0.0, 1.0).astype(np.float32), inside


def make_volume(seed: int, n_per_object: int = 8, kinds=(0, 1)):
    """(volume float32 (Z, 64, 64), label map uint16 with objects 1 and 2, per-slice lesion mask)."""
    rng = np.random.default_rng(seed)
    z = n_per_object * len(kinds)
    vol = np.empty((z, SIZE, SIZE), np.float32)
    labels = np.zeros((z, SIZE, SIZE), np.uint16)
    lesion = np.zeros((z, SIZE, SIZE), bool)
    for k, kind in enumerate(kinds):
        for j in range(n_per_object):
            s = k * n_per_object + j
            vol[s], lesion[s] = lesion_slice(rng, kind)
            labels[s][lesion[s]] = k + 1
    return vol, labels, lesion


def annotated_session(seed: int, folder=None, n_per_object: int = 8, classes=CLASSES):
    """(session, volume, lesion) with objects 1 ("smooth" lesion) and 2 ("striped"), every slice
    committed and accepted, each object given its class."""
    vol, labels, lesion = make_volume(seed, n_per_object)
    s = AnnotationSession(vol.shape, (2.0, 0.8, 0.8), image_key=f"content:vol{seed}|{vol.shape}",
                          image_name=f"/data/patient-{seed}/ct{seed}.nii.gz", folder=folder)
    for oid in (1, 2):
        s.new_object(f"lesion {oid}")
        zs = [z for z in range(vol.shape[0]) if (labels[z] == oid).any()]
        s.commit_slices(oid, {z: labels[z] == oid for z in zs}, "prompted")
        s.set_status(oid, zs, "accepted")
        if classes:
            s.set_object_class(oid, classes[oid - 1])
    return s, vol, lesion
