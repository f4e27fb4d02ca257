"""DICOM series folders: the largest series in a folder as one volume, with its identifying tags."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import fail
from medseg.io.files import short_reason
from medseg.io.geometry import Geometry, from_sitk

DICOM_TAGS = {
    "0010|0020": "patient_id",
    "0008|0060": "modality",
    "0008|0020": "study_date",
    "0008|103e": "series_description",
    "0018|0050": "slice_thickness",
    "0008|0070": "manufacturer",
}


def read_dicom_dir(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise fail(
            path, "no DICOM series found in this folder", "point to a folder that holds the .dcm files of one series"
        )
    files_of = {s: reader.GetGDCMSeriesFileNames(str(path), s) for s in series}  # one folder scan per series
    best = max(series, key=lambda s: len(files_of[s]))
    files = files_of[best]
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise fail(
            path, f"DICOM series cannot be read ({short_reason(exc)})", "check that the series is complete"
        ) from None
    tags = {}
    for tag, name in DICOM_TAGS.items():
        if reader.HasMetaDataKey(0, tag):
            tags[name] = reader.GetMetaData(0, tag).strip()
    series_info = {
        "series_uid": best,
        "files": len(files),
        "description": tags.get("series_description", ""),
        "other_series": [_series_summary(s, files_of[s]) for s in series if s != best],
    }
    return from_sitk(img, path, fmt="itk", meta={"dicom": tags, "dicom_series": series_info})


def _series_summary(uid: str, files) -> dict:
    """UID, file count and description of one series (its first file's header only)."""
    import SimpleITK as sitk

    desc = ""
    try:
        r = sitk.ImageFileReader()
        r.SetFileName(files[0])
        r.ReadImageInformation()
        desc = r.GetMetaData("0008|103e").strip() if r.HasMetaDataKey("0008|103e") else ""
    except RuntimeError:
        pass
    return {"series_uid": uid, "files": len(files), "description": desc}
