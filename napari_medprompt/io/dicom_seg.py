"""DICOM SEG export of a label map drawn on a DICOM series (highdicom), and reading it back.

The SEG references the source series (study, series and SOP instance UIDs, frame of reference),
so a PACS or viewer places it on the original images. Each label id becomes one segment: its name
is the segment label, its colour the display colour, and its id is kept in the TrackingID
(``"label <id>"``) so the same ids come back on reading. Patient and study attributes are copied
from the source images by highdicom: that is what a SEG must carry, and it is written only when the
user asks for this export.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from napari_medprompt.io.atomic import atomic_write
from napari_medprompt.io.errors import ImageReadError, LabelWriteError
from napari_medprompt.io.labels_io import rgb255

_TRACK = re.compile(r"^label (\d+)$")


def _source_datasets(source_files):
    import pydicom

    out = []
    for f in source_files:
        try:
            out.append(pydicom.dcmread(str(f), stop_before_pixels=True))
        except FileNotFoundError as e:
            raise LabelWriteError(f"source DICOM file {f} is gone; DICOM SEG needs the original series") from e
    return out


def export_dicom_seg(
    path: str | Path,
    labels: np.ndarray,
    source_files: list[str | Path],
    label_info: dict[int, dict] | None = None,
    series_description: str = "MedPrompt segmentation",
    algorithm_type: str = "SEMIAUTOMATIC",
) -> Path:
    """Write ``labels`` (z, y, x, in the order of ``source_files``) as a DICOM SEG file."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    import napari_medprompt

    path = Path(path)
    labels = np.asarray(labels)
    sources = _source_datasets(source_files)
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in sources):
        raise LabelWriteError(
            f"{path}: DICOM SEG export of a multi-frame (enhanced) image is not supported; "
            "save the label map as NIfTI (.nii.gz) instead; nothing was written"
        )
    expected = (len(sources), int(sources[0].Rows), int(sources[0].Columns)) if sources else None
    if expected is None or labels.shape != expected:
        raise LabelWriteError(
            f"{path}: label map shape {labels.shape} does not match the source series {expected}; "
            "nothing was written"
        )
    missing_uids = [kw for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")
                    if not str(sources[0].get(kw, "") or "")]
    if missing_uids:
        raise LabelWriteError(
            f"{path}: the source series has no {', '.join(missing_uids)} (anonymised without UIDs), "
            "so a DICOM SEG cannot reference it; save the label map as NIfTI instead"
        )
    ids = [int(i) for i in np.unique(labels) if i != 0]
    if not ids:
        raise LabelWriteError(f"{path}: the label map is empty; a DICOM SEG needs at least one segment")
    info = {int(k): v for k, v in (label_info or {}).items()}
    segment_map = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    descriptions = []
    for number, label_id in enumerate(ids, start=1):
        segment_map[label_id] = number
        d = info.get(label_id, {})
        color = rgb255(d.get("color"), label_id)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=str(d.get("name", f"label {label_id}"))[:64],
            segmented_property_category=codes.SCT.AnatomicalStructure,
            segmented_property_type=codes.SCT.Organ,
            algorithm_type=algorithm_type,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name="napari-medprompt", version=napari_medprompt.__version__,
                family=codes.cid7162.ArtificialIntelligence,
            ) if algorithm_type != "MANUAL" else None,
            tracking_uid=hd.UID(),
            tracking_id=f"label {label_id}",
            display_color=hd.color.CIELabColor.from_rgb(*[int(c) for c in color[:3]]),
        ))
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=segment_map[labels],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=int(sources[0].get("SeriesNumber", 0) or 0) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="napari-medprompt",
        manufacturer_model_name="napari-medprompt",
        software_versions=napari_medprompt.__version__,
        device_serial_number="0",
        series_description=series_description,
    )
    with atomic_write(path, "wb") as f:
        seg.save_as(f, enforce_file_format=True)
    return path


def read_dicom_seg(path: str | Path, source_files: list[str | Path]) -> tuple[np.ndarray, dict[int, dict]]:
    """Labels (z, y, x) on the grid of ``source_files`` and the label info, from a DICOM SEG."""
    import highdicom as hd

    path = Path(path)
    try:
        seg = hd.seg.segread(str(path))
    except Exception as e:
        raise ImageReadError(path, f"not a readable DICOM SEG ({e})") from e
    uids = [str(ds.SOPInstanceUID) for ds in _source_datasets(source_files)]
    numbers = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, combine_segments=True, relabel=False,
        assert_missing_frames_are_empty=True,
    )
    to_id = np.arange(int(max(seg.segment_numbers, default=0)) + 1, dtype=np.int64)
    info: dict[int, dict] = {}
    for number in seg.segment_numbers:
        desc = seg.get_segment_description(number)
        m = _TRACK.match(str(desc.tracking_id or ""))
        label_id = int(m.group(1)) if m else int(number)
        to_id[number] = label_id
        entry = {"name": str(desc.segment_label)}
        color = desc.get("RecommendedDisplayCIELabValue")
        if color is not None:
            entry["color"] = list(hd.color.CIELabColor.from_dicom_value(color).to_rgb())
        info[label_id] = entry
    labels = to_id[numbers]
    dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
    return labels.astype(dtype), info
