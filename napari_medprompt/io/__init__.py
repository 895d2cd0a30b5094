"""Reading and writing radiology images without napari: NIfTI, DICOM, NRRD/MHA, 2D images."""

from napari_medprompt.io.volume import Volume

__all__ = ["Volume"]
