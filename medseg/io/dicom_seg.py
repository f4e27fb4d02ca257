"""DICOM SEG for a segmented DICOM series (highdicom): what a PACS, OHIF or 3D Slicer shows over the source images.

One SEG instance per case, in a new series of the source study: one segment per foreground class, each frame
referencing the source instance it lies on (found by the instance's own position, not by file order), medseg named
as the algorithm. The label map is the one written as ``<case>_seg.nii.gz``, on the same grid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg import __version__
from medseg.errors import MedsegError, fail
from medseg.io.geometry import LPS_TO_RAS, Geometry

SERIES_NUMBER = 9901  # medseg's SEG series within the study, out of the way of the scanner's own numbers


def source_files(geom: Geometry) -> list[str]:
    """The files of the series a volume was read from (the largest series of its folder)."""
    import SimpleITK as sitk

    info = geom.meta.get("dicom_series") or {}
    uid = info.get("series_uid")
    if not uid:
        raise fail(geom.path, "is not a DICOM series", "--dicom-seg applies to DICOM series inputs only")
    return list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(geom.path), uid))


def slice_index(ds, geom: Geometry) -> int:
    """Which slice of the volume (last voxel axis) a source instance is, from its ImagePositionPatient."""
    lps = np.append(np.asarray(ds.ImagePositionPatient, dtype=np.float64), 1.0)
    ijk = np.linalg.solve(np.asarray(geom.affine, dtype=np.float64), LPS_TO_RAS @ lps)
    k = int(np.rint(ijk[2]))
    if abs(ijk[2] - k) > 0.01 or not 0 <= k < geom.shape[2] or np.abs(ijk[:2]).max() > 0.01:
        raise fail(geom.path, f"instance {ds.SOPInstanceUID} does not lie on a slice of the volume", "check the series")
    return k


def write_dicom_seg(labels: np.ndarray, geom: Geometry, class_names: list[str], out: Path, model_name: str) -> Path:
    """Write ``labels`` ``(X, Y, Z)`` (0 background, c for ``class_names[c]``) as a binary DICOM SEG at ``out``."""
    try:
        import highdicom as hd
        import pydicom
        from pydicom.sr.codedict import codes
    except ImportError:
        raise MedsegError("--dicom-seg needs highdicom; fix: pip install 'medseg[dicom]'") from None

    sources = [pydicom.dcmread(f) for f in source_files(geom)]
    missing = [k for k in ("FrameOfReferenceUID", "StudyInstanceUID", "SOPClassUID") if k not in sources[0]]
    if missing:
        raise fail(
            geom.path, f"lacks {', '.join(missing)}, which a DICOM SEG must reference", "use the scanner's series"
        )
    frames = np.stack([labels[:, :, slice_index(ds, geom)].T for ds in sources])  # (instances, rows, columns)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="medseg", version=__version__, family=codes.cid7162.ArtificialIntelligence
    )
    segments = [
        hd.seg.SegmentDescription(
            segment_number=c,
            segment_label=name[:64],
            segmented_property_category=codes.SCT.Tissue,
            segmented_property_type=codes.SCT.Tissue,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
        )
        for c, name in enumerate(class_names)
        if c > 0
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=sources,
            pixel_array=frames.astype(np.uint8 if len(class_names) < 256 else np.uint16),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segments,
            series_instance_uid=hd.UID(),
            series_number=SERIES_NUMBER,
            sop_instance_uid=hd.UID(),
            instance_number=1,
            manufacturer="medseg",
            manufacturer_model_name=model_name[:64],
            software_versions=__version__,
            device_serial_number="none",
            series_description="medseg segmentation",
            omit_empty_frames=False,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise MedsegError(f"{geom.path}: cannot be described as DICOM SEG ({exc}); fix: check the series") from None
    seg.save_as(str(out))
    return out
