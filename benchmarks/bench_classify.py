"""Few-shot classification: time per training epoch of every registered method, cached-feature speed-up.

Full run: CLIP ViT-B-16 at 224 px with random weights (the same FLOPs as pretrained), 4 classes x 16
shots (64 images), batch 16, one epoch per method through ``train_iter`` (the loop users run).
``--quick``: the tiny test ViT at 64 px, 4 classes x 4 shots.

Records:
- ``classify.features.extract``: encoding the 64 images once (what cached-feature methods pay first);
- ``classify.epoch.<method>``: one training epoch (cached-feature methods: after extraction; the
  training-free ones: building the cache / text classifier and scoring the training set);
- ``classify.epoch_cached.mask-guided-clip``: one epoch of the default mask-guided CLIP on cached
  features (the mask acts before the frozen encoder), baseline = the encoder run every batch;
- ``classify.linear_probe_cached``: one linear-probe epoch on cached features, baseline = the same head
  trained for one epoch with the encoder run on every batch; ``classify.linear_probe_cached.50ep``:
  a whole 50-epoch training on cached features (target < 1 s);
- ``classify.explain``: one explanation (probabilities + heat map on the image's own pixel grid) of a
  512 x 512 CT slice in HU through a soft-tissue window, linear probe (ViT: attention rollout),
  baseline = ``predict`` of the same slice (forward only); median of 3 after a warm-up (target < 3 s);
- ``classify.peak_rss``: the process's peak resident memory.
Targets (ViT-B-16 on the 2-core CPU): linear probe on cached features < 1 s after extraction;
mask-guided CLIP on cached features < 2 s per epoch;
methods that backpropagate through the encoder < 60 s per epoch.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time

import numpy as np

from benchmarks.runner import Record, device_name, median, peak_rss_mb


def _synthetic(n_classes: int, shots: int, size: int):
    """Grey images with a texture-coded blob per class, plus centred-ellipse masks."""
    from napari_medprompt.train.data import FewShotData

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    images, masks, labels = [], [], []
    for c in range(n_classes):
        for _ in range(shots):
            img = rng.normal(0.3, 0.05, (size, size))
            cy, cx, r = rng.uniform(0.3, 0.7) * size, rng.uniform(0.3, 0.7) * size, 0.15 * size
            inside = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            img[inside] = 0.5 + 0.3 * np.sin(2 * np.pi * xx[inside] / (4 + 2 * c))
            images.append(np.clip(img, 0, 1).astype(np.float32))
            masks.append(((yy - size / 2) / (0.4 * size)) ** 2 + ((xx - size / 2) / (0.35 * size)) ** 2 <= 1)
            labels.append(c)
    return FewShotData(images, np.array(labels), [f"class {c}" for c in range(n_classes)], masks)


def _epoch_time(model, data, batch_size: int, lr: float = 1e-3) -> tuple[float, float]:
    """(seconds for one training epoch, seconds of feature extraction before it) through train_iter."""
    from napari_medprompt.train.loop import TrainConfig, train_iter

    cfg = TrainConfig(method=model.name, epochs=1, batch_size=batch_size, lr=lr, val_fraction=0.0, patience=0, device="cpu")
    t_start = t_feat_end = t_epoch = None
    for ev in train_iter(cfg, data, model):
        now = time.perf_counter()
        if ev.kind == "start":
            t_start = t_feat_end = now
        elif ev.kind == "features":
            t_feat_end = now
        elif ev.kind == "epoch" and t_epoch is None:
            t_epoch = now
    return t_epoch - t_feat_end, t_feat_end - t_start


def mask_guided_cached_records(backbone, data, batch: int, dev: str, tag: str) -> list:
    """``classify.epoch_cached.mask-guided-clip``: one epoch of the default mask-guided CLIP (segmented
    image -> frozen encoder -> fusion head) on cached features, after the once-per-image extraction;
    baseline = the same model with the encoder run on every batch (target < 2 s/epoch on ViT-B-16)."""
    import torch

    from napari_medprompt.classify.base import method_class

    def epoch(cached: bool):
        torch.manual_seed(0)
        m = method_class("mask-guided-clip")(backbone, data.classes)
        if not cached:
            m.cached_features = False  # same model; the loop now runs the encoder on every batch
        return _epoch_time(m, data, batch)

    runs = [epoch(True) for _ in range(3)]
    through = [epoch(False)[0]]
    cached_s, extract_s = median([r[0] for r in runs]), median([r[1] for r in runs])
    print(f"[classify] mask-guided-clip cached: {cached_s:.3f} s/epoch after {extract_s:.1f} s extraction; "
          f"through the encoder {through[0]:.3f} s/epoch", file=sys.stderr, flush=True)
    return [Record("classify.epoch_cached.mask-guided-clip", "epoch", cached_s, "s", baseline=median(through), device=dev,
                   notes=f"{tag}; after {extract_s:.2f} s of feature extraction (once per image); "
                         "baseline = same model, encoder run every batch; target < 2 s")]


def explain_records(backbone, dev: str, tag: str, repeats: int = 3) -> list:
    """``classify.explain`` (see the module docstring)."""
    import torch

    from napari_medprompt.classify.base import method_class
    from napari_medprompt.train.explain import explain
    from napari_medprompt.train.predict import predict

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:512, 0:512]
    ct = np.where((yy - 256) ** 2 / 200**2 + (xx - 256) ** 2 / 230**2 <= 1, 40, -1000).astype(np.int16)  # body in air
    ct[(yy - 300) ** 2 + (xx - 180) ** 2 <= 30**2] = 120  # an enhancing lesion
    ct = (ct + rng.normal(0, 10, ct.shape)).astype(np.int16)
    torch.manual_seed(0)
    model = method_class("linear-probe")(backbone, ["a", "b"])
    explain(model, ct, window="soft_tissue")  # warm-up
    predict(model, ct, window="soft_tissue")
    times, base = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        e = explain(model, ct, window="soft_tissue")
        times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        predict(model, ct, window="soft_tissue")
        base.append(time.perf_counter() - t0)
    assert e.heatmap.shape == ct.shape
    print(f"[classify] explain: {median(times):.3f} s per 512x512 slice ({e.technique}); predict {median(base):.3f} s",
          file=sys.stderr, flush=True)
    return [Record("classify.explain", "image", median(times), "s", baseline=median(base), device=dev,
                   notes=f"{tag}; 512x512 CT slice, soft-tissue window, linear probe, {e.technique}, heat map on "
                         f"the slice's pixel grid; baseline = predict of the same slice; target < 3 s")]


def run(args) -> list:
    import torch

    from napari_medprompt.classify.backbones.registry import create_backbone
    from napari_medprompt.classify.base import available_methods, method_class

    logging.getLogger("napari_medprompt").setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    quick = bool(getattr(args, "quick", False))
    bb_name, shots, batch = ("test-vit-tiny", 4, 8) if quick else ("ViT-B-16", 16, 16)
    n_classes = 4
    dev = device_name()
    backbone = create_backbone(bb_name, "random")
    data = _synthetic(n_classes, shots, backbone.image_size)
    tag = f"{bb_name} {backbone.image_size}px random weights, {n_classes}x{shots} shots, batch {batch}"
    records = []

    feat_times = []
    with torch.no_grad():  # warm-up: first-call allocations are not part of any method's time
        from napari_medprompt.train.preprocess import Preprocess, images_to_tensor

        backbone.encode_image(images_to_tensor(data.images[:batch], Preprocess.from_backbone(backbone)))
    for name, info in sorted(available_methods().items()):
        try:
            importlib.import_module(info.target.partition(":")[0])
        except ModuleNotFoundError as err:
            print(f"[classify] {name}: not available ({err}), skipped", file=sys.stderr)
            continue
        try:
            torch.manual_seed(0)
            model = method_class(name)(backbone, data.classes)
            epoch_s, feat_s = _epoch_time(model, data, batch)
        except Exception as err:  # one broken method must not hide the others' numbers
            print(f"[classify] {name}: failed: {type(err).__name__}: {err}", file=sys.stderr)
            continue
        cached = bool(getattr(model, "cached_features", False))
        if cached:
            feat_times.append(feat_s)
        kind = "cached features" if cached else ("through the encoder" if model.num_trainable() else "training-free")
        records.append(Record(f"classify.epoch.{name}", "epoch", epoch_s, "s", device=dev,
                              notes=f"{tag}; {kind}; {model.num_trainable()} trainable"))
        print(f"[classify] {name}: {epoch_s:.3f} s/epoch ({kind})", file=sys.stderr, flush=True)
    if feat_times:
        records.append(Record("classify.features.extract", "once", median(feat_times), "s", device=dev,
                              notes=f"{tag}; {len(data)} images; median over the {len(feat_times)} cached-feature methods"))

    records += mask_guided_cached_records(backbone, data, batch, dev, tag)

    # linear probe: cached features vs the same head with the encoder run on every batch
    from napari_medprompt.train.loop import TrainConfig, train_iter

    def lp(cached: bool):
        torch.manual_seed(0)
        m = method_class("linear-probe")(backbone, data.classes)
        if not cached:
            m.cached_features = False  # same head; the loop now encodes every batch
        return _epoch_time(m, data, batch)

    cached_runs = [lp(True)[0] for _ in range(3)]  # each run re-extracts features (untimed)
    through = [lp(False)[0] for _ in range(1 if not quick else 2)]
    records.append(Record("classify.linear_probe_cached", "epoch", median(cached_runs), "s",
                          baseline=median(through), device=dev,
                          notes=f"{tag}; baseline = same head, encoder run every batch"))
    m = method_class("linear-probe")(backbone, data.classes)
    t0 = time.perf_counter()
    for ev in train_iter(TrainConfig(epochs=50, batch_size=batch, val_fraction=0.0, patience=0, device="cpu"), data, m):
        if ev.kind == "features":
            t0 = time.perf_counter()
    records.append(Record("classify.linear_probe_cached.50ep", "train", time.perf_counter() - t0, "s", device=dev,
                          notes=f"{tag}; 50 epochs after feature extraction (target < 1 s)"))
    records += explain_records(backbone, dev, tag)
    records.append(Record("classify.peak_rss", "peak", peak_rss_mb(), "MiB", device=dev, notes=tag))
    return records
