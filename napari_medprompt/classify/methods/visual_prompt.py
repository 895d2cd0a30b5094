"""Visual prompting in pixel space (Bahng et al., 2022, "Exploring Visual Prompts for Adapting
Large-Scale Models"): a learnable frame of width ``pad`` around the image, added to the input.

The prompt lives in the backbone's normalised input space (images arrive normalised with the
backbone's mean/std), is zero inside the frame and learnable on the ``pad``-pixel border, and is added
to every image before the frozen encoder: ``f(x + p)``. The default width is the paper's 30 px at
224 px, scaled to the backbone's input size. The paper initialises the frame with N(0, 1) noise
(``init_std=1.0``, the default here).

Head: on a CLIP backbone (``head="auto"`` -> ``"text"``) the classifier is the frozen zero-shot text
classifier (class-name prompts), as in the paper, and only the frame trains; ``head="text-init"``
lets the text-initialised class weights train as well. ``head="linear"`` (the default on backbones
without a text tower, e.g. ResNet) trains a linear head on the prompted features together with the
frame. Works on ViT and CNN backbones (only ``encode_image`` is used).
"""

from __future__ import annotations

import torch
from torch import nn

from napari_medprompt.classify.methods.base import AdapterMethod
from napari_medprompt.classify.methods.class_head import DEFAULT_TEMPLATES, ClassHead

PAPER_PAD, PAPER_SIZE = 30, 224


def default_pad(image_size: int) -> int:
    return max(1, round(PAPER_PAD * image_size / PAPER_SIZE))


class PadPrompter(nn.Module):
    """Learnable border of width ``pad`` on a (3, size, size) image; zero (and fixed) inside."""

    def __init__(self, image_size: int, pad: int, init_std: float = 1.0, channels: int = 3) -> None:
        super().__init__()
        s, p = int(image_size), int(pad)
        if not 0 < 2 * p < s:
            raise ValueError(f"prompt width {p} does not fit a {s}x{s} image (need 0 < 2*pad < size)")
        self.image_size, self.pad = s, p
        inner = s - 2 * p
        self.pad_up = nn.Parameter(torch.randn(1, channels, p, s) * init_std)
        self.pad_down = nn.Parameter(torch.randn(1, channels, p, s) * init_std)
        self.pad_left = nn.Parameter(torch.randn(1, channels, inner, p) * init_std)
        self.pad_right = nn.Parameter(torch.randn(1, channels, inner, p) * init_std)

    def prompt(self) -> torch.Tensor:
        c = self.pad_up.shape[1]
        inner = self.image_size - 2 * self.pad
        centre = self.pad_up.new_zeros(1, c, inner, inner)
        middle = torch.cat([self.pad_left, centre, self.pad_right], dim=3)
        return torch.cat([self.pad_up, middle, self.pad_down], dim=2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"images are {tuple(images.shape[-2:])} but the prompt was built for "
                f"{self.image_size}x{self.image_size} (resize to the backbone's input size first)"
            )
        return images + self.prompt().to(images.dtype)


class VisualPrompt(AdapterMethod):
    name = "visual-prompt"

    def __init__(
        self,
        backbone,
        classes,
        pad: int | None = None,
        init_std: float = 1.0,
        head: str = "auto",
        templates=DEFAULT_TEMPLATES,
        **config,
    ):
        pad = default_pad(backbone.image_size) if pad is None else int(pad)
        if head not in ("auto", "linear", "text", "text-init"):
            raise ValueError(f"{self.name}: unknown head {head!r}; choose auto, linear, text or text-init")
        if head == "auto":
            head = "text" if backbone.has_text else "linear"
        super().__init__(backbone, classes, pad=pad, init_std=float(init_std), head=head, templates=list(templates), **config)
        self.prompter = PadPrompter(backbone.image_size, pad, init_std)
        kind = "linear" if head == "linear" else "text"
        self.classifier = ClassHead(backbone, self.classes, kind, templates=templates, trainable=head != "text")

    def forward(self, images: torch.Tensor, masks: torch.Tensor | None = None) -> torch.Tensor:
        return self.classifier(self.backbone.encode_image(self.prompter(images)))
