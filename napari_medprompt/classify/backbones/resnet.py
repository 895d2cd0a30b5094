"""torchvision ResNet image backbones (ResNet-50 ImageNet weights by default) for MoVL-style methods.

``encode_image`` is the global-average-pooled output of the last stage (2048-d for ResNet-50);
``feature_map`` / ``pool`` split it so Grad-CAM can take gradients at the last stage. Weights come
from torchvision's published URLs (their file names carry the hash, which is checked) into
``cache_dir("torchvision")``; a local ``.safetensors`` or torch file (``weights_only=True``) always
works; ``pretrained=None`` / ``"random"`` gives random initialisation (``random_weights`` True, warned).
"""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

from napari_medprompt.classify.backbones.base import Backbone
from napari_medprompt.models.cache import WeightsUnavailable, cache_dir

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (torchvision builder, weights enum attribute, default tag)
ARCHS = {
    "resnet50": ("resnet50", "ResNet50_Weights"),
    "resnet18": ("resnet18", "ResNet18_Weights"),
}


def load_state_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """State dict from a ``.safetensors`` file or a torch file read with ``weights_only=True``."""
    path = str(path)
    try:
        if path.endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(path)
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read weights from {path}: {type(err).__name__}: {err}") from err
    if isinstance(sd, dict) and "state_dict" in sd:
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise ValueError(f"{path} does not hold a state dict")
    return {k.removeprefix("module."): v for k, v in sd.items()}


class ResNetBackbone(Backbone):
    kind = "cnn"
    has_text = False

    def __init__(
        self,
        arch: str = "resnet50",
        pretrained: str | None = "IMAGENET1K_V2",
        device="cpu",
        *,
        model: nn.Module | None = None,
        name: str | None = None,
        image_size: int = 224,
        fallback_random: bool = False,
    ) -> None:
        super().__init__()
        import torchvision

        self.name = name or arch
        self.image_size = int(image_size)
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        random = pretrained is None or str(pretrained).lower() in ("", "random", "none")
        if model is None:
            if arch not in ARCHS:
                raise ValueError(f"unknown ResNet {arch!r}; available: {', '.join(ARCHS)}")
            model = getattr(torchvision.models, ARCHS[arch][0])(weights=None)
        if not random:
            try:
                sd = self._resolve_weights(arch, str(pretrained))
                model.load_state_dict(sd, strict=False if "fc.weight" not in sd else True)
            except WeightsUnavailable:
                if not fallback_random:
                    raise
                log.warning("%s: pretrained weights unavailable, using random weights", self.name)
                random = True
        self.pretrained = "random" if random else (os.path.abspath(pretrained) if os.path.isfile(str(pretrained)) else pretrained)
        self.random_weights = random
        if random:
            log.warning("backbone %s runs on RANDOM weights: predictions are not meaningful", self.name)
        self.embed_dim = int(model.fc.in_features)  # channels after the last stage
        model.fc = nn.Identity()
        self.model = model
        self.to(device)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _resolve_weights(arch: str, pretrained: str) -> dict[str, torch.Tensor]:
        if os.path.isfile(pretrained):
            return load_state_file(pretrained)
        import torchvision

        enum = getattr(torchvision.models, ARCHS.get(arch, ("", ""))[1], None)
        weights = getattr(enum, pretrained, None) if enum is not None else None
        if weights is None:
            raise ValueError(
                f"{pretrained!r} is neither a torchvision weight tag of {arch} nor an existing file; "
                "use 'random' for random weights"
            )
        target = cache_dir("torchvision")
        try:
            return weights.get_state_dict(progress=False, model_dir=str(target), check_hash=True)
        except Exception as err:
            raise WeightsUnavailable(
                f"could not get {arch} weights {pretrained} from {weights.url} ({type(err).__name__}: {err}). "
                f"If this machine is offline, download that file on a connected machine into {target} "
                "(or choose it as a local checkpoint); pretrained='random' runs on random weights."
            ) from err

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.maxpool(m.relu(m.bn1(m.conv1(images))))
        return m.layer4(m.layer3(m.layer2(m.layer1(x))))

    def pool(self, fmap: torch.Tensor) -> torch.Tensor:
        return torch.flatten(self.model.avgpool(fmap), 1)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(self.feature_map(images))

    def extra_repr(self) -> str:
        return f"name={self.name!r}, pretrained={self.pretrained!r}, random_weights={self.random_weights}"


def tiny_resnet(pretrained: str | None = None, device="cpu") -> ResNetBackbone:
    """A one-block-per-stage torchvision ResNet (BasicBlock) at 64 px for tests: random init, or a local file."""
    from torchvision.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1])
    return ResNetBackbone("resnet18", pretrained, device, model=model, name="test-resnet", image_size=64)
