"""Group ``seg_adapters``: VLSM-Adapter variants and the decoder-only baseline on CLIPSeg rd64-refined.

- ``seg_adapters.params.<method>``: trainable parameters (count), for the record against the paper
  (shallow VLC 4,201,984 = "SA 4.2M"; dense VL 2,974,464 is the likely "DA 3M").
- ``seg_adapters.step.<method>``: seconds per training step (forward, DiceCE backward, AdamW step),
  batch 2, 352 px, images through the encoders every step (the path of the dense variants).
- ``seg_adapters.step_cached.<method>``: the same from cached encoder outputs (shallow variants and the
  decoder baseline: the CPU-friendly path; the encode is paid once per image, not per step).
- ``seg_adapters.encode``: seconds to compute the cached vision outputs of a batch of 2.

The base is the real checkpoint config on random weights (no download); the cost does not depend
on the weights' values. CUDA: the same under fp16 autocast. Medians over repeats after a warm-up
step (``--quick``: one timed step).
"""

from __future__ import annotations

from benchmarks.runner import Record, device_name, median, time_repeats

METHODS = ["vlsm-dense-v", "vlsm-dense-vl", "vlsm-dense-vlc", "vlsm-shallow-v", "vlsm-shallow-vl", "vlsm-shallow-vlc",
           "clipseg-decoder"]
SIZE, BATCH = 352, 2


def run(args) -> list[Record]:
    import contextlib

    import torch

    from napari_medprompt.seg_adapters.clipseg import load_clipseg
    from napari_medprompt.seg_adapters.vlsm import DecoderFinetune, VLSMAdapter

    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    amp = dev.type == "cuda"
    repeats = 1 if getattr(args, "quick", False) else 3
    base = load_clipseg("random", device=dev, image_size=SIZE)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(BATCH, 3, SIZE, SIZE, generator=g).to(dev)
    y = (torch.rand(BATCH, 1, SIZE, SIZE, generator=g) > 0.7).float().to(dev)
    prompts = ["liver", "left kidney"]
    name = device_name()
    out: list[Record] = []

    def autocast():
        return torch.autocast("cuda", dtype=torch.float16) if amp else contextlib.nullcontext()

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    feats = None
    for method in METHODS:
        if method == "clipseg-decoder":
            model = DecoderFinetune(base, ["liver"], image_size=SIZE)
        else:
            model = VLSMAdapter(base, ["liver"], method=method, image_size=SIZE)
        model.to(dev).train()
        loss_fn = model.loss_function()
        opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-4, weight_decay=1e-3)
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        out.append(Record(f"seg_adapters.params.{method}", "trainable_parameters", float(model.num_trainable()),
                          "count", device=name))

        def step(from_feats=None):
            with autocast():
                if from_feats is None:
                    logits = model.seg_logits(x, prompts)
                else:
                    logits = model.seg_logits_from_features(from_feats, prompts)
            loss = loss_fn(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sync()

        note = f"batch {BATCH}, {SIZE} px, random-weight real config" + (", fp16 autocast" if amp else ", fp32")
        ts = time_repeats(step, repeats=repeats, warmup=1)
        out.append(Record(f"seg_adapters.step.{method}", "s_per_step", median(ts), "s", device=name, notes=note))
        if model.cached_features:
            if feats is None:
                def enc():
                    with autocast():
                        model.encode_for_cache(x)
                    sync()

                te = time_repeats(enc, repeats=repeats, warmup=1)
                with autocast():
                    feats = model.encode_for_cache(x).float()
                out.append(Record("seg_adapters.encode", "s_per_batch", median(te), "s", device=name,
                                  notes=f"vision outputs of {BATCH} images at {SIZE} px (paid once per image)"))
            tc = time_repeats(lambda: step(feats), repeats=repeats, warmup=1)
            out.append(Record(f"seg_adapters.step_cached.{method}", "s_per_step", median(tc), "s", device=name,
                              baseline=median(ts), notes=note + "; ratio vs the uncached step"))
        if hasattr(model, "remove_hooks"):
            model.remove_hooks()
        del model, opt
    out.append(Record("seg_adapters.base_parameters", "parameters", float(sum(p.numel() for p in base.parameters())),
                      "count", device=name, notes="CLIPSeg rd64-refined (150,747,746 expected)"))
    return out
