"""``predict(model, images, masks=None) -> probabilities`` for the GUI and the CLI.

``images`` (see :func:`as_image_list`): one 2D grey image (H, W), one colour image (H, W, 3|4), a stack
of grey images (N, H, W), a stack of colour images (N, H, W, 3|4) or channel-first (N, 1|3, H, W), or a
list of any of those single images; or an already-normalised (N, 3, S, S) torch tensor. Raw images
are preprocessed the way the model was trained (:func:`~napari_medprompt.train.preprocess.preprocess_of`).
Masks are required by mask-using methods and ignored by the others.

The model runs as a :func:`snapshot <napari_medprompt.classify.snapshot.snapshot>`: predicting while it
trains in another thread never changes its mode or weights.
"""

from __future__ import annotations

import numpy as np


def as_image_list(images) -> list:
    """The images of ``images`` as a list of single 2D (grey or colour) arrays (see module docstring).

    A 3D array whose last axis has 3 or 4 entries is ONE colour image; any other 3D array is a stack.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        if images.ndim == 3:
            return [images] if images.shape[-1] in (3, 4) else list(images)
        if images.ndim == 4:
            return list(images)
        raise ValueError(f"images: expected (H, W), (H, W, 3), (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    return list(images)


def _as_mask_list(masks, n: int):
    if masks is None:
        return None
    if isinstance(masks, np.ndarray):
        masks = [masks] if masks.ndim == 2 else list(masks)
    masks = list(masks)
    if len(masks) != n:
        raise ValueError(f"{len(masks)} masks for {n} images")
    return masks


def predict(model, images, masks=None, *, spacings=None, window=None, batch_size: int = 32, device=None) -> np.ndarray:
    """(N, n_classes) class probabilities as a float32 numpy array; one row per image.

    ``spacings``: pixel spacing (row, col) in mm, one pair for all images or one per image (default
    square pixels). ``window``: (level, width) or a CT preset name for images in HU (default: the
    model's own preprocessing).
    """
    import torch

    from napari_medprompt.classify.methods.base import MissingMaskError
    from napari_medprompt.classify.snapshot import snapshot
    from napari_medprompt.train.preprocess import images_to_tensor, masks_to_tensor, preprocess_of

    uses_masks = bool(getattr(model, "uses_masks", False))
    spec = preprocess_of(model)
    if window is not None:
        spec = spec.with_window(window)
    if isinstance(images, torch.Tensor):
        x = images[None] if images.ndim == 3 else images
        m = masks
        if m is not None and m.ndim == 3:
            m = m[None]
    else:
        images = as_image_list(images)
        x = images_to_tensor(images, spec, spacings=spacings)
        m = None
        if uses_masks:
            masks = _as_mask_list(masks, len(images))
            if masks is None or any(mm is None for mm in masks):
                raise MissingMaskError(f"method {model.name!r} needs a mask for every image")
            m = masks_to_tensor(masks, images, spec, spacings=spacings)
    if uses_masks and m is None:
        raise MissingMaskError(f"method {model.name!r} needs a mask for every image")
    work = snapshot(model).eval()
    device = device or next(iter(work.parameters()), torch.zeros(0)).device  # where the model lives
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            mb = None if m is None else m[i : i + batch_size].to(device)
            logits = work(x[i : i + batch_size].to(device), mb)
            out.append(logits.float().softmax(-1).cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, model.n_classes), np.float32)
