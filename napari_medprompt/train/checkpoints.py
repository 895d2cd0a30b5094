"""Adapter checkpoints: ``.safetensors`` tensors + JSON metadata; never a pickle.

The file holds the method's own tensors (the backbone's too only for ``full-finetune``) and, in the
safetensors header, a JSON document under the key ``medprompt``: method, backbone name + pretrained
tag + state hash, classes, preprocessing, method config, training config, package version and the
SHA-256 of the training data (pixels, masks, labels, groups). A copy of the metadata, plus the
SHA-256 of the weights file itself, is written beside it as ``<file>.json``.

Nothing is overwritten: :func:`save_checkpoint` refuses an existing file (:func:`free_path` picks
``adapter-2.safetensors`` and so on), and the file appears atomically (written to a temporary file,
then hard-linked into place, which fails if the name was taken meanwhile). Loading checks the
weights' SHA-256 (against the sidecar or the caller's value), the backbone, the method and, when the
caller passes its own, the preprocessing; a mismatch is refused with a message that says what was
expected, and a corrupt or foreign file gets a clear error. Versioned storage lives in :mod:`.store`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

FORMAT = "napari-medprompt-adapter/1"


class CheckpointError(ValueError):
    """A checkpoint cannot be read or does not match what it is loaded into."""


def _method_tensors(model) -> dict:
    keep_backbone = getattr(model, "trains_backbone", False)
    sd = model.state_dict()
    return {k: v.detach().cpu().contiguous() for k, v in sd.items() if keep_backbone or not k.startswith("backbone.")}


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def free_path(folder, name: str = "adapter.safetensors") -> Path:
    """``folder/name`` if no file has that name yet, else ``stem-2``, ``stem-3``... (never an existing file)."""
    folder, base = Path(folder), Path(name)
    if base.suffix != ".safetensors":
        base = base.with_suffix(".safetensors")
    path, n = folder / base.name, 1
    while path.exists() or path.with_name(path.name + ".json").exists():
        n += 1
        path = folder / f"{base.stem}-{n}{base.suffix}"
    return path


def checkpoint_metadata(model, *, config: dict | None = None, train_fingerprint: str | None = None,
                        metrics: dict | None = None, backbone_hash: str | None = None, preprocess=None) -> dict:
    """The metadata stored with the weights (and in a store version)."""
    import napari_medprompt

    bb = model.backbone
    if preprocess is None:
        from napari_medprompt.train.preprocess import preprocess_of

        preprocess = preprocess_of(model)
    return {
        "format": FORMAT,
        "method": model.name,
        "backbone": {
            "name": bb.name,
            "pretrained": bb.pretrained,
            "random_weights": bool(bb.random_weights),
            "state_hash": backbone_hash or (None if getattr(model, "trains_backbone", False) else bb.state_hash()),
        },
        "classes": list(model.classes),
        "preprocessing": _jsonable(preprocess.to_dict() if hasattr(preprocess, "to_dict") else dict(preprocess)),
        "method_config": _jsonable(model.method_config()),
        "train_config": _jsonable(config or {}),
        "train_set_sha256": train_fingerprint,
        "metrics": _jsonable(metrics or {}),
        "trainable_parameters": int(model.num_trainable()),
        "package_version": napari_medprompt.__version__,
    }


def save_checkpoint(path, model, *, config: dict | None = None, train_fingerprint: str | None = None,
                    metrics: dict | None = None, backbone_hash: str | None = None, preprocess=None,
                    extra: dict | None = None) -> Path:
    """Write ``path`` (.safetensors) plus ``path.json`` (metadata + ``weights_sha256``); returns the path.

    Refuses (:class:`CheckpointError`) when ``path`` or its sidecar exists: nothing is overwritten.
    """
    from safetensors.torch import save_file

    from napari_medprompt.io.atomic import atomic_write_text

    path = Path(path)
    if path.suffix != ".safetensors":
        path = path.with_suffix(".safetensors")
    side = path.with_name(path.name + ".json")
    if path.exists() or side.exists():
        raise CheckpointError(f"{path} already exists; nothing was overwritten (choose another file name)")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = checkpoint_metadata(model, config=config, train_fingerprint=train_fingerprint, metrics=metrics,
                               backbone_hash=backbone_hash, preprocess=preprocess)
    meta.update(_jsonable(extra or {}))
    text = json.dumps(meta, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(_method_tensors(model), tmp, metadata={"medprompt": text})
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        sha = file_sha256(tmp)
        try:
            os.link(tmp, path)  # atomic and exclusive: fails if the name was taken meanwhile
        except FileExistsError:
            raise CheckpointError(f"{path} already exists; nothing was overwritten (choose another file name)") from None
        except OSError:  # file systems without hard links
            if path.exists():
                raise CheckpointError(f"{path} already exists; nothing was overwritten") from None
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    atomic_write_text(side, json.dumps({**meta, "weights_file": path.name, "weights_sha256": sha}, indent=1))
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


def check_preprocessing(meta: dict, preprocess, path="checkpoint") -> None:
    """Refuse a caller whose preprocessing differs from the one the weights were trained with."""
    if preprocess is None:
        return
    stored = meta.get("preprocessing") or {}
    given = _jsonable(preprocess.to_dict() if hasattr(preprocess, "to_dict") else dict(preprocess))
    try:  # compare what the specs mean (records from older versions lack newer fields)
        from napari_medprompt.train.preprocess import Preprocess

        stored, given = Preprocess.from_dict(stored).to_dict(), Preprocess.from_dict(given).to_dict()
    except (ValueError, TypeError, KeyError):
        pass
    diff = sorted(k for k in set(stored) | set(given) if _norm(stored.get(k)) != _norm(given.get(k)))
    if diff:
        detail = "; ".join(f"{k}: trained with {stored.get(k)!r}, given {given.get(k)!r}" for k in diff)
        raise CheckpointError(f"{path} was trained with other preprocessing than the caller's ({detail}); "
                              "use the stored preprocessing (its 'preprocessing' metadata) for this model")


def _norm(v):
    if isinstance(v, float):
        return round(v, 9)
    if isinstance(v, (list, tuple)):
        return [_norm(x) for x in v]
    if isinstance(v, dict):
        return {k: _norm(x) for k, x in v.items()}
    return v


def check_weights_sha256(path, expected: str | None = None) -> str | None:
    """Compare the file's SHA-256 with ``expected`` or, without one, with its ``.json`` sidecar's
    ``weights_sha256`` (when there is one). Returns the expected hash checked, or None."""
    path = Path(path)
    if expected is None:
        side = path.with_name(path.name + ".json")
        if side.is_file():
            try:
                expected = json.loads(side.read_text()).get("weights_sha256")
            except (OSError, ValueError, AttributeError):
                expected = None
    if expected and file_sha256(path) != expected:
        raise CheckpointError(
            f"{path}: the weights file's SHA-256 differs from the one recorded when it was written "
            "(the file was changed or damaged after saving); refusing to load it"
        )
    return expected


def recorded_backbone(want: dict, device, error: Callable[[Exception], Exception]):
    """The backbone a checkpoint's or store version's record names (``want``: ``name``, ``pretrained``),
    built on ``device``; when it cannot be built, ``error(err)`` is raised from the builder's error."""
    from napari_medprompt.classify.backbones.registry import create_backbone

    try:
        return create_backbone(want["name"], want["pretrained"], device=device)
    except Exception as err:
        raise error(err) from err


def load_checkpoint(path, backbone=None, *, method: str | None = None, device="cpu", verify_hash: bool = True,
                    preprocess=None, expected_sha256: str | None = None):
    """Rebuild the trained method from ``path``. ``backbone``: reuse one (checked); else build it by name.

    ``method``: when given, refuse a checkpoint of another method. ``preprocess``: the caller's
    preprocessing (a ``Preprocess`` or its dict), refused when it differs from the stored one.
    ``expected_sha256``: the weights file's hash (else the sidecar's, when there is one).
    """
    from safetensors.torch import load_file

    from napari_medprompt.classify.base import method_class

    path = Path(path)
    meta = read_metadata(path)
    check_weights_sha256(path, expected_sha256)
    if method is not None and meta["method"] != method:
        raise CheckpointError(f"{path} holds a {meta['method']!r} adapter, not {method!r}")
    check_preprocessing(meta, preprocess, path)
    if backbone is None:
        want = meta["backbone"]
        backbone = recorded_backbone(want, device, lambda err: CheckpointError(
            f"{path} needs backbone {want['name']!r} (weights {want['pretrained']!r}), which cannot be "
            f"loaded here: {type(err).__name__}: {err}"))
    check_backbone(meta, backbone, path, verify_hash=verify_hash)
    try:
        cls = method_class(meta["method"])
    except (KeyError, ImportError) as err:
        raise CheckpointError(f"{path}: method {meta['method']!r} is not available here: {err}") from err
    try:
        model = cls(backbone, meta["classes"], **meta.get("method_config", {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its {meta['method']!r} options do not fit this version: {err}") from err
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
    if meta.get("preprocessing"):
        from napari_medprompt.train.preprocess import Preprocess

        try:
            model.preprocess = Preprocess.from_dict(meta["preprocessing"])
        except (ValueError, TypeError) as err:
            raise CheckpointError(f"{path}: its preprocessing record cannot be read: {err}") from err
    return model
