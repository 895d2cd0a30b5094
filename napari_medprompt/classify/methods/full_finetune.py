"""``full-finetune``: the whole backbone plus a linear head trained end to end (upper-bound baseline).

The method trains its own deep copy of the backbone, so a backbone object shared with other methods
(or a GUI session) stays frozen and unchanged. Use a smaller learning rate than for the heads
(e.g. 1e-5 for CLIP ViTs); ``backbone_lr_scale`` scales the backbone's rate relative to the head's.
"""

from __future__ import annotations

import copy

from torch import nn

from napari_medprompt.classify.methods.base import AdapterMethod


class FullFinetune(AdapterMethod):
    name = "full-finetune"
    trains_backbone = True

    def __init__(self, backbone, classes, backbone_lr_scale: float = 1.0, **config):
        super().__init__(copy.deepcopy(backbone), classes, backbone_lr_scale=float(backbone_lr_scale), **config)
        tower = getattr(self.backbone.model, "visual", self.backbone.model)  # the image tower only
        tower.requires_grad_(True)
        self.fc = nn.Linear(int(self.backbone.embed_dim), self.n_classes)
        self.backbone_lr_scale = float(backbone_lr_scale)

    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer groups: the head at ``lr``, the backbone at ``lr * backbone_lr_scale``."""
        return [
            {"params": list(self.fc.parameters()), "lr": lr},
            {"params": [p for p in self.backbone.parameters() if p.requires_grad], "lr": lr * self.backbone_lr_scale},
        ]

    def forward(self, images, masks=None):
        return self.fc(self.backbone.encode_image(images))
