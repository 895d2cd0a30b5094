"""Load a trained CLIPSeg adapter (VLSM-Adapter or decoder-only) from a checkpoint file or a model
store version, onto the same CLIPSeg weights it was trained on (checked by state hash).

Files and versions are written by the training loop (:mod:`napari_medprompt.train.loop`) through the
usual :func:`~napari_medprompt.train.checkpoints.save_checkpoint` / :class:`ModelStore`: adapter tensors
only (plus the decoder for ``clipseg-decoder``), with the base model's name, weights tag and hash.
"""

from __future__ import annotations

from pathlib import Path

from napari_medprompt.seg_adapters.clipseg import SegAdapterError, load_clipseg
from napari_medprompt.seg_adapters.registry import BASE_NAME, available_seg_methods, seg_method_info


def load_seg_adapter(path=None, *, store=None, version: str | None = None, base=None, device="cpu",
                     verify_hash: bool = True):
    """The trained segmentation model in ``path`` (or ``store`` at ``version``, default the active one).

    ``base``: reuse a loaded :class:`~.clipseg.CLIPSegBase` (its hash is checked); else the weights
    named in the file are loaded. Raises :class:`SegAdapterError` with the reason for a file of
    another kind (a classification adapter, another base model, other base weights)."""
    import importlib

    from safetensors.torch import load_file

    from napari_medprompt.train.checkpoints import check_weights_sha256, read_metadata
    from napari_medprompt.train.preprocess import Preprocess

    if store is not None:
        from napari_medprompt.train.store import ModelStore

        st = store if isinstance(store, ModelStore) else ModelStore(store)
        version = version or st.active
        if version is None:
            raise SegAdapterError(f"model store {st.root} has no active version")
        path = st.weights_path(version)
    if path is None:
        raise SegAdapterError("give a checkpoint path or a model store")
    path = Path(path)
    meta = read_metadata(path)
    check_weights_sha256(path)
    method = meta.get("method")
    if method not in available_seg_methods():
        raise SegAdapterError(f"{path} holds a {method!r} model, not a CLIPSeg segmentation adapter "
                              f"({', '.join(sorted(available_seg_methods()))})")
    want = meta.get("backbone") or {}
    if want.get("name") != BASE_NAME:
        raise SegAdapterError(f"{path} is an adapter for base model {want.get('name')!r}, not {BASE_NAME}")
    if base is None:
        base = load_clipseg(want.get("pretrained") or "random", device=device)
    elif base.name != BASE_NAME:
        raise SegAdapterError(f"{path} adapts {BASE_NAME}; the given base model is {base.name!r}")
    if verify_hash and want.get("state_hash") and want["state_hash"] != base.state_hash():
        raise SegAdapterError(f"{path} was trained on other {BASE_NAME} weights ({want.get('pretrained')!r}, state hash "
                              "differs); load the weights it was trained with")
    info = seg_method_info(method)
    module, _, attr = info.target.partition(":")
    cls = getattr(importlib.import_module(module), attr)
    model = cls(base, meta.get("classes") or [], method=method, **(meta.get("method_config") or {}))
    tensors = load_file(str(path), device="cpu")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [k for k in missing if not k.startswith("backbone.")]
    if missing or unexpected:
        raise SegAdapterError(f"{path}: tensors do not match a {method!r} model (missing {missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    model.to(device).eval()
    model.checkpoint_metadata = meta
    if meta.get("preprocessing"):
        model.preprocess = Preprocess.from_dict(meta["preprocessing"])
    if store is not None:
        model.store_version = version
    return model
