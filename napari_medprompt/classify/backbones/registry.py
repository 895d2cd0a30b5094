"""Backbones by name: ``create_backbone("ViT-B-16")``, ``create_backbone("resnet50")``, test configs.

Names:
- any open_clip model name (``ViT-B-16``, ``ViT-B-32``, ``ViT-L-14``, ...) with a pretrained tag
  (default ``openai``), a local checkpoint file, or ``"random"``;
- ``hf-hub:<repo>`` open_clip models such as BiomedCLIP (their weights come from the hub repo);
- ``resnet50`` / ``resnet18`` (torchvision; default tag ``IMAGENET1K_V2`` / ``IMAGENET1K_V1``);
- ``test-vit-tiny`` (an open_clip CLIP with a 2-layer, width-64, patch-8 ViT at 64 px and a 2-layer text tower)
  and ``test-resnet`` (a one-block-per-stage torchvision ResNet at 64 px): the real model classes at
  a size that trains in seconds on a CPU; random init unless a local checkpoint is given.

Every backbone comes back frozen (``requires_grad_(False)``, ``eval()``). Random initialisation is
seeded (``init_seed``, default 0) without touching the caller's random state, so "random" weights are
the same every time: a checkpoint trained on them can be evaluated later (the checkpoint records the
backbone's state hash and loading checks it).
"""

from __future__ import annotations

from dataclasses import dataclass

BIOMEDCLIP = "hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224"


@dataclass(frozen=True)
class BackboneInfo:
    name: str
    default_pretrained: str | None
    description: str
    has_text: bool = True


_KNOWN = {
    i.name: i
    for i in (
        BackboneInfo("ViT-B-16", "openai", "CLIP ViT-B/16 (OpenAI), 224 px"),
        BackboneInfo("ViT-B-32", "openai", "CLIP ViT-B/32 (OpenAI), 224 px"),
        BackboneInfo("ViT-L-14", "openai", "CLIP ViT-L/14 (OpenAI), 224 px"),
        BackboneInfo(BIOMEDCLIP, None, "BiomedCLIP (PubMedBERT + ViT-B/16), 224 px"),
        BackboneInfo("resnet50", "IMAGENET1K_V2", "torchvision ResNet-50 (ImageNet), 224 px", has_text=False),
        BackboneInfo("resnet18", "IMAGENET1K_V1", "torchvision ResNet-18 (ImageNet), 224 px", has_text=False),
        BackboneInfo("test-vit-tiny", None, "tiny open_clip CLIP (2 layers, width 64, patch 8, 64 px), random init"),
        BackboneInfo("test-resnet", None, "tiny torchvision ResNet (1 block per stage, 64 px), random init", has_text=False),
    )
}

DEFAULT = "default"


def available_backbones() -> dict[str, BackboneInfo]:
    """The backbones offered by name in the GUI and CLI (any open_clip name also works)."""
    return dict(_KNOWN)


def default_pretrained(name: str) -> str | None:
    if name in _KNOWN:
        return _KNOWN[name].default_pretrained
    return None if name.startswith("hf-hub:") else "openai"


def create_backbone(
    name: str = "ViT-B-16", pretrained: str | None = DEFAULT, device="cpu", *, fallback_random: bool = False, init_seed: int = 0
):
    """Build a frozen backbone by name. ``pretrained``: a tag, a local file, ``"random"``/None, or "default"."""
    import torch

    if pretrained == DEFAULT:
        pretrained = default_pretrained(name)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return _create(name, pretrained, device, fallback_random)


def _create(name, pretrained, device, fallback_random):
    if name in ("resnet50", "resnet18"):
        from napari_medprompt.classify.backbones.resnet import ResNetBackbone

        return ResNetBackbone(name, pretrained, device, fallback_random=fallback_random)
    if name == "test-resnet":
        from napari_medprompt.classify.backbones.resnet import tiny_resnet

        return tiny_resnet(pretrained, device)
    from napari_medprompt.classify.backbones.open_clip_backbone import OpenClipBackbone
    from napari_medprompt.models.cache import WeightsUnavailable

    try:
        return OpenClipBackbone(name, pretrained, device)
    except WeightsUnavailable:
        if not fallback_random or name.startswith("hf-hub:"):
            raise
        import logging

        logging.getLogger(__name__).warning("%s: weights %r unavailable, using random weights", name, pretrained)
        return OpenClipBackbone(name, "random", device)
