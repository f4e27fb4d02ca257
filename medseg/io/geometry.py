"""Where an array's voxels lie in the world: :class:`Geometry`, and its reading from a SimpleITK image."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import fail

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Geometry:
    """Where an array's voxels lie in the world, plus what is needed to write it back.

    Attributes:
        shape: spatial shape in index order ((H, W) for 2D, (X, Y, Z) for 3D).
        spacing: voxel size in mm per index axis (2D: row, column).
        affine: 4x4 voxel-to-RAS matrix (3D only; identity-scaled for 2D).
        fmt: "nifti", "itk" (NRRD/MHA/DICOM via SimpleITK) or "2d".
        path: the file this geometry was read from.
        header: the NIfTI header (fmt == "nifti"), so qform/sform codes survive.
        meta: extra facts (2D channel count and dtype, DICOM tags, ...).
    """

    shape: tuple
    spacing: tuple
    affine: np.ndarray
    fmt: str
    path: str = ""
    header: Any = None
    meta: dict = field(default_factory=dict)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def direction_lps(self) -> np.ndarray:
        rot = (LPS_TO_RAS @ self.affine)[:3, :3]
        return rot / np.asarray(self.spacing)[None, :]

    @property
    def origin_lps(self) -> np.ndarray:
        return (LPS_TO_RAS @ self.affine)[:3, 3]

    def summary(self) -> dict:
        out = {"shape": [int(s) for s in self.shape], "spacing_mm": [round(float(s), 6) for s in self.spacing]}
        if self.ndim == 3:
            out["origin_lps_mm"] = [round(float(v), 4) for v in self.origin_lps]
            out["direction_lps"] = [round(float(v), 6) for v in self.direction_lps.ravel()]
        return out


def from_sitk(img, path: Path, fmt: str, meta: dict | None = None) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    if img.GetDimension() == 2:
        img = sitk.JoinSeries(img)
    if img.GetDimension() != 3:
        raise fail(path, f"has {img.GetDimension()} dimensions", "give a 3D volume")
    arr = sitk.GetArrayFromImage(img)  # (z, y, x[, c])
    arr = np.transpose(arr, (2, 1, 0, 3) if arr.ndim == 4 else (2, 1, 0))
    spacing = np.array(img.GetSpacing(), dtype=np.float64)
    direction = np.array(img.GetDirection(), dtype=np.float64).reshape(3, 3)
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = direction * spacing[None, :]
    affine_lps[:3, 3] = img.GetOrigin()
    geom = Geometry(
        shape=tuple(arr.shape[:3]),
        spacing=tuple(spacing),
        affine=LPS_TO_RAS @ affine_lps,
        fmt=fmt,
        path=str(path),
        meta=meta or {},
    )
    return arr, geom
