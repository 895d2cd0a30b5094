"""Segmentation speed: SAM2 clicks, embeddings, propagation through a volume; the classic backend.

    python -m benchmarks segment            # full run (several minutes on a 2-core CPU)
    python -m benchmarks segment --quick    # smoke run: fewer slices and repeats

Records (SAM2.1-tiny, random weights: the same FLOPs as the published ones):

- ``segment.click_latency``: prompt -> mask array on a 512 x 512 slice with its embedding cached;
  value = our median (ms), baseline = ``SAM2ImagePredictor.predict`` on the same network and
  embedding in the same run. Notes: p95, and the float32 variant of our path.
- ``segment.embed_first`` / ``segment.embed_cached``: a slice's first visit (encoder) vs a revisit.
- ``segment.propagate_cold`` / ``_cached`` / ``_cached_fp32`` / ``_cached_fast`` / ``_projection``: seconds per slice
  through a 512 x 512 x N phantom CT, end to end, against the path other napari SAM2 plugins take
  (slices written as JPEGs, ``init_state(folder)``, ``add_new_mask``, ``propagate_in_video`` forward
  then backward) on the same volume and model. Each scenario runs in its own process so its peak
  memory (in the notes) is its own. "cached" = embeddings precomputed, as after background prefetch
  (loaded from the disk cache before the clock starts).
- ``segment.classic_click``: the classic backend's click-to-mask time on the real CT slice (skipped
  when ../shared/data is absent), with the Dice against the reference label in the notes.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.runner import Record, device_name, median, peak_rss_mb, percentile, time_repeats

MODEL = "sam2.1-hiera-tiny"
SIZE = 512


def _threads() -> None:
    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))


def _phantom(n_slices: int, size: int = SIZE):
    from napari_medprompt.imaging.phantom import make_abdominal_phantom

    vol, lab, names = make_abdominal_phantom(shape=(n_slices, size, size), spacing=(2.5, 0.7, 0.7))
    liver = lab == next(k for k, v in names.items() if v == "liver")
    z = int(np.argmax(liver.sum(axis=(1, 2))))  # the seed / click slice: the liver's largest section
    return vol.data, liver, z


def _permissive(mode: str, n: int):
    """Settings that never stop early, so every scenario covers the whole volume."""
    from napari_medprompt.segment.base import PropagationSettings

    return PropagationSettings(mode=mode, min_object_score=0.0, min_area_px=1, max_area_ratio=1e9, patience=n + 1,
                               min_thickness_fraction=0.0)


# ----------------------------------------------------------------------------- clicks and embeddings


def bench_click(quick: bool, dev: str) -> list[Record]:
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from napari_medprompt.segment.base import Prompt
    from napari_medprompt.segment.sam2_backend import Sam2Segmenter

    data, liver, z = _phantom(3 if quick else 5)
    seg = Sam2Segmenter(MODEL, checkpoint="random", device="cpu" if dev == "cpu" else "auto")
    seg.bind(data, modality="CT")
    recs = []

    t0 = time.perf_counter()
    seg.features(z)
    first = time.perf_counter() - t0
    revisit = time_repeats(lambda: seg.features(z), repeats=5 if quick else 20)
    enc_bf16 = seg.encoder_bf16
    seg.encoder_bf16 = False
    fp32 = time_repeats(lambda: seg._encode(z), repeats=1 if quick else 3, warmup=0)
    seg.encoder_bf16 = enc_bf16
    recs.append(Record("segment.embed_first", "s/slice", first, "s", baseline=median(fp32), device=dev,
                       notes=f"image encoder on a 512x512 slice (1024x1024 model input), bf16 autocast={enc_bf16}; "
                             f"baseline = the float32 encoder"))
    recs.append(Record("segment.embed_cached", "s/slice", median(revisit), "s", baseline=first, device=dev,
                       notes="revisit: embedding from the in-memory cache"))

    ys, xs = np.nonzero(liver[z])
    point = [float(ys.mean()), float(xs.mean())]
    prompt = Prompt(points=[point], labels=[1])
    plain = SAM2ImagePredictor(seg.net)
    plain.set_image(np.repeat(seg.slice_unit(z)[..., None], 3, axis=2))
    xy, lab = np.array([point[::-1]]), np.array([1])
    n = 10 if quick else 60

    variants = {
        "plain": lambda: plain.predict(point_coords=xy, point_labels=lab),
        "ours": lambda: seg.predict(z, prompt),
    }
    bf16 = seg.decoder_bf16
    from napari_medprompt.segment.sam2_decoder import channels_last
    from napari_medprompt.segment.validate import check_prompt

    f32 = {k: channels_last(v) for k, v in seg._encode(z).items()}  # float32 features for the variant
    checked = check_prompt(prompt, seg.slice_shape)

    def ours_fp32():  # our path with the float32 decoder (what bfloat16 saves)
        seg.decoder_bf16 = False
        try:
            seg.decode(f32, checked)
        finally:
            seg.decoder_bf16 = bf16

    variants["ours_fp32"] = ours_fp32
    times = {k: [] for k in variants}
    for f in variants.values():
        f()
        f()
    for _ in range(n):  # interleaved, so load changes on a shared machine hit every variant alike
        for k, f in variants.items():
            t0 = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t0)
    ms = {k: 1000 * median(v) for k, v in times.items()}
    p95 = {k: 1000 * percentile(v, 95) for k, v in times.items()}
    recs.append(Record(
        "segment.click_latency", "median", ms["ours"], "ms", baseline=ms["plain"], device=dev,
        notes=(f"p95 {p95['ours']:.1f} ms (plain p95 {p95['plain']:.1f}); our path in float32 "
               f"{ms['ours_fp32']:.1f} ms; decoder bf16={bf16}; {n} clicks, 512x512"),
    ))
    return recs


# ----------------------------------------------------------------------------- propagation (children)


def _child(args) -> dict:
    """One propagation scenario in this process; returns timings and this process's peak memory."""
    _threads()
    import torch

    from napari_medprompt.segment.sam2_backend import Sam2Segmenter

    saved = np.load(Path(args.cache) / "phantom.npz")
    data, liver, z = saved["data"], saved["liver"], int(saved["z"])
    seed = {1: {z: liver[z]}}
    n = data.shape[0]
    out: dict = {"scenario": args.child, "slices": n}
    if args.child == "jpeg":
        from PIL import Image
        from sam2.build_sam import build_sam2_video_predictor

        from napari_medprompt.imaging.normalize import default_model_window, window_to_unit
        from napari_medprompt.models.sam2_weights import RANDOM_SEED, model_spec

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            pred = build_sam2_video_predictor(model_spec(MODEL).config, None, device="cpu")
        win = default_model_window(data, "CT")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder:
            for i, sl in enumerate(data):
                rgb = np.repeat((window_to_unit(sl, win) * 255).round().astype(np.uint8)[..., None], 3, 2)
                Image.fromarray(rgb).save(Path(folder) / f"{i:05d}.jpg", quality=95)
            state = pred.init_state(folder)
            pred.add_new_mask(state, z, 1, liver[z])
            done = sum(1 for _ in pred.propagate_in_video(state))
            done += sum(1 for _ in pred.propagate_in_video(state, reverse=True))
        out["seconds"] = time.perf_counter() - t0
        out["frames"] = done
    else:
        mode = "projection" if args.child == "projection" else "memory"
        seg = Sam2Segmenter(
            MODEL, checkpoint="random", device="cpu",
            cache_dir=None if args.child == "cold" else Path(args.cache) / "embeddings",
            memory_frames=2 if args.child == "cached_fast" else None,
            memory_bf16=False if args.child == "cached_fp32" else None,
        )
        seg.bind(data, modality="CT", key="bench-phantom")
        if args.child == "prefetch":
            t0 = time.perf_counter()
            list(seg.prefetch(range(n)))
            out["seconds"] = time.perf_counter() - t0
        else:
            if args.child != "cold":
                list(seg.prefetch(range(n)))  # from the disk cache: embeddings precomputed
                out["encoder_calls_before"] = seg.encoder_calls
            t0 = time.perf_counter()
            res = list(seg.propagate(seed, _permissive(mode, n)))
            out["seconds"] = time.perf_counter() - t0
            out["frames"] = len(res)
            out["encoder_calls"] = seg.encoder_calls
    out["peak_rss_mb"] = _own_peak_rss_mb()
    return out


def _own_peak_rss_mb() -> float:
    """This process's own peak RSS (VmHWM; ru_maxrss would include the parent's size at fork)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return peak_rss_mb()


def _run_child(name: str, cache: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_segment", "--child", name, "--cache", cache]
    repo = Path(__file__).resolve().parents[1]
    load0 = os.getloadavg()[0]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=repo)
    if p.returncode != 0:
        raise RuntimeError(f"scenario {name} failed:\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout.strip().splitlines()[-1])
    out["load"] = max(load0, os.getloadavg()[0])
    print(f"[segment] {name}: {json.dumps(out)}", file=sys.stderr, flush=True)  # progress on long runs
    return out


def bench_propagation(quick: bool, dev: str) -> list[Record]:
    slices = 6 if quick else 24
    recs = []
    with tempfile.TemporaryDirectory() as cache:
        data, liver, z = _phantom(slices)
        np.savez(Path(cache) / "phantom.npz", data=data, liver=liver, z=z)
        base = _run_child("jpeg", cache)
        b = base["seconds"] / slices
        note0 = (f"{slices} slices {SIZE}x{SIZE}; JPEG-folder path {b:.2f} s/slice, peak {base['peak_rss_mb']:.0f} MiB"
                 f" (load {base['load']:.1f})")
        cold = _run_child("cold", cache)
        recs.append(Record("segment.propagate_cold", "s/slice", cold["seconds"] / slices, "s", baseline=b,
                           device=dev, notes=f"memory mode from cold, peak {cold['peak_rss_mb']:.0f} MiB, load {cold['load']:.1f}; {note0}"))
        pre = _run_child("prefetch", cache)
        recs.append(Record("segment.prefetch", "s/slice", pre["seconds"] / slices, "s", device=dev,
                           notes="background prefetch: encoder + float16 disk cache write"))
        for name, what in (
            ("cached", "memory mode (bf16 autocast), embeddings precomputed"),
            ("cached_fp32", "memory mode in float32, embeddings precomputed"),
            ("cached_fast", "memory mode (bf16), embeddings precomputed, memory_frames=2 (fast setting)"),
            ("projection", "projection mode, embeddings precomputed"),
        ):
            r = _run_child(name, cache)
            assert r["encoder_calls"] == r["encoder_calls_before"] == 0, r
            rec = "propagate_projection" if name == "projection" else f"propagate_{name}"
            recs.append(Record(f"segment.{rec}", "s/slice", r["seconds"] / slices, "s", baseline=b, device=dev,
                               notes=f"{what}, peak {r['peak_rss_mb']:.0f} MiB, load {r['load']:.1f}; {note0}"))
    return recs


# ----------------------------------------------------------------------------- classic backend


def bench_classic(quick: bool, dev: str) -> list[Record]:
    shared = Path(os.environ.get("MEDPROMPT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
    ct, seg_path = shared / "totalsegmentator/example_ct.nii.gz", shared / "totalsegmentator/example_seg_fast_force_split.nii.gz"
    if not (ct.exists() and seg_path.exists()):
        print("[segment] real CT not available: classic benchmark skipped", file=sys.stderr)
        return []
    import nibabel as nib
    from scipy import ndimage as ndi

    from napari_medprompt.segment import create_segmenter
    from napari_medprompt.segment.base import Prompt

    img = np.asarray(nib.load(ct).dataobj).transpose(2, 1, 0)  # (x, y, z) -> (z, y, x)
    lab = np.asarray(nib.load(seg_path).dataobj).transpose(2, 1, 0)
    liver = lab == 5
    z = int(np.argmax(liver.sum(axis=(1, 2))))
    dist = ndi.distance_transform_edt(liver[z])
    point = np.unravel_index(int(np.argmax(dist)), dist.shape)
    seg = create_segmenter("classic")
    seg.bind(img, modality="CT")
    prompt = Prompt(points=[list(point)], labels=[1])
    res = seg.predict(z, prompt)
    dice = 2 * np.sum(res.mask & liver[z]) / (res.mask.sum() + liver[z].sum())
    t = time_repeats(lambda: seg.predict(z, prompt), repeats=5 if quick else 20)
    return [Record("segment.classic_click", "median", 1000 * median(t), "ms", device=dev,
                   notes=f"liver click on example_ct slice {z} ({img.shape[2]}x{img.shape[1]}), Dice {dice:.3f}, "
                         f"p95 {1000 * percentile(t, 95):.1f} ms")]


def run(args) -> list[Record]:
    _threads()
    dev = device_name()
    load = os.getloadavg()[0]
    recs = bench_click(args.quick, dev) + bench_propagation(args.quick, dev) + bench_classic(args.quick, dev)
    load = max(load, os.getloadavg()[0])
    for r in recs:
        r.notes += f"; load avg {load:.1f}"
    return recs


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--child", required=True)
    p.add_argument("--cache", required=True)
    print(json.dumps(_child(p.parse_args())))
