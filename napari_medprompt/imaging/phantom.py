"""A synthetic contrast-enhanced abdominal CT (portal venous phase) with its ground-truth labels.

Built from analytic shapes in millimetres, so any shape/spacing gives the same anatomy: body
outline with subcutaneous fat and an abdominal wall, visceral fat with bowel loops (some with gas),
liver with enhancing vessels, spleen, kidneys (cortex brighter than medulla), aorta and IVC, a
lumbar spine with cortical rim, discs and posterior elements, paraspinal and psoas muscles, ribs
along the upper wall and lung bases in the top slices, and a CT table. Partial-volume blur and
correlated noise are added. Everything is drawn from ``seed`` (deterministic).

Index order follows DICOM/radiology display: column index runs to the patient's left, row index
to posterior, slice index to superior (the affine says so in RAS).
"""

from __future__ import annotations

import numpy as np

from napari_medprompt.io.volume import Volume

LABELS: dict[int, str] = {
    1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta",
    6: "inferior_vena_cava", 7: "vertebrae", 8: "ribs", 9: "lung_right", 10: "lung_left",
}
#: Mean HU per tissue (portal venous phase); the tests check the phantom against these.
HU = {
    "air": -1000.0, "lung": -850.0, "fat": -100.0, "muscle": 50.0, "bowel": 35.0, "liver": 105.0,
    "liver_vessel": 170.0, "spleen": 115.0, "kidney_cortex": 190.0, "kidney_medulla": 120.0,
    "aorta": 230.0, "ivc": 150.0, "bone_cortical": 750.0, "bone_cancellous": 220.0, "disc": 80.0,
    "csf": 15.0, "rib": 550.0, "table": 120.0,
}


def make_abdominal_phantom(
    shape: tuple[int, int, int] = (48, 192, 192),
    spacing: tuple[float, float, float] = (2.5, 1.5, 1.5),
    seed: int = 0,
    noise_hu: float = 12.0,
) -> tuple[Volume, np.ndarray, dict[int, str]]:
    """(CT Volume in HU as int16, label map uint8 in the same grid, label id -> name)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    dz, dy, dx = spacing
    z = ((np.arange(nz) - (nz - 1) / 2) * dz)[:, None, None]
    y = ((np.arange(ny) - (ny - 1) / 2) * dy)[None, :, None]
    x = ((np.arange(nx) - (nx - 1) / 2) * dx)[None, None, :]
    half_z = (nz - 1) / 2 * dz
    fov = min(ny * dy, nx * dx) / 288.0  # anatomy scales with the in-plane field of view

    def j(v, s=3.0):  # seed-dependent jitter in mm
        return v + rng.uniform(-s, s) * fov

    def ell2(cx, cy, a, b):
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0

    def ell3(cx, cy, cz, a, b, c):
        return ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 + ((z - cz) / c) ** 2 <= 1.0

    def full(mask2d):
        return np.broadcast_to(mask2d, shape)

    s = fov
    img = np.full(shape, HU["air"], np.float32)
    lab = np.zeros(shape, np.uint8)

    body = full(ell2(0, 5 * s, j(130 * s), j(95 * s)))
    wall_in = full(ell2(0, 5 * s, 114 * s, 80 * s))
    cavity = full(ell2(0, 5 * s, 103 * s, 69 * s))
    img[body] = HU["fat"]
    img[wall_in] = HU["muscle"]
    img[cavity] = HU["fat"]  # visceral fat; organs are drawn over it
    img[full((np.abs(y - 111 * s) < 3 * s) & (np.abs(x) < 110 * s))] = HU["table"]

    # Bowel loops (soft tissue, some with gas) in the anterior cavity.
    for _ in range(14):
        cx, cy = rng.uniform(-70, 70) * s, rng.uniform(-55, 15) * s
        cz = rng.uniform(-half_z, half_z * 0.4)
        r = rng.uniform(9, 16) * s
        loop = ell3(cx, cy, cz, r, r * rng.uniform(0.7, 1.0), r * 1.6) & cavity
        img[loop] = HU["bowel"]
        if rng.random() < 0.4:
            img[ell3(cx, cy - 0.3 * r, cz, 0.45 * r, 0.3 * r, 0.8 * r) & loop] = HU["air"]

    # Muscles: paraspinal (erector spinae) and psoas (lower half).
    for side in (-1, 1):
        img[full(ell2(side * 30 * s, 78 * s, 22 * s, 14 * s))] = HU["muscle"]
        img[ell3(side * 30 * s, 42 * s, -half_z, 13 * s, 11 * s, half_z * 1.1)] = HU["muscle"]

    # Liver (patient right = image left), with enhancing portal/hepatic vessels.
    liver = ell3(j(-52 * s), j(-2 * s), j(0.45 * half_z, 5), j(62 * s), j(55 * s), half_z * 1.1) & cavity
    liver &= ~ell3(-5 * s, -40 * s, 0, 30 * s, 30 * s, 3 * half_z)  # left lobe tapers off
    img[liver] = HU["liver"]
    lab[liver] = 1
    for k in range(5):
        ang = rng.uniform(0, 2 * np.pi)
        vx, vy = -52 * s + 28 * s * np.cos(ang), -2 * s + 24 * s * np.sin(ang)
        vessel = full(ell2(vx, vy, 3.5 * s, 3.5 * s)) & liver
        img[vessel] = HU["liver_vessel"]

    spleen = ell3(j(72 * s), j(30 * s), j(0.5 * half_z, 5), j(22 * s), j(32 * s), 0.8 * half_z) & cavity
    img[spleen] = HU["spleen"]
    lab[spleen] = 2

    for side, lid in ((-1, 3), (1, 4)):  # right kidney a little lower
        cz = j((-0.15 if side < 0 else -0.05) * half_z, 4)
        cx, cy = j(side * 55 * s), j(50 * s)
        outer = ell3(cx, cy, cz, 22 * s, 16 * s, 0.55 * half_z)
        inner = ell3(cx + side * 4 * s, cy, cz, 12 * s, 8 * s, 0.4 * half_z)
        img[outer] = HU["kidney_cortex"]
        img[inner] = HU["kidney_medulla"]
        lab[outer] = lid

    aorta = full(ell2(j(14 * s, 1.5), j(25 * s, 1.5), 11 * s, 11 * s))
    ivc = full(ell2(j(-22 * s, 1.5), j(22 * s, 1.5), 11 * s, 8 * s))
    img[aorta] = HU["aorta"]
    img[ivc] = HU["ivc"]
    lab[aorta] = 5
    lab[ivc] = 6

    # Lumbar spine: vertebral bodies with cortical rim, discs every ~32 mm, canal, posterior arch.
    zc = (z - rng.uniform(0, 32)) % 32.0
    disc = np.broadcast_to(zc < 7.0, shape)
    body_v = full(ell2(0, 48 * s, 18 * s, 15 * s))
    core_v = full(ell2(0, 48 * s, 15 * s, 12 * s))
    arch = full(ell2(0, 72 * s, 15 * s, 12 * s) | ((np.abs(x) < 4 * s) & (y > 72 * s) & (y < 92 * s)))
    canal = full(ell2(0, 70 * s, 8 * s, 7 * s))
    bone = (body_v | arch) & ~canal
    img[bone] = HU["bone_cortical"]
    img[core_v & ~disc] = HU["bone_cancellous"]
    img[body_v & disc] = HU["disc"]
    img[canal] = HU["csf"]
    lab[bone & ~(body_v & disc)] = 7

    # Lung bases (posterior costophrenic recesses) in the top slices, behind liver and spleen.
    lungs = []
    for side, lid in ((-1, 9), (1, 10)):
        lung = ell3(side * 60 * s, 38 * s, half_z * 1.1, 38 * s, 34 * s, 0.5 * half_z) & cavity
        lung &= ~body_v & ~arch & ~aorta & ~ivc
        lungs.append((lung, lid))
    for lung, lid in lungs:
        img[lung] = HU["lung"]
        lab[lung] = lid

    # Ribs: run obliquely along the wall, so each slice cuts them into short arcs.
    theta = np.arctan2((y - 5 * s) / 79.0, x / 113.0)
    arc = theta * 95.0 * s  # approximate length along the wall (mm)
    ring = full(ell2(0, 5 * s, 113 * s, 79 * s) & ~ell2(0, 5 * s, 106 * s, 72 * s))
    ring = ring & full(~ell2(0, 70 * s, 45 * s, 40 * s) & (np.abs(x) > 25 * s))  # not spine/sternum
    phase = (z + 0.35 * np.abs(arc) + rng.uniform(0, 26)) % 26.0
    ribs = ring & (phase < 6.5) & (z > -0.3 * half_z)
    img[ribs] = HU["rib"]
    lab[ribs] = 8

    # Partial-volume blur (about one voxel in-plane), then correlated noise.
    sig = (0.45, 0.7 * 1.5 / dy, 0.7 * 1.5 / dx)
    img = ndimage.gaussian_filter(img, sig, mode="nearest")
    noise = rng.standard_normal(shape, dtype=np.float32)
    noise = ndimage.gaussian_filter(noise, (0.0, 0.6, 0.6))
    noise *= noise_hu / max(float(noise.std()), 1e-6)
    img += noise * (img > -950)  # scanner noise inside the patient; air stays clean-ish
    
    ct = np.clip(np.rint(img), -1024, 3071).astype(np.int16)

    affine = np.array([
        [-dx, 0, 0, (nx - 1) / 2 * dx],
        [0, -dy, 0, (ny - 1) / 2 * dy],
        [0, 0, dz, -(nz - 1) / 2 * dz],
        [0, 0, 0, 1.0],
    ])
    vol = Volume(
        data=ct, spacing=spacing, affine=affine, modality="CT", name="abdominal CT phantom",
        source=None, meta={"synthetic": True, "seed": int(seed), "phase": "portal venous",
                           "series_description": "Synthetic abdominal CT phantom"},
    )
    return vol, lab, dict(LABELS)
