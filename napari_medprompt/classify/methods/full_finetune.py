"""``full-finetune``: the whole image encoder plus a linear head trained end to end (upper-bound baseline).

The method trains its own deep copy of the backbone, so a backbone object shared with other methods
(or a GUI session) stays frozen and unchanged. Two learning rates: the head at the run's ``lr``
(default 1e-3) and the image encoder at ``backbone_lr`` (default 1e-5), with weight decay 0.1 — the
range used to fine-tune CLIP ViTs without destroying the pretrained features (WiSE-FT, Wortsman et
al. 2022: AdamW, lr 3e-5, wd 0.1; FLYP, Goyal et al. 2023: lr 1e-5). One lr of 1e-3 over the whole
ViT (the earlier default) wipes out CLIP's representation within a few steps.
"""

from __future__ import annotations

import copy

from torch import nn

from napari_medprompt.classify.methods.base import AdapterMethod


class FullFinetune(AdapterMethod):
    name = "full-finetune"
    trains_backbone = True

    def __init__(self, backbone, classes, backbone_lr: float = 1e-5, **config):
        super().__init__(copy.deepcopy(backbone), classes, backbone_lr=float(backbone_lr), **config)
        tower = getattr(self.backbone.model, "visual", self.backbone.model)  # the image tower only
        tower.requires_grad_(True)
        self.fc = nn.Linear(int(self.backbone.embed_dim), self.n_classes)
        self.backbone_lr = float(self.config["backbone_lr"])

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the head at ``lr``, the image encoder at ``backbone_lr``."""
        return [
            {"params": list(self.fc.parameters()), "lr": lr},
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": self.backbone_lr},
        ]

    def forward(self, images, masks=None):
        return self.fc(self.backbone.encode_image(images))
