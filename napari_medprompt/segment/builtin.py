"""Built-in segmentation backends (names and import paths only)."""

from napari_medprompt.segment.registry import register_segmenter

register_segmenter(
    "classic",
    "napari_medprompt.segment.classic:ClassicSegmenter",
    "Region growing / random walker (scikit-image): no weights, works offline",
)
for _model in (
    "sam2.1-hiera-tiny",
    "sam2.1-hiera-small",
    "sam2.1-hiera-base-plus",
    "sam2.1-hiera-large",
    "sam2-hiera-tiny",
    "sam2-hiera-small",
    "sam2-hiera-base-plus",
    "sam2-hiera-large",
):
    register_segmenter(
        _model,
        "napari_medprompt.segment.sam2_backend:Sam2Segmenter",
        f"SAM2 ({_model})",
        needs_weights=True,
        model=_model,
    )

# MedSAM2 (wanglab/MedSAM2): SAM2.1-hiera-tiny fine-tuned at 512 px, with its window convention
from napari_medprompt.models.sam2_weights import MEDSAM2_MODELS as _MEDSAM2  # noqa: E402 (torch-free)

for _model, _spec in _MEDSAM2.items():
    register_segmenter(
        _model,
        "napari_medprompt.segment.sam2_backend:Sam2Segmenter",
        f"MedSAM2 ({_spec.filename}, 512 px, MedSAM window)",
        needs_weights=True,
        model=_model,
    )
