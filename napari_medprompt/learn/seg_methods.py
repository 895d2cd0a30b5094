"""The segmentation-adapter methods of the registry for the Learn dock (torch-free): their family (SAM2 or
CLIPSeg), one row each for a chooser, and whether the base model's published weights are already in the
weight cache (else a run builds the base with random weights)."""

from __future__ import annotations

from dataclasses import dataclass

SAM2_FAMILY, CLIPSEG_FAMILY = "sam2", "clipseg"
DEFAULT_SAM2_BASE = "sam2.1-hiera-tiny"


def family_of(method: str) -> str:
    """``"sam2"`` for the SAM2 adapter methods, ``"clipseg"`` for VLSM-Adapter / CLIPSeg decoder."""
    return SAM2_FAMILY if method.startswith("sam2") else CLIPSEG_FAMILY


@dataclass
class SegMethodRow:
    name: str
    description: str
    family: str
    fast_on_cpu: bool  # cached encoder outputs: only a small part runs per step
    base: str  # the default base model name


def seg_method_rows() -> list[SegMethodRow]:
    """The segmentation methods of the registry (torch-free), in registry order."""
    from napari_medprompt.seg_adapters.registry import BASE_NAME, available_seg_methods

    out = []
    for name, info in available_seg_methods().items():
        fam = family_of(name)
        out.append(SegMethodRow(name, info.description, fam, bool(info.cached_features),
                                DEFAULT_SAM2_BASE if fam == SAM2_FAMILY else BASE_NAME))
    return out


def cached_base_weights(method: str, backbone: str | None = None) -> str | None:
    """The local file of the base model's published weights when it is already in the weight cache
    (no network access, no hashing), else None: the run then builds the base with random weights."""
    from napari_medprompt.models.cache import fetch_hf_file

    try:
        if family_of(method) == SAM2_FAMILY:
            from napari_medprompt.models.sam2_weights import model_spec

            spec = model_spec(backbone or DEFAULT_SAM2_BASE)
            return str(fetch_hf_file(spec.repo_id, spec.filename, local_files_only=True))
        from napari_medprompt.seg_adapters.registry import CLIPSEG_REPO

        for name in ("model.safetensors", "pytorch_model.bin"):
            try:
                return str(fetch_hf_file(CLIPSEG_REPO, name, local_files_only=True))
            except Exception:
                continue
    except Exception:  # not cached (or no hub client): random weights, said everywhere
        return None
    return None

