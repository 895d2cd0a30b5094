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
