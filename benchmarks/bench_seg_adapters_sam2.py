"""Group ``seg_adapters`` (SAM2 part): adapters on SAM2.1-hiera-tiny trained on corrected masks.

- ``seg_adapters.params.<method>``: trainable parameters (``sam2-adapter`` 2,306,544 at ratio 0.25,
  ``sam2-decoder`` 4,190,437 = the mask decoder without the conv_s0/conv_s1 projections).
- ``seg_adapters.step.<method>``: seconds per training step (simulated box + click prompts, forward,
  Dice+BCE backward, AdamW step), batch 2, at the method's resolution (SAM2: 1024 px), the image
  encoder run every step (with gradients through the adapters; without for ``sam2-decoder``).
- ``seg_adapters.step_cached.sam2-decoder``: the same from cached encoder features (the CPU path;
  the encode is paid once per slice: ``seg_adapters.encode.sam2``).
- ``seg_adapters.step.sam2-adapter@medsam2``: adapters on MedSAM2 at its 512 px (not with ``--quick``).

Random-init weights built from the real config (no download; the cost does not depend on the
weights' values). CUDA: the same under bfloat16 autocast (as SAM2 trains). Medians over repeats after
a warm-up step (``--quick``: one timed step). The CPU is shared on development machines: the load
average at the start is in the notes.
"""

from __future__ import annotations

import os

from benchmarks.runner import Record, device_name, median, time_repeats

METHODS = ["sam2-adapter", "sam2-adapter-decoder", "sam2-decoder"]
BATCH = 2


def _pairs(n: int, size: int = 256):
    import numpy as np

    from napari_medprompt.seg_adapters.pairs import Sam2PairData

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    ims, ms, os_ = [], [], []
    for _ in range(n):
        cy, cx = rng.uniform(80, size - 80, 2)
        m = ((yy - cy) / 40) ** 2 + ((xx - cx) / 30) ** 2 <= 1
        ims.append((rng.normal(0, 20, (size, size)) + 100 * m).astype(np.float32))
        ms.append(m)
        os_.append(np.roll(m, 9, axis=1))
    return Sam2PairData(ims, ms, [(-50.0, 150.0)] * n, os_, groups=[f"s{i}" for i in range(n)])


def _bench_model(model, t, dev, amp, repeats, name, tag, out, cached_too: bool):
    import contextlib

    import torch

    def autocast():
        return torch.autocast("cuda", dtype=torch.bfloat16) if amp else contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    model.to(dev).train(True)
    loss_fn = model.loss_function()
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    idx = torch.arange(BATCH)
    x = t.x[idx].to(dev)
    y = t.y[idx].to(dev)

    def step(feats=None):
        prompts = model.seg_prompts(t, idx, gen)
        with autocast():
            logits = model.seg_logits_from_features(feats, prompts) if feats is not None else model.seg_logits(x, prompts)
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync()

    prec = "bf16 autocast" if amp else "fp32"
    note = (f"batch {BATCH}, {model.image_size} px, {prec}, random-init weights, {torch.get_num_threads()} torch "
            f"thread(s), load avg {os.getloadavg()[0]:.1f}")
    out.append(Record(f"seg_adapters.params.{tag}", "trainable_parameters", float(model.num_trainable()), "count",
                      device=name, notes=f"{model.backbone.name}"))
    ts = time_repeats(step, repeats=repeats, warmup=1)
    out.append(Record(f"seg_adapters.step.{tag}", "s_per_step", median(ts), "s", device=name,
                      notes=note + ("" if not model.cached_features else "; encoder (no grad) run every step")))
    if cached_too:
        def encode():
            with torch.no_grad(), autocast():
                return model.encode_for_cache(x).float()

        te = time_repeats(encode, repeats=repeats, warmup=1)
        out.append(Record("seg_adapters.encode.sam2", "s_per_batch", median(te), "s", device=name, notes=note))
        feats = encode()
        tc = time_repeats(lambda: step(feats), repeats=repeats, warmup=1)
        out.append(Record(f"seg_adapters.step_cached.{tag}", "s_per_step", median(tc), "s", device=name,
                          notes=note + "; features cached once per slice"))


def run(args) -> list[Record]:
    import torch

    from napari_medprompt.seg_adapters.sam2_model import Sam2AdapterModel, Sam2Base, pair_tensors

    quick = getattr(args, "quick", False)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dev.type == "cuda"
    repeats = 1 if quick else 3
    name = device_name()
    out: list[Record] = []
    base = Sam2Base.build("sam2.1-hiera-tiny", "random", str(dev))
    t = pair_tensors(_pairs(BATCH), base.image_size)
    for method in METHODS:
        model = Sam2AdapterModel(base, method)
        _bench_model(model, t, dev, amp, repeats, name, method, out, cached_too=model.cached_features)
        model.detach_adapters()
    if not quick:
        med = Sam2Base.build("medsam2-latest", "random", str(dev))
        tm = pair_tensors(_pairs(BATCH), med.image_size)
        model = Sam2AdapterModel(med, "sam2-adapter")
        _bench_model(model, tm, dev, amp, repeats, name, "sam2-adapter@medsam2", out, cached_too=False)
        model.detach_adapters()
    return out
