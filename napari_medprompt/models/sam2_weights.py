"""SAM 2 / SAM 2.1 models: names, configs, checkpoints, safe loading.

``SAM2_MODELS`` maps our model names to the ``sam2`` package's Hydra config, the Hugging Face repository
and checkpoint file Meta publishes. ``resolve_checkpoint`` turns a model name (and optionally a local
file) into a checkpoint path, downloading into the shared cache on first use; ``build_model`` builds the
network through ``sam2``'s own builder and loads the checkpoint with ``torch.load(weights_only=True)``.

MedSAM2 (``MEDSAM2_MODELS``): the checkpoints of ``wanglab/MedSAM2`` (``MedSAM2_latest.pt`` and its
siblings) are SAM2.1-hiera-tiny fine-tuned at 512 px on medical images. They build from the same
``sam2.1_hiera_t.yaml`` with ``image_size=512`` (and the memory attention's RoPE grid at 32 x 32, as in
MedSAM2's ``sam2.1_hiera_t512.yaml``), load through the same cache and safe loader, and carry the window
convention they were trained with (``"medsam2"``: CT level 40 / width 400, MR 0.5-99.5 percentiles; see
:mod:`napari_medprompt.imaging.window`). Their preprocessing otherwise matches SAM2's own transforms:
the windowed slice scaled to [0, 1], replicated to RGB, resized (square) to 512 and normalised with the
ImageNet mean/std. A file that is not a MedSAM2 checkpoint is refused with a message that says what it is.

Random weights (tests, benchmarks, machines without the checkpoint): pass ``checkpoint="random"`` or set
``MEDPROMPT_SAM2_RANDOM_WEIGHTS=1``. The network is built from the real config with a fixed seed (so a
disk embedding cache stays valid between runs) and the result says ``random_weights=True``; a warning
is logged. Nothing here imports torch or sam2 at module import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from napari_medprompt.models.cache import ProgressCallback, WeightsUnavailable, fetch_hf_file

log = logging.getLogger(__name__)

RANDOM = "random"
RANDOM_ENV = "MEDPROMPT_SAM2_RANDOM_WEIGHTS"
RANDOM_SEED = 0


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used (truncated, corrupt, not SAM2, another model size)."""


@dataclass(frozen=True)
class Sam2ModelSpec:
    name: str  # our name, e.g. "sam2.1-hiera-tiny"
    config: str  # sam2 package config, e.g. "configs/sam2.1/sam2.1_hiera_t.yaml"
    repo_id: str  # Hugging Face repository
    filename: str  # checkpoint file in that repository
    sha256: str | None = None  # published hash of the file, where known
    hydra_overrides: tuple[str, ...] = ()  # changes to the sam2 config (MedSAM2: 512 px)
    image_size: int = 1024  # model input size (square)
    window_convention: str | None = None  # the window the checkpoint was trained with, if any
    family: str = "SAM2"  # "SAM2" (Meta) or "MedSAM2"


def _spec(version: str, size: str, short: str) -> Sam2ModelSpec:
    stem = f"{version}_hiera_{size.replace('-', '_')}"
    return Sam2ModelSpec(
        name=f"{version}-hiera-{size}",
        config=f"configs/{version}/{version}_hiera_{short}.yaml",
        repo_id=f"facebook/{version}-hiera-{size}",
        filename=f"{stem}.pt",
        # Meta publishes no checksums beside these files; the Hugging Face LFS hashes were not
        # available offline when this table was written, so downloads are not hash-checked.
        sha256=None,
    )


SAM2_MODELS: dict[str, Sam2ModelSpec] = {
    s.name: s
    for s in (
        _spec(v, size, short)
        for v in ("sam2.1", "sam2")
        for size, short in (("tiny", "t"), ("small", "s"), ("base-plus", "b+"), ("large", "l"))
    )
}


#: MedSAM2 (bowang-lab/MedSAM2, files on https://huggingface.co/wanglab/MedSAM2): SAM2.1-hiera-tiny at 512 px.
MEDSAM2_REPO = "wanglab/MedSAM2"
MEDSAM2_OVERRIDES = (
    "++model.image_size=512",
    "++model.memory_attention.layer.self_attention.feat_sizes=[32,32]",
    "++model.memory_attention.layer.cross_attention.feat_sizes=[32,32]",
)
MEDSAM2_MODELS: dict[str, Sam2ModelSpec] = {
    name: Sam2ModelSpec(
        name=name,
        config="configs/sam2.1/sam2.1_hiera_t.yaml",
        repo_id=MEDSAM2_REPO,
        filename=filename,
        sha256=None,  # no published checksums; the LFS hashes were not retrievable offline
        hydra_overrides=MEDSAM2_OVERRIDES,
        image_size=512,
        window_convention="medsam2",
        family="MedSAM2",
    )
    for name, filename in (
        ("medsam2-latest", "MedSAM2_latest.pt"),
        ("medsam2-2411", "MedSAM2_2411.pt"),
        ("medsam2-ct-lesion", "MedSAM2_CTLesion.pt"),
        ("medsam2-mri-liver-lesion", "MedSAM2_MRI_LiverLesion.pt"),
        ("medsam2-us-heart", "MedSAM2_US_Heart.pt"),
    )
}


def model_spec(model: str) -> Sam2ModelSpec:
    spec = SAM2_MODELS.get(model) or MEDSAM2_MODELS.get(model)
    if spec is None:
        raise ValueError(
            f"unknown SAM2 model {model!r}; choose one of {', '.join([*SAM2_MODELS, *MEDSAM2_MODELS])}"
        )
    return spec


def wants_random_weights(checkpoint: str | os.PathLike | None) -> bool:
    """True for ``checkpoint="random"``, or no checkpoint while MEDPROMPT_SAM2_RANDOM_WEIGHTS is set."""
    if isinstance(checkpoint, str) and checkpoint == RANDOM:
        return True
    if checkpoint is None:
        return os.environ.get(RANDOM_ENV, "0").lower() not in ("0", "", "false", "no")
    return False


def resolve_checkpoint(
    model: str,
    checkpoint: str | os.PathLike | None = None,
    progress: ProgressCallback | None = None,
) -> Path | None:
    """Local path of the checkpoint for ``model``; ``None`` means random weights.

    ``checkpoint`` may be a local file (always works offline), ``"random"``, or ``None`` (the
    published file from Hugging Face, from the cache or downloaded with ``progress`` callbacks).
    Raises ``WeightsUnavailable`` with instructions when the file cannot be had.
    """
    spec = model_spec(model)
    if wants_random_weights(checkpoint):
        return None
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if not path.is_file():
            raise WeightsUnavailable(
                f"SAM2 checkpoint {path} does not exist (or is not a file). Choose the downloaded "
                f"{spec.filename} for {model}, or leave the checkpoint empty to download it from "
                f"https://huggingface.co/{spec.repo_id}."
            )
        return path
    return fetch_hf_file(spec.repo_id, spec.filename, sha256=spec.sha256, progress=progress)


def load_state_dict(path: str | os.PathLike) -> dict:
    """The ``model`` state dict of a SAM2 checkpoint file, loaded safely (``weights_only=True``)."""
    return _load_checkpoint(path)["model"]


def _load_checkpoint(path: str | os.PathLike, family: str = "SAM2") -> dict:
    """A SAM2 checkpoint file as a dict with a ``model`` state dict, loaded with ``weights_only=True``."""
    import torch

    path = Path(path)
    size = path.stat().st_size if path.exists() else 0
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"SAM2 checkpoint {path} does not exist") from None
    except Exception as err:  # truncated zip, not a torch file, pickled objects refused ...
        raise CheckpointError(
            f"cannot read the SAM2 checkpoint {path} ({size:,} bytes): {type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}. The file is truncated, corrupt or not "
            "a PyTorch checkpoint (an interrupted download?). Delete it and download it again, or "
            "choose another file."
        ) from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        what = _what_checkpoint(ckpt)
        if family == "MedSAM2":
            raise CheckpointError(
                f"{path} is not a MedSAM2 checkpoint{what}: MedSAM2's files (MedSAM2_latest.pt and its "
                f"siblings from {MEDSAM2_REPO}) hold a SAM2.1-hiera-tiny state dict under 'model'; found {found}"
            )
        raise CheckpointError(
            f"{path} is not a SAM2 checkpoint{what}: expected a dict with a 'model' state dict "
            f"(as Meta's sam2*.pt files), found {found}"
        )
    return ckpt


def _what_checkpoint(ckpt) -> str:
    """A hint at what a foreign checkpoint is (MedSAM / SAM ViT state dicts are common mix-ups)."""
    if isinstance(ckpt, dict) and any(str(k).startswith("image_encoder.blocks.") for k in ckpt):
        return " (it looks like a SAM / MedSAM ViT checkpoint, e.g. medsam_vit_b.pth, which is another model)"
    return ""


def build_model(
    model: str,
    checkpoint: Path | None,
    device: str = "cpu",
    *,
    hydra_overrides: Sequence[str] = (),
):
    """Build ``model`` with ``sam2``'s builder and load ``checkpoint`` (``None``: random weights).

    Returns ``(net, random_weights)``. ``net`` is a ``SAM2VideoPredictor`` (a ``SAM2Base``), so one
    network serves both the image predictor and memory-mode propagation. Built on the CPU, loaded,
    then moved to ``device``.
    """
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    spec = model_spec(model)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)  # random weights are reproducible (disk caches stay valid)
        net = build_sam2_video_predictor(
            spec.config, ckpt_path=None, device="cpu",
            hydra_overrides_extra=[*spec.hydra_overrides, *hydra_overrides],
        )
    random_weights = checkpoint is None
    if random_weights:
        log.warning(
            "SAM2 %s runs with RANDOM weights (no checkpoint): its masks are meaningless; use it for "
            "tests and timing only",
            model,
        )
    else:
        ckpt = _load_checkpoint(checkpoint, spec.family)
        sd = ckpt["model"]
        if ckpt.get("random_init"):  # written by write_random_checkpoint: say so everywhere
            random_weights = True
            log.warning(
                "SAM2 checkpoint %s holds RANDOM weights (written for tests/benchmarks): its masks "
                "are meaningless",
                checkpoint,
            )
        try:
            missing, unexpected = net.load_state_dict(sd, strict=False)
        except RuntimeError as err:  # same keys, other shapes: another model size
            raise CheckpointError(
                f"{checkpoint} does not fit {spec.family} model {model} ({spec.config}): "
                f"{str(err).splitlines()[-1].strip()} Is it the checkpoint of another SAM2 size or "
                "version?" + _family_hint(spec)
            ) from err
        if missing or unexpected:
            raise CheckpointError(
                f"{checkpoint} does not fit {spec.family} model {model} ({spec.config}): {len(missing)} "
                f"missing keys (e.g. {', '.join(missing[:3]) or '-'}) and {len(unexpected)} "
                f"unexpected keys (e.g. {', '.join(unexpected[:3]) or '-'}). Is it the checkpoint "
                "of another SAM2 size or version?" + _family_hint(spec)
            )
        log.info("loaded SAM2 checkpoint %s", checkpoint)
    net = net.to(device).eval()
    return net, random_weights


def _family_hint(spec: Sam2ModelSpec) -> str:
    if spec.family == "MedSAM2":
        return (f" It is not a MedSAM2 checkpoint (MedSAM2_*.pt from {MEDSAM2_REPO}: SAM2.1-hiera-tiny, "
                "512 px).")
    return ""


def write_random_checkpoint(model: str, path: str | os.PathLike) -> Path:
    """Write a checkpoint in SAM2's format ({"model": state_dict}) with random weights.

    For tests and benchmarks on machines without the published files; the file loads through
    ``build_model`` exactly like a downloaded one, and its ``random_init`` flag makes the loaded
    model report ``random_weights=True``.
    """
    import torch

    net, _ = build_model(model, None, "cpu")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if model_spec(model).family == "MedSAM2":
        # as MedSAM2's trainer (sam2's training/trainer.py) writes them: the state dict under "model"
        # beside the epoch / step counters it saved (the optimizer state is left out here)
        ckpt = {"model": net.state_dict(), "epoch": 0, "steps": {"train": 0}, "random_init": True}
    else:
        ckpt = {"model": net.state_dict(), "random_init": True}
    torch.save(ckpt, path)
    return path
