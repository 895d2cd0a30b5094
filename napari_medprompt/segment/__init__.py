"""Interactive segmentation: the Segmenter protocol, its backends (SAM2, classic) and propagation.

Qt-free. Backends are created through the registry so that importing this package loads no torch.
"""

from napari_medprompt.segment.base import (
    PropagationSettings,
    Prompt,
    PromptError,
    Segmenter,
    SliceResult,
)
from napari_medprompt.segment.registry import (
    available_segmenters,
    create_segmenter,
    register_segmenter,
)

__all__ = [
    "PropagationSettings",
    "Prompt",
    "PromptError",
    "Segmenter",
    "SliceResult",
    "available_segmenters",
    "create_segmenter",
    "register_segmenter",
]
