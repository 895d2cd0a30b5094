"""A simulated clinician on the real labelled images: how many clicks reach a good mask.

    python -m benchmarks interactive            # every organ, 5 clicks, slices and 3D
    python -m benchmarks interactive --quick    # fewer organs (a few minutes on 2 cores)

Protocol (:mod:`napari_medprompt.segment.simulate`, as in RITM / RadioActive / the CVPR 2025
interactive 3D challenge): first click at the deepest point of the target, each next click at the
deepest point of the largest error region (positive in a miss, negative in a leak), up to 5. Slices:
the organ's largest section. 3D: clicks placed in 3D, each slice clicked re-segmented and propagated
with the backend's own propagation and stop rule.

Records, per backend and modality (``ct``, ``mr``, ``xr``), means over the organs / images:
``interactive.dice_at_1.<backend>.<modality>`` (Dice after one click), ``interactive.dice_at_3`` /
``dice_at_5``, ``interactive.noc85.<...>`` and ``interactive.noc90.<...>`` (clicks to reach Dice 0.85 /
0.90, capped at 5; the notes say how many never reached it), and the same with a ``.3d`` suffix.
Per-organ figures are in the notes. Data: ``../shared/data`` (TotalSegmentator CT and MR, Shenzhen
chest X-rays); a missing set is skipped with a message. SAM2 runs only where real weights are in
the cache (never random weights: their masks mean nothing); otherwise a record says it was skipped.
"""

from __future__ import annotations

import glob
import os
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.runner import Record, device_name

DATA = Path(os.environ.get("MEDPROMPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
CT_ORGANS = {"liver": [5], "spleen": [1], "kidney_left": [3], "kidney_right": [2], "lung_right": [12, 13, 14],
             "urinary_bladder": [21], "stomach": [6]}
MR_ORGANS = {"liver": [5], "spleen": [1], "kidney_left": [3], "kidney_right": [2], "stomach": [6], "vertebrae": [19]}
QUICK_CT = ("liver", "spleen", "kidney_left")
QUICK_MR = ("liver", "spleen", "kidney_right")


def _load(img: str, lab: str):
    from napari_medprompt.io.read import read_image

    vol = read_image(DATA / img)[0]
    return vol, np.asarray(read_image(DATA / lab)[0].data)


def _summary(name: str, backend: str, modality: str, traces: dict, clicks: int, dev: str, suffix: str = ""):
    from napari_medprompt.segment.simulate import noc

    recs = []
    key = f"{backend}.{modality}{suffix}"
    per = "; ".join(f"{o}: " + "/".join(f"{d:.3f}" for d in t.dice) for o, t in traces.items())
    for k in (1, 3, 5):
        if k > clicks:
            continue
        val = float(np.mean([t.dice_at(k) for t in traces.values()]))
        recs.append(Record(f"interactive.dice_at_{k}.{key}", "dice", val, "", device=dev,
                           notes=per if k == 1 else ""))
    for target, tag in ((0.85, "noc85"), (0.90, "noc90")):
        res = {o: noc(t.dice, target, clicks) for o, t in traces.items()}
        never = [o for o, (_, ok) in res.items() if not ok]
        recs.append(Record(f"interactive.{tag}.{key}", "clicks", float(np.mean([n for n, _ in res.values()])),
                           "clicks", device=dev,
                           notes=f"cap {clicks}; never reached: {', '.join(never) or 'none'}; "
                                 + ", ".join(f"{o} {n}" for o, (n, _) in res.items())))
    return recs


def _volume_case(seg, backend, modality, vol, labels, organs, clicks, dev, do_3d):
    from napari_medprompt.segment.simulate import simulate_slice, simulate_volume

    seg.bind(vol.data, modality=vol.modality, spacing=vol.spacing)
    s2, s3 = {}, {}
    for name, ids in organs.items():
        ref = np.isin(labels, ids)
        if not ref.any():
            print(f"[interactive] {modality}: {name} absent from the label map, skipped", file=sys.stderr)
            continue
        z = int(np.argmax(ref.sum(axis=(1, 2))))
        s2[name] = simulate_slice(seg, z, ref[z], clicks)
        if do_3d:
            s3[name] = simulate_volume(seg, ref, clicks, spacing=vol.spacing)
        print(f"[interactive] {backend} {modality} {name}: slice {s2[name].dice}"
              + (f", 3D {s3[name].dice}" if do_3d else ""), file=sys.stderr, flush=True)
    recs = _summary("", backend, modality, s2, clicks, dev)
    if s3:
        recs += _summary("", backend, modality, s3, clicks, dev, ".3d")
    return recs


def _xray_case(seg, backend, clicks, dev, quick):
    from PIL import Image
    from scipy import ndimage as ndi

    from napari_medprompt.io.read import read_image
    from napari_medprompt.segment.simulate import simulate_slice

    files = sorted(glob.glob(str(DATA / "shenzhen_cxr_lungmasks" / "images" / "*.png")))[: 4 if quick else None]
    traces = {}
    for f in files:
        vol = read_image(f)[0]
        m = np.asarray(Image.open(f.replace("images", "masks").replace(".png", "_mask.png"))) >= 128
        m = m[..., 0] if m.ndim == 3 else m
        lab, n = ndi.label(m)
        sizes = np.bincount(lab.ravel())[1:]
        seg.bind(vol.data, modality=vol.modality)
        for rank, k in enumerate(np.argsort(sizes)[::-1][:2]):
            traces[f"{Path(f).stem}_lung{rank}"] = simulate_slice(seg, 0, lab == k + 1, clicks)
    return _summary("", backend, "xr", traces, clicks, dev)


def _sam2_weights_present() -> tuple[bool, str]:
    from napari_medprompt.models.sam2_weights import resolve_checkpoint

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        path = resolve_checkpoint("sam2.1-hiera-tiny", None)
    except Exception as err:  # WeightsUnavailable and friends: no download attempted offline
        return False, str(err).splitlines()[0][:200]
    return path is not None, str(path)


def run(args) -> list:
    from napari_medprompt.segment import create_segmenter

    quick = bool(getattr(args, "quick", False))
    clicks = 5
    dev = device_name()
    backends = ["classic"]
    ok, why = _sam2_weights_present()
    records: list[Record] = []
    if ok:
        backends.append("sam2.1-hiera-tiny")
    else:
        records.append(Record("interactive.sam2", "skipped", 0.0, "", device=dev,
                              notes=f"SAM2 skipped: no pretrained weights in the cache ({why})"))
    for backend in backends:
        seg = create_segmenter(backend) if backend == "classic" else create_segmenter(backend, device="auto")
        t0 = time.perf_counter()
        if (DATA / "totalsegmentator" / "example_ct.nii.gz").exists():
            vol, labels = _load("totalsegmentator/example_ct.nii.gz", "totalsegmentator/example_seg_fast_force_split.nii.gz")
            organs = {k: v for k, v in CT_ORGANS.items() if not quick or k in QUICK_CT}
            records += _volume_case(seg, backend, "ct", vol, labels, organs, clicks, dev, True)
        else:
            print("[interactive] TotalSegmentator CT absent: ct skipped", file=sys.stderr)
        if (DATA / "totalsegmentator" / "example_mr_sm.nii.gz").exists():
            vol, labels = _load("totalsegmentator/example_mr_sm.nii.gz", "totalsegmentator/example_seg_mr.nii.gz")
            organs = {k: v for k, v in MR_ORGANS.items() if not quick or k in QUICK_MR}
            records += _volume_case(seg, backend, "mr", vol, labels, organs, clicks, dev, True)
        else:
            print("[interactive] TotalSegmentator MR absent: mr skipped", file=sys.stderr)
        if (DATA / "shenzhen_cxr_lungmasks" / "images").is_dir():
            records += _xray_case(seg, backend, clicks, dev, quick)
        else:
            print("[interactive] Shenzhen chest X-rays absent: xr skipped", file=sys.stderr)
        records.append(Record(f"interactive.runtime.{backend}", "seconds", time.perf_counter() - t0, "s", device=dev,
                              notes="quick" if quick else "full"))
    return records
