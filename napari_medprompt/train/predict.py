"""``predict(model, images, masks=None) -> probabilities`` for the GUI and the CLI.

``images`` are raw arrays (grey / RGB, any dtype and size; preprocessed with the model's backbone
size, mean and std) or an already-normalised (N, 3, S, S) tensor. Masks are required by mask-using
methods and ignored by the others.
"""

from __future__ import annotations

import numpy as np


def predict(model, images, masks=None, *, batch_size: int = 32, device=None) -> np.ndarray:
    """(N, n_classes) class probabilities as a float32 numpy array."""
    import torch

    from napari_medprompt.classify.methods.base import MissingMaskError
    from napari_medprompt.train.preprocess import Preprocess, images_to_tensor, masks_to_tensor

    spec = Preprocess.from_backbone(model.backbone)
    if isinstance(images, torch.Tensor):
        x = images
        m = masks
    else:
        images = list(images) if not (isinstance(images, np.ndarray) and images.ndim == 2) else [images]
        x = images_to_tensor(images, spec)
        m = None
        if getattr(model, "uses_masks", False):
            if masks is None or any(mm is None for mm in masks):
                raise MissingMaskError(f"method {model.name!r} needs a mask for every image")
            m = masks_to_tensor(list(masks), images, spec)
    if getattr(model, "uses_masks", False) and m is None:
        raise MissingMaskError(f"method {model.name!r} needs a mask for every image")
    device = device or next(iter(model.parameters()), torch.zeros(0)).device
    was_training = model.training
    model.eval()
    out = []
    try:
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                mb = None if m is None else m[i : i + batch_size].to(device)
                logits = model(x[i : i + batch_size].to(device), mb)
                out.append(logits.float().softmax(-1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(out).numpy() if out else np.zeros((0, model.n_classes), np.float32)
