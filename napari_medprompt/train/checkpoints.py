"""Adapter checkpoints: ``.safetensors`` tensors + JSON metadata; never a pickle.

The file holds the method's own tensors (the backbone's too only for ``full-finetune``) and, in the
safetensors header, a JSON document under the key ``medprompt``: method, backbone name + pretrained
tag + state hash, classes, preprocessing, method config, training config, package version and the
SHA-256 of the training-set list. A copy of the metadata is written beside it as ``<file>.json``
for people to read. Loading checks that the backbone and the method match and refuses a mismatch
with a message that says what was expected; a corrupt or foreign file gets a clear error.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FORMAT = "napari-medprompt-adapter/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match what it is loaded into."""


def _method_tensors(model) -> dict:
    keep_backbone = getattr(model, "trains_backbone", False)
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if keep_backbone or not k.startswith("backbone.")}


def save_checkpoint(path, model, *, config: dict | None = None, train_fingerprint: str | None = None,
                    metrics: dict | None = None, backbone_hash: str | None = None) -> Path:
    """Write ``path`` (.safetensors) atomically, plus ``path.json``; returns the path."""
    from safetensors.torch import save_file

    import napari_medprompt
    from napari_medprompt.train.preprocess import Preprocess

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    path.parent.mkdir(parents=True, exist_ok=True)
    bb = model.backbone
    meta = {
        "format": FORMAT,
        "method": model.name,
        "backbone": {
            "name": bb.name,
            "pretrained": bb.pretrained,
            "random_weights": bool(bb.random_weights),
            "state_hash": backbone_hash or (None if getattr(model, "trains_backbone", False) else bb.state_hash()),
        },
        "classes": list(model.classes),
        "preprocessing": Preprocess.from_backbone(bb).to_dict(),
        "method_config": _jsonable(model.method_config()),
        "train_config": _jsonable(config or {}),
        "train_set_sha256": train_fingerprint,
        "metrics": _jsonable(metrics or {}),
        "trainable_parameters": int(model.num_trainable()),
        "package_version": napari_medprompt.__version__,
    }
    text = json.dumps(meta, indent=1)
    tmp = path.with_name(path.name + ".tmp")
    save_file(_method_tensors(model), str(tmp), metadata={"medprompt": text})
    os.replace(tmp, path)
    side = path.with_name(path.name + ".json")
    tmp_side = side.with_name(side.name + ".tmp")
    tmp_side.write_text(text)
    os.replace(tmp_side, side)
    return path


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items() if not str(k).startswith("_")}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:
        return obj.item()
    if isinstance(obj, os.PathLike):
        return str(obj)
    return repr(obj)


def read_metadata(path) -> dict:
    """The checkpoint's metadata (from the safetensors header); clear errors for corrupt/foreign files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable .safetensors checkpoint (corrupt or truncated?): {err}") from err
    if "medprompt" not in header:
        raise CheckpointError(f"{path} is a safetensors file but not a napari-medprompt adapter checkpoint (no metadata)")
    try:
        meta = json.loads(header["medprompt"])
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: its metadata is not valid JSON: {err}") from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {meta.get('format')!r} (expected {FORMAT})")
    return meta


def check_backbone(meta: dict, backbone, path="checkpoint", *, verify_hash: bool = True) -> None:
    want = meta["backbone"]
    if want["name"] != backbone.name or str(want["pretrained"]) != str(backbone.pretrained):
        raise CheckpointError(
            f"{path} was trained on backbone {want['name']!r} (weights {want['pretrained']!r}), but the current "
            f"backbone is {backbone.name!r} (weights {backbone.pretrained!r}); choose that backbone to use it"
        )
    if verify_hash and want.get("state_hash") and want["state_hash"] != backbone.state_hash():
        raise CheckpointError(
            f"{path} was trained on {want['name']!r} with different weights than the current ones "
            "(backbone state hash differs); load the same weights file it was trained with"
        )


def load_checkpoint(path, backbone=None, *, method: str | None = None, device="cpu", verify_hash: bool = True):
    """Rebuild the trained method from ``path``. ``backbone``: reuse one (checked); else build it by name.

    ``method``: when given, refuse a checkpoint of another method.
    """
    from safetensors.torch import load_file

    from napari_medprompt.classify.base import method_class

    path = Path(path)
    meta = read_metadata(path)
    if method is not None and meta["method"] != method:
        raise CheckpointError(f"{path} holds a {meta['method']!r} adapter, not {method!r}")
    if backbone is None:
        from napari_medprompt.classify.backbones.registry import create_backbone

        backbone = create_backbone(meta["backbone"]["name"], meta["backbone"]["pretrained"], device=device)
    check_backbone(meta, backbone, path, verify_hash=verify_hash)
    try:
        cls = method_class(meta["method"])
    except (KeyError, ImportError) as err:
        raise CheckpointError(f"{path}: method {meta['method']!r} is not available here: {err}") from err
    model = cls(backbone, meta["classes"], **meta.get("method_config", {}))
    try:
        tensors = load_file(str(path), device="cpu")
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable .safetensors checkpoint: {err}") from err
    strict = getattr(model, "trains_backbone", False)
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as err:
        raise CheckpointError(f"{path}: its tensors do not fit a {meta['method']!r} adapter on {backbone.name}: {err}") from err
    missing = [k for k in missing if strict or not k.startswith("backbone.")]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: tensors do not match a {meta['method']!r} adapter (missing {missing[:5]}, unexpected {unexpected[:5]})"
        )
    model.to(device)
    model.eval()
    model.checkpoint_metadata = meta
    return model
