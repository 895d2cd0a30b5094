"""Which methods can train on the examples now, on which device, and roughly how long an epoch takes.

:func:`method_choices` lists every registered method (:mod:`napari_medprompt.classify.base`) with its
description, option schema and training defaults, and says whether it can run: a method that needs
masks is disabled when some example has none, a method that needs a text tower is disabled on a
backbone without one (ResNet). ``fast_on_cpu`` marks the methods that train on cached features (the
encoder runs once per image, then only a small head trains). :func:`pick_device` takes CUDA, then
Apple MPS, then the CPU. :func:`estimate_epoch_seconds` times the backbone on a few random inputs
(random weights: the same compute as the published ones, nothing downloaded).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class MethodChoice:
    name: str
    description: str
    enabled: bool
    reason: str  # why it is disabled ("" when enabled)
    uses_masks: bool
    fast_on_cpu: bool  # trains on cached features
    needs_text: bool
    options: tuple  # OptionSpec of the method
    defaults: object  # TrainDefaults

    @property
    def training_free(self) -> bool:
        return int(getattr(self.defaults, "epochs", 1)) == 0


def backbone_choices() -> list[tuple[str, str]]:
    """(name, one-line description) of the backbones offered by name."""
    from napari_medprompt.classify.backbones.registry import available_backbones

    return [(b.name, b.description) for b in available_backbones().values()]


def _has_text(backbone: str) -> bool:
    from napari_medprompt.classify.backbones.registry import available_backbones

    info = available_backbones().get(backbone)
    return True if info is None else bool(info.has_text)  # any other name is an open_clip CLIP


def method_choices(examples=None, backbone: str = "ViT-B-16") -> list[MethodChoice]:
    """Every registered method, enabled or disabled with the reason, for ``examples`` (an
    :class:`~napari_medprompt.learn.examples.ExampleSet` or None) on ``backbone``."""
    from napari_medprompt.classify.base import available_methods

    has_text = _has_text(backbone)
    n = 0 if examples is None else len(examples)
    n_masks = 0 if examples is None else examples.n_with_masks
    out = []
    for name, info in available_methods().items():
        reason = ""
        if info.uses_masks and examples is not None and n_masks < n:
            reason = (f"needs a mask for every example; {n - n_masks} of {n} example(s) have none "
                      "(add segmented objects, or remove the examples without masks)")
        elif info.uses_masks and examples is not None and n == 0:
            reason = "needs examples with masks (segmented objects)"
        elif info.needs_text and not has_text:
            reason = f"needs a CLIP backbone with a text tower; {backbone} has none"
        out.append(MethodChoice(name, info.description, not reason, reason, bool(info.uses_masks),
                                bool(info.cached_features), bool(info.needs_text), tuple(info.options),
                                info.defaults))
    return out


@dataclass(frozen=True)
class DeviceChoice:
    kind: str  # "cuda" | "mps" | "cpu"
    label: str  # for the dock, e.g. "CUDA (NVIDIA H200)" or "CPU (8 threads)"

    @property
    def is_cpu(self) -> bool:
        return self.kind == "cpu"


def pick_device() -> DeviceChoice:
    """CUDA when a GPU is there, else Apple MPS, else the CPU."""
    import torch

    if torch.cuda.is_available():
        return DeviceChoice("cuda", f"CUDA ({torch.cuda.get_device_name(0)})")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return DeviceChoice("mps", "Apple MPS")
    return DeviceChoice("cpu", f"CPU ({torch.get_num_threads()} threads)")


def estimate_epoch_seconds(method: str, backbone: str, n_examples: int, device: str = "auto",
                           batch: int = 4) -> float:
    """Rough seconds per epoch of ``method`` on ``backbone`` for ``n_examples`` images on ``device``.

    One encoder pass per image (timed once per backbone and device, on ``batch`` random inputs with
    random weights: the same compute) times a factor: methods on cached features pay one pass per
    image once (the first epoch; later ones are far cheaper), the others about three per image per
    epoch (forward and backward).
    """
    from napari_medprompt.classify.base import method_info
    from napari_medprompt.train.loop import resolve_device

    info = method_info(method)
    per_image = _encoder_seconds(backbone, str(resolve_device(device)), int(batch))
    factor = 1.0 if info.cached_features else 3.0
    return float(per_image * factor * max(1, int(n_examples)))


@functools.lru_cache(maxsize=16)
def _encoder_seconds(backbone: str, device: str, batch: int) -> float:
    """Seconds of one encoder forward pass per image (median of three timed batches after a warm-up)."""
    import statistics

    import torch

    from napari_medprompt.classify.backbones.registry import create_backbone

    bb = create_backbone(backbone, "random", device=device)
    x = torch.zeros(batch, 3, bb.image_size, bb.image_size, device=device)
    times = []
    with torch.no_grad():
        bb.encode_image(x)  # warm-up
        for _ in range(3):
            t0 = time.perf_counter()
            bb.encode_image(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) / batch)
    return float(statistics.median(times))
