"""napari-medprompt: prompt-based segmentation and few-shot learning for radiology images in napari.

Importing this package loads no Qt, napari or torch; the subpackages import them lazily.
"""

__version__ = "0.1.0"
