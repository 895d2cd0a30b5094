"""Small volumes with a bright marker at the patient's right-anterior-superior, stored in several
orientations (RAS, LPS, LPI, oblique, coronal stack) as NIfTI or NRRD; for the display tests."""

from __future__ import annotations

import numpy as np


def _rot(axis: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    i, j = [k for k in range(3) if k != axis]
    m = np.eye(3)
    m[i, i], m[i, j], m[j, i], m[j, j] = c, -s, s, c
    return m


def affine_of(kind: str) -> np.ndarray:
    """RAS+ affine (NIfTI convention: columns are the x, y, z index directions)."""
    sp = np.diag([0.8, 0.9, 2.0])
    cols = {
        "RAS": np.eye(3),
        "LPS": np.diag([-1.0, -1.0, 1.0]),  # DICOM order stored as is
        "LPI": np.diag([-1.0, -1.0, -1.0]),  # slices stored head to feet
        "oblique": _rot(2, 25.0) @ _rot(0, -12.0) @ np.diag([-1.0, 1.0, 1.0]),
        "coronal": np.array([[1.0, 0, 0], [0, 0, -1.0], [0, 1.0, 0]]),  # x->R, y->S, z->P: a coronal stack
    }[kind]
    aff = np.eye(4)
    aff[:3, :3] = cols @ sp
    aff[:3, 3] = [-31.0, 17.5, 42.0]
    return aff


SHAPE_ZYX = (20, 48, 44)


def marker_volume(kind: str) -> tuple[np.ndarray, np.ndarray, tuple[int, int, int]]:
    """(data (z, y, x) int16, RAS affine, marker voxel (z, y, x)): air everywhere, a 3-voxel bright
    cube 25% of the smallest extent right, anterior and superior of the volume's centre."""
    aff = affine_of(kind)
    shape_xyz = np.array(SHAPE_ZYX[::-1], float)
    centre = aff @ np.r_[(shape_xyz - 1) / 2.0, 1.0]
    extent = np.abs(aff[:3, :3] @ (shape_xyz - 1))
    d = 0.25 * float(extent.min())
    target = centre[:3] + d * np.array([1.0, 1.0, 1.0])  # +R, +A, +S
    ijk = np.linalg.solve(aff, np.r_[target, 1.0])[:3]
    x, y, z = (int(round(v)) for v in ijk)
    data = np.full(SHAPE_ZYX, -1000, np.int16)
    data[max(z - 1, 0):z + 2, y - 1:y + 2, x - 1:x + 2] = 1500
    return data, aff, (z, y, x)


def write_nifti(path, kind: str):
    import nibabel as nib

    data, aff, marker = marker_volume(kind)
    nib.save(nib.Nifti1Image(np.ascontiguousarray(data.transpose(2, 1, 0)), aff), str(path))
    return path, marker


def write_nrrd(path, kind: str):
    """The same volume as NRRD through SimpleITK (LPS physical space, as ITK writes it)."""
    import SimpleITK as sitk

    data, aff, marker = marker_volume(kind)
    lps = np.diag([-1.0, -1.0, 1.0]) @ aff[:3]
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    img = sitk.GetImageFromArray(data)  # (z, y, x) array -> image of size (x, y, z)
    img.SetSpacing([float(s) for s in spacing])
    img.SetOrigin([float(v) for v in lps[:3, 3]])
    img.SetDirection([float(v) for v in (lps[:3, :3] / spacing).ravel()])
    sitk.WriteImage(img, str(path))
    return path, marker
