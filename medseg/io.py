"""Reading and writing images with their geometry.

The contract is nnU-Net's: a reader returns the array *and* a
:class:`Geometry`; a writer takes that same geometry back, so spacing, origin,
direction and (for NIfTI) the exact header with its qform and sform survive a
load -> infer -> write round trip.

Array conventions
-----------------
* 3D volumes: ``(X, Y, Z)`` or ``(X, Y, Z, C)`` in voxel index order ``(i, j, k)``,
  with ``Geometry.affine`` mapping ``(i, j, k, 1)`` to RAS millimetres (the
  nibabel / MONAI convention). SimpleITK's LPS geometry is converted on read
  and back on write.
* 2D images: ``(H, W)`` or ``(H, W, C)``, row-major, exactly as stored.
"""

from __future__ import annotations

import os
import tempfile
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MedsegError, fail

IMAGE_2D_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def file_ext(path: str | Path) -> str:
    """Lower-case extension including double ones such as ``.nii.gz``."""
    name = Path(path).name.lower()
    for ext in (".nii.gz",):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def strip_ext(path: str | Path) -> str:
    name = Path(path).name
    ext = file_ext(name)
    return name[: len(name) - len(ext)] if ext else name


_SLICE_NUMBER = re.compile(r"^(?P<base>.*?)(?P<n>\d+)$")


def slice_neighbours(path: str | Path, context: int) -> tuple[list[Path], int]:
    """The 2D slice ``path`` and its ``context`` neighbours on each side, found by the number that ends the file
    name (``case_7.tif`` -> ``case_6.tif``, ``case_8.tif``; zero-padded numbers too). Ordered centre first, then
    the nearest pair below/above, then the next pair; at the ends of a volume, or for an unnumbered file, the
    nearest existing slice stands in. Also returns how many neighbours were really found."""
    p = Path(path)
    stem = strip_ext(p)
    ext = p.name[len(stem):]
    m = _SLICE_NUMBER.match(stem)
    out, found = [p], 0
    if not m or context <= 0:
        return out + [p] * (2 * context), 0
    base, n, width = m.group("base"), int(m.group("n")), len(m.group("n"))
    last, ended = {-1: p, 1: p}, {-1: False, 1: False}
    for k in range(1, context + 1):
        for side in (-1, 1):
            idx = n + side * k
            names = {f"{base}{idx}{ext}", f"{base}{idx:0{width}d}{ext}"} if idx >= 0 else set()
            hit = next((p.parent / nm for nm in sorted(names) if (p.parent / nm).is_file()), None)
            if hit is None or ended[side]:
                ended[side] = True  # the volume ends on this side: the nearest slice stands in
            else:
                last[side] = hit
                found += 1
            out.append(last[side])
    return out, found


def volume_slices(path: str | Path) -> list[Path]:
    """Every 2D slice of the volume ``path`` belongs to: the files beside it whose names differ only in the number
    that ends them (``case_7.tif`` -> ``case_1.tif`` ... ``case_40.tif``, not ``case_7_mask.tif``), same extension,
    in numeric order. An unnumbered file is a volume of one slice."""
    p = Path(path)
    stem = strip_ext(p)
    ext = p.name[len(stem):]
    m = _SLICE_NUMBER.match(stem)
    if not m:
        return [p]
    pattern = re.compile(re.escape(m.group("base")) + r"(\d+)" + re.escape(ext) + "$")
    hits = []
    for q in p.parent.iterdir():
        k = pattern.match(q.name)
        if k and q.is_file():
            hits.append((int(k.group(1)), q.name, q))
    return [q for _n, _name, q in sorted(hits)] or [p]


def is_dicom_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    for f in list(path.iterdir())[:50]:
        if f.is_file():
            if f.suffix.lower() in {".dcm", ".dicom", ".ima"}:
                return True
            try:
                with open(f, "rb") as fh:
                    fh.seek(128)
                    if fh.read(4) == b"DICM":
                        return True
            except OSError:
                continue
    return False


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


# ----------------------------------------------------------------------------
# 2D
# ----------------------------------------------------------------------------

EXIF_ORIENTATION = 274  # the EXIF/TIFF tag a camera sets instead of turning the pixels


def exif_orientation(path: str | Path) -> int:
    """A 2D file's EXIF orientation (1 = as stored, 2-8 = flipped or turned when shown); 1 when it has none."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return _orientation(im)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image_2d
        return 1


def _orientation(im) -> int:
    """The EXIF orientation of an open PIL image, 1 when it has none or an invalid one."""
    value = im.getexif().get(EXIF_ORIENTATION, 1)
    return int(value) if value in range(1, 9) else 1


def read_image_2d(path: str | Path, kind: str = "image", upright: bool = True) -> np.ndarray:
    """Read a 2D image or mask: ``(H, W)`` or ``(H, W, C)``.

    Handles BMP/PNG/JPEG/TIFF, 1-bit and palette files, 16-bit and float
    TIFFs. ``kind="mask"`` keeps palette indices; ``kind="image"`` expands
    palettes to RGB. With ``upright`` (the default) a file's EXIF orientation
    is applied, so the array is the picture as viewers, browsers and annotation
    tools show it; ``upright=False`` gives the pixels as stored.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found", "check the path or restore the file")
    if path.stat().st_size == 0:
        raise fail(path, "file is empty", "re-export or remove this file")
    from PIL import Image, UnidentifiedImageError

    err = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                if upright and _orientation(im) != 1:
                    from PIL import ImageOps

                    im = ImageOps.exif_transpose(im)
                if im.mode == "P" and kind == "image":
                    im = im.convert("RGB")
                elif im.mode in {"CMYK", "YCbCr", "LAB", "HSV"}:
                    im = im.convert("RGB")
                elif im.mode == "LA":
                    im = im.convert("L")
                arr = np.array(im)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        return arr
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        err = exc
    if file_ext(path) in {".tif", ".tiff"}:
        try:
            import tifffile

            arr = np.asarray(tifffile.imread(str(path)))
            if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
                arr = np.moveaxis(arr, 0, -1)
            return arr
        except Exception as exc:  # noqa: BLE001 - report the original failure
            err = exc
    raise fail(path, f"cannot be read as an image ({_short(err)})",
               "re-export it as PNG, BMP, JPEG or TIFF, or remove the case")


def write_image_2d(array: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format=_pil_format(path)))


def _pil_format(path) -> str:
    ext = file_ext(path)
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(ext, "PNG")


def geometry_2d(path: str | Path, shape, spacing: list[float] | None = None, channels: int = 1) -> Geometry:
    """Geometry of a 2D image: ``spacing`` in mm per (row, column); 1 mm assumed (and flagged) when unknown."""
    sp = tuple(float(s) for s in spacing) if spacing else (1.0, 1.0)
    return Geometry(shape=tuple(int(s) for s in shape[:2]), spacing=sp, affine=np.diag([sp[0], sp[1], 1.0, 1.0]),
                    fmt="2d", path=str(path), meta={"channels": int(channels), "spacing_known": bool(spacing)})


# ----------------------------------------------------------------------------
# 3D
# ----------------------------------------------------------------------------

def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI / NRRD / MHA / DICOM-series volume.

    Returns:
        ``(array, geometry)`` with array ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
    """
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found", "check the path")
    if path.is_dir():
        return _read_dicom_dir(path)
    if path.stat().st_size == 0:
        raise fail(path, "file is empty", "re-export or remove this file")
    ext = file_ext(path)
    if ext in (".nii", ".nii.gz"):
        return _read_nifti(path)
    if ext in (".nrrd", ".nhdr", ".mha", ".mhd"):
        import SimpleITK as sitk

        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise fail(path, f"cannot be read ({_short(exc)})", "check that the file is complete and not truncated") from None
        return _from_sitk(img, path, fmt="itk")
    raise fail(path, f"unsupported file type '{ext or path.suffix}'",
               f"use one of {', '.join(VOLUME_EXTS + IMAGE_2D_EXTS)} or a DICOM series folder")


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    import nibabel as nib

    try:
        img = nib.load(str(path))
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise fail(path, f"cannot be read as NIfTI ({_short(exc)})",
                   "check that the file is complete (not truncated) and re-export it") from None
    while arr.ndim > 4 and arr.shape[3] == 1:
        arr = arr[:, :, :, 0, ...]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4):
        raise fail(path, f"has {arr.ndim} dimensions", "give a 3D volume or a 4D volume with modalities on the last axis")
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    geom = Geometry(shape=tuple(arr.shape[:3]), spacing=zooms, affine=np.array(img.affine, dtype=np.float64),
                    fmt="nifti", path=str(path), header=img.header.copy())
    return arr, geom


def _from_sitk(img, path: Path, fmt: str, meta: dict | None = None) -> tuple[np.ndarray, Geometry]:
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
    geom = Geometry(shape=tuple(arr.shape[:3]), spacing=tuple(spacing), affine=LPS_TO_RAS @ affine_lps,
                    fmt=fmt, path=str(path), meta=meta or {})
    return arr, geom


DICOM_TAGS = {"0010|0020": "patient_id", "0008|0060": "modality", "0008|0020": "study_date",
              "0008|103e": "series_description", "0018|0050": "slice_thickness", "0008|0070": "manufacturer"}


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, Geometry]:
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(path))
    if not series:
        raise fail(path, "no DICOM series found in this folder", "point to a folder that holds the .dcm files of one series")
    files_of = {s: reader.GetGDCMSeriesFileNames(str(path), s) for s in series}  # one folder scan per series
    best = max(series, key=lambda s: len(files_of[s]))
    files = files_of[best]
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    reader.LoadPrivateTagsOff()
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise fail(path, f"DICOM series cannot be read ({_short(exc)})", "check that the series is complete") from None
    tags = {}
    for tag, name in DICOM_TAGS.items():
        if reader.HasMetaDataKey(0, tag):
            tags[name] = reader.GetMetaData(0, tag).strip()
    series_info = {"series_uid": best, "files": len(files), "description": tags.get("series_description", ""),
                   "other_series": [_series_summary(s, files_of[s]) for s in series if s != best]}
    return _from_sitk(img, path, fmt="itk", meta={"dicom": tags, "dicom_series": series_info})


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


def write_volume(array: np.ndarray, geom: Geometry, path: str | Path, force: bool = False) -> Path:
    """Write ``array`` (X, Y, Z) on the grid described by ``geom``.

    NIfTI outputs reuse the input's header (qform, sform and their codes) when
    the input was NIfTI; other formats get spacing, origin and direction.
    """
    path = Path(path)
    if path.exists() and not force:
        raise fail(path, "already exists", "pass --force to overwrite or choose another --out")
    array = np.asarray(array)
    if tuple(array.shape[:3]) != tuple(geom.shape):
        raise MedsegError(f"internal: array shape {array.shape} does not match geometry {geom.shape} for {path}")
    ext = file_ext(path)
    if ext in (".nii", ".nii.gz"):
        import nibabel as nib

        if geom.header is not None:
            hdr = geom.header.copy()
            img = nib.Nifti1Image(array, geom.affine, header=hdr)
            img.set_qform(hdr.get_qform(), code=int(hdr["qform_code"]))
            img.set_sform(hdr.get_sform(), code=int(hdr["sform_code"]))
        else:
            img = nib.Nifti1Image(array, geom.affine)
            img.set_qform(geom.affine, code=1)
            img.set_sform(geom.affine, code=1)
        img.set_data_dtype(array.dtype)
        img.header.set_slope_inter(1.0, 0.0)
        img.header["cal_min"], img.header["cal_max"] = 0, 0
        img.header["descrip"] = b"medseg"
        atomic_write(path, lambda tmp: nib.save(img, tmp), suffix=ext)
    else:
        import SimpleITK as sitk

        arr = np.transpose(array, (2, 1, 0))
        if arr.dtype == np.int64:
            arr = arr.astype(np.int32)
        img = sitk.GetImageFromArray(arr)
        img.SetSpacing([float(s) for s in geom.spacing])
        img.SetOrigin([float(v) for v in geom.origin_lps])
        img.SetDirection([float(v) for v in geom.direction_lps.ravel()])
        atomic_write(path, lambda tmp: sitk.WriteImage(img, tmp, True), suffix=ext)
    return path


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------

def atomic_write(path: str | Path, writer, suffix: str | None = None) -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path``: no half-written files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else file_ext(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _short(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) if exc is not None else "unknown error"
    return (text[:160] + "...") if len(text) > 160 else text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
