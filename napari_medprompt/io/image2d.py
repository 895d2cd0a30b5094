"""PNG / JPEG / TIFF reading (Pillow; tifffile for TIFF stacks and 16-bit data).

Greyscale stays 2D ``[y, x]``. Colour images whose three channels are equal (X-rays saved as RGB)
become greyscale; real colour images keep ``[y, x, 3]`` with ``is_rgb`` set. An alpha channel that
is fully opaque is dropped. Multi-page TIFFs of equal pages become a (page, y, x) stack.
Spacing is 1 (pixels) unless a TIFF records a resolution in centimetres or inches.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medprompt.io.errors import ImageReadError
from napari_medprompt.io.volume import Volume

IMAGE2D_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def is_image2d_path(path: str | Path) -> bool:
    return str(path).lower().endswith(IMAGE2D_SUFFIXES)


def read_image2d(path: str | Path) -> Volume:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(path)
    if path.suffix.lower() in (".tif", ".tiff"):
        data = _read_tiff(path)
    else:
        data = _read_pillow(path)
    warnings: list[str] = []
    is_rgb = False
    if data.ndim == 3 and data.shape[-1] in (3, 4):
        if data.shape[-1] == 4:
            alpha = data[..., 3]
            if alpha.min() != alpha.max() or alpha.max() not in (255, 65535, 1):
                warnings.append(f"{path}: transparency (alpha channel) ignored")
            data = data[..., :3]
        if np.array_equal(data[..., 0], data[..., 1]) and np.array_equal(data[..., 0], data[..., 2]):
            data = np.ascontiguousarray(data[..., 0])
        else:
            is_rgb = True
    elif data.ndim == 3 and data.shape[-1] == 2:  # grey + alpha
        data = np.ascontiguousarray(data[..., 0])
    spatial = data.ndim - (1 if is_rgb else 0)
    if spatial not in (2, 3):
        raise ImageReadError(path, f"unexpected image array of shape {data.shape}")
    spacing = (1.0,) * spatial
    vol = Volume(
        data=data,
        spacing=spacing,
        affine=np.eye(4),
        modality="OT",
        name=path.stem,
        source=str(path),
        is_rgb=is_rgb,
        meta={"format": path.suffix.lower().lstrip("."), "spacing_unit": "pixel"},
        warnings=warnings,
    )
    from napari_medprompt.io.modality import apply_inference

    return apply_inference(vol)  # a picture file records no modality: grey radiograph -> DX, else OT


def _read_pillow(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            if im.mode == "P":
                im = im.convert("RGBA" if "transparency" in im.info else "RGB")
            elif im.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
                im = im.convert("RGB")
            elif im.mode == "1":
                im = im.convert("L")
            return np.asarray(im)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageReadError(path, f"not a readable {path.suffix.lstrip('.').upper()} image ({e})") from e


def _read_tiff(path: Path) -> np.ndarray:
    import tifffile

    try:
        data = tifffile.imread(str(path))
    except Exception as e:  # TiffFileError, struct/zlib errors on a truncated file
        raise ImageReadError(path, f"not a readable TIFF image ({e})") from e
    data = np.squeeze(np.asarray(data))
    if data.ndim == 4 and data.shape[-1] in (3, 4):
        raise ImageReadError(path, f"a stack of colour images {data.shape} is not supported")
    if data.ndim > 3:
        raise ImageReadError(path, f"TIFF of shape {data.shape} has more than three dimensions")
    return data
