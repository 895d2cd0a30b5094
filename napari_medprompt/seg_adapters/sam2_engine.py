"""SAM2 adapters as model choices of the segmentation engine: save, load, switch, store versions.

- :func:`save_adapter` writes the trained tensors (adapters, and the decoder copy when it trained)
  as a napari-medprompt ``.safetensors`` checkpoint (:mod:`napari_medprompt.train.checkpoints`) whose
  metadata names the base model, the SHA-256 of its checkpoint file and the hash of its state;
  ``ModelStore.add(model, preprocess=model.preprocess)`` versions the same thing.
- :func:`load_adapter` rebuilds the adapted model on a base model, refusing (:class:`AdapterMismatch`)
  an adapter trained on another SAM2 model or another checkpoint of it.
- :func:`use_adapter` puts an adapter into a :class:`~napari_medprompt.segment.sam2_backend.Sam2Segmenter`
  (hooks in its image encoder, the trained decoder in place of the base one, a new embedding-cache
  signature so no base embedding is served); ``use_adapter(seg, None)`` is the one call back to the
  base model. :func:`use_store_version` does the same from a model-store version.
"""

from __future__ import annotations

import logging
from pathlib import Path

from napari_medprompt.seg_adapters.sam2_model import (
    SAM2_METHODS,
    AdapterMismatch,
    Sam2AdapterModel,
    Sam2Base,
)

log = logging.getLogger(__name__)


def save_adapter(model: Sam2AdapterModel, path, *, config: dict | None = None, metrics: dict | None = None,
                 data_fingerprint: str | None = None) -> Path:
    """Write the adapter (never over an existing file); returns the path written."""
    from napari_medprompt.train.checkpoints import save_checkpoint

    return save_checkpoint(path, model, config=config, metrics=metrics, train_fingerprint=data_fingerprint,
                           preprocess=model.preprocess, extra={"sam2_base": model.backbone.describe()})


def check_base(meta: dict, base: Sam2Base, where="adapter") -> None:
    """Refuse an adapter whose base model or base checkpoint differs from ``base``."""
    want = meta.get("backbone") or {}
    desc = meta.get("sam2_base") or {}
    if want.get("name") != base.name:
        raise AdapterMismatch(
            f"{where} was trained on SAM2 model {want.get('name')!r}, but the current model is {base.name!r}; "
            f"choose {want.get('name')!r} (with the checkpoint it was trained on) to use it")
    if desc.get("image_size") not in (None, base.image_size):
        raise AdapterMismatch(f"{where} was trained at {desc.get('image_size')} px; the current {base.name} runs "
                              f"at {base.image_size} px")
    if want.get("state_hash") and want["state_hash"] != base.state_hash():
        had = desc.get("checkpoint") or ("random weights" if want.get("random_weights") else "another file")
        now = base.checkpoint or "random weights"
        raise AdapterMismatch(
            f"{where} was trained on another checkpoint of {base.name} ({had}, weights hash "
            f"{want['state_hash'][:12]}…) than the current one ({now}, hash {base.state_hash()[:12]}…); "
            "load the checkpoint it was trained on to use it")


def load_adapter(path, base: Sam2Base, *, expected_sha256: str | None = None, device="cpu") -> Sam2AdapterModel:
    """The adapted model stored in ``path`` on ``base`` (checked: model, checkpoint, weights hash)."""
    from safetensors.torch import load_file

    from napari_medprompt.train.checkpoints import CheckpointError, check_weights_sha256, read_metadata

    path = Path(path)
    meta = read_metadata(path)
    if meta.get("method") not in SAM2_METHODS:
        raise CheckpointError(f"{path} holds a {meta.get('method')!r} model, not a SAM2 adapter "
                              f"({', '.join(SAM2_METHODS)})")
    check_weights_sha256(path, expected_sha256)
    check_base(meta, base, str(path))
    try:
        model = Sam2AdapterModel(base, meta["method"], **(meta.get("method_config") or {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path}: its options do not fit this version: {err}") from err
    tensors = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        model.detach_adapters()
        raise CheckpointError(f"{path}: tensors do not match a {meta['method']!r} adapter "
                              f"(missing {missing[:4]}, unexpected {unexpected[:4]})")
    model.checkpoint_metadata = meta
    return model.to(device).train(False)


def _engine_base(seg) -> Sam2Base:
    base = getattr(seg, "_sam2_base", None)
    if base is None:
        use_adapter(seg, None)
        base = Sam2Base(seg.net, seg.model_name, seg.checkpoint_path, seg.random_weights)
        base.state_hash()
        seg._sam2_base = base
    return base


def use_adapter(seg, adapter=None, *, expected_sha256: str | None = None) -> dict | None:
    """Use ``adapter`` (a file path or a :class:`Sam2AdapterModel` on this engine's network) in the
    engine ``seg``; None switches back to the base model. Returns the adapter's description (None for
    the base). A mismatching adapter raises :class:`AdapterMismatch` and leaves the engine as it was.
    """
    lock = getattr(seg, "_lock", None)
    if lock is None:
        import contextlib

        lock = contextlib.nullcontext()
    with lock:
        current = getattr(seg, "_sam2_adapter", None)
        if adapter is None:
            if current is not None:
                current.detach_adapters()
                seg.net.sam_mask_decoder = seg._sam2_base_decoder
                seg._sam2_adapter = None
                seg.adapter_info = None
                _refresh(seg, seg._sam2_base_weights_id)
            return None
        if isinstance(adapter, Sam2AdapterModel):
            model, source, sha = adapter, "memory", None
            if model.backbone.net is not seg.net:
                raise AdapterMismatch("this adapted model was built on another network than the engine's; "
                                      "save it and load the file instead")
        else:
            base = _engine_base(seg)
            model = load_adapter(adapter, base, expected_sha256=expected_sha256, device=seg.device)
            from napari_medprompt.models.cache import sha256_file

            source, sha = str(adapter), sha256_file(adapter)
        if current is not None and current is not model:
            current.detach_adapters()
        if getattr(seg, "_sam2_adapter", None) is None:
            seg._sam2_base_decoder = seg.net.sam_mask_decoder
            seg._sam2_base_weights_id = seg.weights_id
        model.attach_adapters()
        model.train(False)
        seg.net.sam_mask_decoder = model.decoder if model.method.decoder else seg._sam2_base_decoder
        seg._sam2_adapter = model
        meta = getattr(model, "checkpoint_metadata", None) or {}
        seg.adapter_info = {"method": model.name, "source": source, "sha256": sha,
                            "store_version": getattr(model, "store_version", None),
                            "trainable_parameters": model.num_trainable(),
                            "metrics": meta.get("metrics")}
        tag = sha[:16] if sha else f"mem{id(model):x}"
        _refresh(seg, f"{seg._sam2_base_weights_id}+{model.name}-{tag}")
        log.info("SAM2 engine now uses adapter %s (%s)", model.name, source)
        return seg.adapter_info


def _refresh(seg, weights_id: str) -> None:
    """New weights: drop the CPU decoder copies and serve embeddings under a new cache signature."""
    seg.weights_id = weights_id
    for attr in ("_decoder_cpu", "_projections"):  # decoder copies / per-slice decoder projections
        if hasattr(seg, attr):
            setattr(seg, attr, {})
    if getattr(seg, "_image", None) is not None:
        seg._open_cache()


def use_store_version(seg, store, version: str | None = None) -> dict:
    """Use a model-store version (default: the active one) in the engine; see :func:`use_adapter`."""
    rec = store.get(version)
    if rec.get("method") not in SAM2_METHODS:
        raise AdapterMismatch(f"model store version {rec['id']} is a {rec.get('method')!r} model, not a SAM2 adapter")
    info = use_adapter(seg, store.weights_path(rec["id"]), expected_sha256=rec.get("weights_sha256"))
    seg._sam2_adapter.store_version = rec["id"]
    info["store_version"] = rec["id"]
    return info
