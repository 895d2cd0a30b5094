"""Segmentation speed: SAM2 clicks, embeddings, propagation through a volume; the classic backend.

    python -m benchmarks segment            # full run (several minutes on a 2-core CPU)
    python -m benchmarks segment --quick    # smoke run: fewer slices and repeats

Records (SAM2.1-tiny, random weights: the same FLOPs as the published ones):

Everything is compared like for like: the same network, slice and precision on both sides, measured
in the same run (interleaved, medians), with the mask agreement beside the time.

- ``segment.click_latency``: prompt -> mask array on a 512 x 512 slice with its embedding cached,
  float32 on both sides; value = our median (ms), baseline = ``SAM2ImagePredictor.predict`` (the
  plain predictor) on the same network and embedding. 60 prompts (1, 2, 3 clicks, box + click),
  interleaved in rotating order. Notes: p95, process CPU time (less sensitive to other load on a
  shared machine), the first click on a slice (which computes the decoder's per-slice projections).
  ``segment.click_latency_bf16``: the same with bfloat16 on both sides (our bf16 decoder copy; the
  plain predictor under bf16 autocast), where the CPU has bfloat16.
- ``segment.mask_iou_vs_plain``: mean IoU between our click masks and the plain predictor's over the
  same prompts (float32; the bf16 pair in the notes); target >= 0.95.
- ``segment.embed_first`` / ``segment.embed_cached``: a slice's first visit (encoder) vs a revisit.
- ``segment.propagate_cold`` / ``_cached`` / ``_projection`` (float32) and the same with ``_bf16``:
  seconds per slice through a 512 x 512 x N phantom CT, end to end, against the path other napari
  SAM2 plugins take (slices written as JPEGs, ``init_state(folder)``, ``add_new_mask``,
  ``propagate_in_video`` forward then backward) on the same volume, model and precision. Each
  scenario runs in its own process so its peak memory (in the notes) is its own. The JPEG path and
  "cold" run three times each, interleaved, and their medians are compared (one run with ``--quick``). "cold": nothing
  precomputed. "cached" / "projection": every embedding precomputed on disk, as after
  ``medprompt-embed`` (the Segment dock reads that cache, keyed by the image's content), read during
  the run. Notes: mask IoU against the JPEG path (whose input is 8-bit JPEG, so not 1).
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


def _prompts(liver: np.ndarray, n: int, seed: int = 0):
    """``n`` prompts on the liver slice: 1, 2, 3 clicks in turn (first positive, then random labels),
    every fourth a box around the liver with one click; (row, col) pixel units."""
    from napari_medprompt.segment.base import Prompt

    rng = np.random.default_rng(seed)
    ys, xs = np.nonzero(liver)
    box = (float(ys.min()), float(xs.min()), float(ys.max()), float(xs.max()))
    out = []
    for i in range(n):
        k = 1 + i % 3
        pick = rng.integers(0, len(ys), size=k)
        pts = [[float(ys[j]), float(xs[j])] for j in pick]
        labels = [1] + [int(v) for v in rng.integers(0, 2, size=k - 1)]
        out.append(Prompt(points=pts[:1], labels=[1], box=box) if i % 4 == 3 else Prompt(points=pts, labels=labels))
    return out


def _plain_call(plain, prompt, autocast: bool):
    """``SAM2ImagePredictor.predict`` for a prompt, as a plugin calling SAM2 directly would: -> best mask."""
    import contextlib

    import torch

    xy = lab = box = None
    if len(prompt.points):
        xy, lab = np.asarray(prompt.points, float)[:, ::-1].copy(), np.asarray(prompt.labels)
    if prompt.box is not None:
        r0, c0, r1, c1 = prompt.box
        box = np.array([c0, r0, c1, r1], float)
    multimask = len(prompt.points) == 1 and prompt.box is None
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()
    with ctx:
        masks, scores, _ = plain.predict(point_coords=xy, point_labels=lab, box=box, multimask_output=multimask)
    return masks[int(np.argmax(scores))] > 0


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def bench_click(quick: bool, dev: str) -> list[Record]:
    """Clicks like for like: our path and ``SAM2ImagePredictor.predict`` on the same network, slice and
    precision (float32 with float32; bfloat16 with bfloat16 autocast where the CPU has bfloat16),
    interleaved prompt by prompt in rotating order; mask IoU between the two on every prompt."""
    import torch
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    from napari_medprompt.segment.sam2_backend import Sam2Segmenter, _cpu_has_bf16

    data, liver, z = _phantom(3 if quick else 5)
    seg = Sam2Segmenter(MODEL, checkpoint="random", device="cpu" if dev == "cpu" else "auto",
                        decoder_bf16=False, encoder_bf16=False)
    seg.bind(data, modality="CT")
    recs = []

    t0 = time.perf_counter()
    seg.features(z)
    first = time.perf_counter() - t0
    revisit = time_repeats(lambda: seg.features(z), repeats=5 if quick else 20)
    recs.append(Record("segment.embed_cached", "s/slice", median(revisit), "s", baseline=first, device=dev,
                       notes="revisit: embedding from the in-memory cache; baseline = the first visit (float32 "
                             "image encoder on a 512x512 slice, 1024x1024 model input)"))

    rgb = np.repeat(seg.slice_unit(z)[..., None], 3, axis=2)
    plain = SAM2ImagePredictor(seg.net)
    plain.set_image(rgb)
    pairs = {"fp32": (seg, plain, False)}
    bf16 = _cpu_has_bf16() and dev.startswith("cpu")
    if bf16:  # our bfloat16 path (bf16 encoder, bf16 decoder copy) vs SAM2 under bf16 autocast
        seg16 = Sam2Segmenter(MODEL, checkpoint="random", device="cpu", decoder_bf16=True, encoder_bf16=True)
        seg16.bind(data, modality="CT")
        t0 = time.perf_counter()
        seg16.features(z)
        first16 = time.perf_counter() - t0
        plain16 = SAM2ImagePredictor(seg16.net)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            plain16.set_image(rgb)
        pairs["bf16"] = (seg16, plain16, True)
        recs.append(Record("segment.embed_first_bf16", "s/slice", first16, "s", baseline=first, device=dev,
                           notes="image encoder on a 512x512 slice under bfloat16 autocast (its first call includes "
                                 "oneDNN's bf16 kernel set-up); baseline = float32"))
    recs.append(Record("segment.embed_first", "s/slice", first, "s", device=dev,
                       notes="float32 image encoder on a 512x512 slice (1024x1024 model input), first visit"))

    n = 12 if quick else 60
    prompts = _prompts(liver[z], n)
    warm = _prompts(liver[z], 8, seed=1)
    paths = {}
    for name, (s, p, ac) in pairs.items():
        paths[f"ours_{name}"] = lambda pr, s=s: s.predict(z, pr).mask
        paths[f"plain_{name}"] = lambda pr, p=p, ac=ac: _plain_call(p, pr, ac)
    # first click on the slice: our path computes the decoder's per-slice projections then
    first_click = {}
    for name, (s, _, _) in pairs.items():
        t0 = time.perf_counter()
        s.predict(z, warm[0])
        first_click[name] = time.perf_counter() - t0
    for pr in warm:
        for f in paths.values():
            f(pr)
    wall = {k: [] for k in paths}
    cpu = {k: [] for k in paths}
    ious = {k: [] for k in pairs}
    keys = list(paths)
    for i, pr in enumerate(prompts):  # interleaved, rotating order: load changes hit every path alike
        masks = {}
        for k in keys[i % len(keys):] + keys[: i % len(keys)]:
            c0, t0 = time.process_time(), time.perf_counter()
            masks[k] = paths[k](pr)
            wall[k].append(time.perf_counter() - t0)
            cpu[k].append(time.process_time() - c0)
        for name in pairs:
            ious[name].append(_iou(masks[f"ours_{name}"], masks[f"plain_{name}"]))
    ms = {k: 1000 * median(v) for k, v in wall.items()}
    cms = {k: 1000 * median(v) for k, v in cpu.items()}
    p95 = {k: 1000 * percentile(v, 95) for k, v in wall.items()}

    def desc(name):
        return (f"{name}: ours {ms['ours_' + name]:.1f} ms (p95 {p95['ours_' + name]:.1f}, CPU time "
                f"{cms['ours_' + name]:.1f}) vs plain {ms['plain_' + name]:.1f} ms (p95 {p95['plain_' + name]:.1f}, "
                f"CPU time {cms['plain_' + name]:.1f}), ratio {ms['ours_' + name] / ms['plain_' + name]:.2f} "
                f"(CPU time {cms['ours_' + name] / cms['plain_' + name]:.2f}), mask IoU mean "
                f"{np.mean(ious[name]):.4f} min {np.min(ious[name]):.4f}")

    what = (f"{n} prompts (1/2/3 clicks, box + click) on a 512x512 slice with its embedding cached, "
            f"interleaved with SAM2ImagePredictor.predict on the same network and embedding; ")
    recs.append(Record(
        "segment.click_latency", "median", ms["ours_fp32"], "ms", baseline=ms["plain_fp32"], device=dev,
        notes=what + "float32 both sides; " + desc("fp32")
        + f"; first click on a slice {1000 * first_click['fp32']:.0f} ms (computes the slice's decoder projections)"
        + ("; bfloat16 pair in segment.click_latency_bf16" if bf16 else "; CPU without bfloat16: no bf16 pair"),
    ))
    if bf16:
        recs.append(Record(
            "segment.click_latency_bf16", "median", ms["ours_bf16"], "ms", baseline=ms["plain_bf16"], device=dev,
            notes=what + "bfloat16 both sides (our bf16 decoder copy; plain under bf16 autocast); " + desc("bf16")
            + f"; first click on a slice {1000 * first_click['bf16']:.0f} ms",
        ))
    allious = np.array(ious["fp32"])
    recs.append(Record(
        "segment.mask_iou_vs_plain", "mean IoU", float(allious.mean()), "IoU", device=dev,
        notes=(f"our click masks vs SAM2ImagePredictor's, float32 both sides, {n} prompts: min {allious.min():.4f}"
               + (f"; bfloat16 pair mean {np.mean(ious['bf16']):.4f} min {np.min(ious['bf16']):.4f}" if bf16 else "")
               + "; random weights (small logits): a strict test, a change in what is computed flips many pixels; "
                 "target >= 0.95"),
    ))
    return recs


# ----------------------------------------------------------------------------- propagation (children)


def _child(args) -> dict:
    """One propagation scenario in this process; returns timings and this process's peak memory.

    Scenario names: ``jpeg``, ``cold``, ``prefetch``, ``cached``, ``projection``, each with a
    ``_bf16`` variant (bfloat16 autocast for SAM2's video predictor; our encoder and memory-mode
    tracking in bfloat16) or without (float32 everywhere). Masks go to ``<cache>/<scenario>.npz``.
    """
    _threads()
    import contextlib

    import torch

    from napari_medprompt.segment.sam2_backend import Sam2Segmenter

    saved = np.load(Path(args.cache) / "phantom.npz")
    data, liver, z = saved["data"], saved["liver"], int(saved["z"])
    seed = {1: {z: liver[z]}}
    n = data.shape[0]
    name = args.child
    bf16 = name.endswith("_bf16")
    base = name[: -len("_bf16")] if bf16 else name
    out: dict = {"scenario": name, "slices": n}
    masks: dict[int, np.ndarray] = {}
    if base == "jpeg":
        from PIL import Image
        from sam2.build_sam import build_sam2_video_predictor

        from napari_medprompt.imaging.normalize import default_model_window, window_to_unit
        from napari_medprompt.models.sam2_weights import RANDOM_SEED, model_spec

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(RANDOM_SEED)
            pred = build_sam2_video_predictor(model_spec(MODEL).config, None, device="cpu")
        win = default_model_window(data, "CT")
        ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as folder, torch.inference_mode(), ctx:
            for i, sl in enumerate(data):
                rgb = np.repeat((window_to_unit(sl, win) * 255).round().astype(np.uint8)[..., None], 3, 2)
                Image.fromarray(rgb).save(Path(folder) / f"{i:05d}.jpg", quality=95)
            state = pred.init_state(folder)
            pred.add_new_mask(state, z, 1, liver[z])
            done = 0
            for reverse in (False, True):
                for f, _ids, logits in pred.propagate_in_video(state, reverse=reverse):
                    masks[int(f)] = (logits[0, 0] > 0).cpu().numpy()
                    done += 1
        out["seconds"] = time.perf_counter() - t0
        out["frames"] = done
    else:
        mode = "projection" if base == "projection" else "memory"
        seg = Sam2Segmenter(
            MODEL, checkpoint="random", device="cpu",
            cache_dir=None if base == "cold" else Path(args.cache) / "embeddings",
            encoder_bf16=bf16, memory_bf16=bf16, decoder_bf16=bf16,
        )
        seg.bind(data, modality="CT", key=f"bench-phantom-{'bf16' if bf16 else 'fp32'}")
        if base == "prefetch":
            t0 = time.perf_counter()
            list(seg.prefetch(range(n)))
            out["seconds"] = time.perf_counter() - t0
        else:
            # "cached" / "projection": every embedding on disk (as after medprompt-embed), read during the run
            t0 = time.perf_counter()
            res = list(seg.propagate(seed, _permissive(mode, n)))
            out["seconds"] = time.perf_counter() - t0
            out["frames"] = len(res)
            out["encoder_calls"] = seg.encoder_calls
            masks = {int(r.slice_index): r.mask for r in res}
    if masks:
        np.savez(Path(args.cache) / f"{name}.npz", **{str(k): v for k, v in masks.items()})
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


def _mask_iou(cache: str, a: str, b: str) -> float:
    """Mean IoU over the slices both scenarios segmented (seed slice excluded)."""
    ma, mb = np.load(Path(cache) / f"{a}.npz"), np.load(Path(cache) / f"{b}.npz")
    common = sorted(set(ma.files) & set(mb.files))
    return float(np.mean([_iou(ma[k], mb[k]) for k in common])) if common else float("nan")


def bench_propagation(quick: bool, dev: str) -> list[Record]:
    """Propagation through a phantom CT against SAM2's video predictor fed a JPEG folder (the path other
    napari SAM2 plugins take), at the same precision: float32 with float32, and bfloat16 (our encoder
    and memory-mode tracking under bf16 autocast) with the video predictor under bf16 autocast where
    the CPU has bfloat16."""
    from napari_medprompt.segment.sam2_backend import _cpu_has_bf16

    slices = 4 if quick else 6
    precisions = ["fp32"] + (["bf16"] if _cpu_has_bf16() and dev.startswith("cpu") else [])
    recs = []
    with tempfile.TemporaryDirectory() as cache:
        data, liver, z = _phantom(slices)
        np.savez(Path(cache) / "phantom.npz", data=data, liver=liver, z=z)
        for prec in precisions:
            try:
                recs += _propagation_pair(prec, cache, slices, dev, repeats=1 if quick else 3)
            except Exception as err:  # one precision failing must not hide the other's figures
                print(f"[segment] propagation {prec} failed: {err}", file=sys.stderr, flush=True)
    return recs


def _propagation_pair(prec: str, cache: str, slices: int, dev: str, repeats: int = 3) -> list[Record]:
    """The scenarios at one precision (``fp32`` or ``bf16``), each against the JPEG path at that precision.

    The JPEG path and the cold path (the pair the cold ratio compares) run ``repeats`` times each,
    interleaved (JPEG, cold, JPEG, cold, ...), and the medians are compared, so a burst of other load on
    a shared machine moves one sample, not the ratio; the other scenarios run once (their ratios are far
    from their targets)."""
    recs = []
    sfx = "" if prec == "fp32" else "_bf16"
    label = "float32 both sides" if prec == "fp32" else "bfloat16 both sides (autocast)"
    tag = "" if prec == "fp32" else "_bf16"
    bases, colds = [], []
    for _ in range(max(1, repeats)):
        bases.append(_run_child("jpeg" + sfx, cache))
        colds.append(_run_child("cold" + sfx, cache))
    b = median([r["seconds"] for r in bases]) / slices
    c = median([r["seconds"] for r in colds]) / slices
    base, cold = bases[-1], colds[-1]
    runs = lambda rs: ", ".join(f"{r['seconds'] / slices:.2f}" for r in rs)  # noqa: E731
    note0 = (f"{label}; {slices} slices {SIZE}x{SIZE}; JPEG-folder video predictor median {b:.2f} s/slice "
             f"of {len(bases)} runs ({runs(bases)}), peak {base['peak_rss_mb']:.0f} MiB "
             f"(load {max(r['load'] for r in bases):.1f})")
    recs.append(Record(
        f"segment.propagate_cold{tag}", "s/slice", c, "s", baseline=b, device=dev,
        notes=(f"memory mode from cold (encoder runs during propagation), median of {len(colds)} runs "
               f"({runs(colds)}) interleaved with the JPEG path's, peak {cold['peak_rss_mb']:.0f} MiB, "
               f"load {max(r['load'] for r in colds):.1f}, mask IoU vs the JPEG path "
               f"{_mask_iou(cache, 'cold' + sfx, 'jpeg' + sfx):.3f} (its input is 8-bit JPEG); {note0}")))
    pre = _run_child("prefetch" + sfx, cache)
    recs.append(Record(f"segment.prefetch{tag}", "s/slice", pre["seconds"] / slices, "s", device=dev,
                       notes=f"{label}: encoder + float16 disk cache write (what medprompt-embed does)"))
    for name, what in (
        ("cached", "memory mode, every embedding precomputed on disk (medprompt-embed) and read during the run"),
        ("projection", "projection mode, every embedding precomputed on disk (medprompt-embed) and read during the run"),
    ):
        r = _run_child(name + sfx, cache)
        assert r["encoder_calls"] == 0, r
        recs.append(Record(
            f"segment.propagate_{name}{tag}", "s/slice", r["seconds"] / slices, "s", baseline=b, device=dev,
            notes=(f"{what} (one run), peak {r['peak_rss_mb']:.0f} MiB, load {r['load']:.1f}, mask IoU vs the "
                   f"JPEG path {_mask_iou(cache, name + sfx, 'jpeg' + sfx):.3f}; {note0}")))
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
