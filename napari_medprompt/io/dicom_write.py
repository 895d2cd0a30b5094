"""Write a volume as a plain (uncompressed) DICOM CT/MR series, one file per slice.

Used for the synthetic phantom (so DICOM workflows such as SEG export can be tried without patient
data), by the I/O benchmark and by the tests. The patient module holds placeholders only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medprompt.io.volume import Volume

RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_dicom_series(
    vol: Volume,
    folder: str | Path,
    series_description: str = "MedPrompt synthetic series",
    rescale_intercept: int = -1024,
    file_names: list[str] | None = None,
    uid_seed: str | None = None,
) -> list[Path]:
    """Write ``vol`` (3D, integer or HU) as single-frame DICOM files; returns their paths in
    slice order. Stored values are ``data - rescale_intercept`` as unsigned 16-bit."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    if not vol.is_3d or vol.is_rgb:
        raise ValueError("write_dicom_series needs a 3D greyscale volume")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = np.asarray(vol.data)
    stored = np.rint(data.astype(np.float64) - rescale_intercept) if data.dtype.kind == "f" else (
        data.astype(np.int64) - rescale_intercept)
    if stored.min() < 0 or stored.max() > 65535:
        raise ValueError("values do not fit unsigned 16-bit storage with this rescale intercept")
    stored = stored.astype(np.uint16)
    lps = RAS_TO_LPS @ np.asarray(vol.affine, dtype=float)
    col_vec, row_vec, slice_vec = lps[:3, 0], lps[:3, 1], lps[:3, 2]
    dx, dy = np.linalg.norm(col_vec), np.linalg.norm(row_vec)
    iop = [*(col_vec / dx), *(row_vec / dy)]
    sop_class = CTImageStorage if vol.modality == "CT" else MRImageStorage

    def uid(suffix: str):
        return generate_uid(entropy_srcs=[uid_seed, suffix]) if uid_seed else generate_uid()

    study_uid, series_uid, frame_uid = uid("study"), uid("series"), uid("frame")
    paths = []
    for k in range(data.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = uid(f"sop{k}")
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        name = file_names[k] if file_names else f"IM{k:05d}.dcm"
        ds = FileDataset(str(folder / name), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "PHANTOM^", "PHANTOM", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate = ds.SeriesDate = "20000101"
        ds.StudyTime = ds.SeriesTime = "000000"
        ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
        ds.Modality = vol.modality if vol.modality in ("CT", "MR") else "CT"
        ds.Manufacturer = "napari-medprompt"
        ds.SeriesDescription = series_description
        ds.SeriesNumber, ds.InstanceNumber = 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PositionReferenceIndicator = ""
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in iop]
        pos = lps[:3, 3] + k * slice_vec
        ds.ImagePositionPatient = [f"{v:.4f}" for v in pos]
        ds.SliceLocation = f"{pos[2]:.4f}"
        ds.SliceThickness = f"{np.linalg.norm(slice_vec):.4f}"
        ds.PixelSpacing = [f"{dy:.6f}", f"{dx:.6f}"]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = str(rescale_intercept), "1", "HU"
        ds.PixelData = stored[k].tobytes()
        pydicom.dcmwrite(ds.filename, ds, enforce_file_format=True)
        paths.append(Path(ds.filename))
    return paths
