"""3D volumes: NIfTI, NRRD, MetaImage and DICOM series read with their geometry and written back onto it.

Headers are checked before any voxel is read: a zero or negative voxel size, a singular orientation or a header
that claims more voxels than the file holds is refused in one line naming the header field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.errors import MedsegError, fail
from medseg.io.dicom import read_dicom_dir
from medseg.io.files import IMAGE_2D_EXTS, VOLUME_EXTS, atomic_write, file_ext, quiet_logger, short_reason
from medseg.io.geometry import Geometry, from_sitk


def read_volume(path: str | Path) -> tuple[np.ndarray, Geometry]:
    """Read a NIfTI / NRRD / MHA / DICOM-series volume.

    Returns:
        ``(array, geometry)`` with array ``(X, Y, Z)`` or ``(X, Y, Z, C)``.
    """
    path = Path(path)
    if not path.exists():
        raise fail(path, "file not found", "check the path")
    if path.is_dir():
        return read_dicom_dir(path)
    if path.stat().st_size == 0:
        raise fail(path, "file is empty", "re-export or remove this file")
    ext = file_ext(path)
    if ext in (".nii", ".nii.gz"):
        return _read_nifti(path)
    if ext in (".nrrd", ".nhdr", ".mha", ".mhd"):
        return _read_itk(path)
    raise fail(
        path,
        f"unsupported file type '{ext or path.suffix}'",
        f"use one of {', '.join(VOLUME_EXTS + IMAGE_2D_EXTS)} or a DICOM series folder",
    )


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    import nibabel as nib

    try:
        with quiet_logger("nibabel"):  # it logs the header fixes it makes; _check_nifti_header refuses them instead
            img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise _unreadable_nifti(path, exc) from None
    _check_nifti_header(path, img)  # from the header, before the voxels are read
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise _unreadable_nifti(path, exc) from None
    while arr.ndim > 4 and arr.shape[3] == 1:
        arr = arr[:, :, :, 0, ...]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim not in (3, 4):
        raise fail(
            path, f"has {arr.ndim} dimensions", "give a 3D volume or a 4D volume with modalities on the last axis"
        )
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    geom = Geometry(
        shape=tuple(arr.shape[:3]),
        spacing=zooms,
        affine=np.array(img.affine, dtype=np.float64),
        fmt="nifti",
        path=str(path),
        header=img.header.copy(),
    )
    return arr, geom


def _unreadable_nifti(path: Path, exc: Exception) -> MedsegError:
    return fail(
        path,
        f"cannot be read as NIfTI ({short_reason(exc)})",
        "check that the file is complete (not truncated) and re-export it",
    )


def _singular(rotation_zooms: np.ndarray) -> bool:
    """Whether a 3x3 voxel-to-world matrix fails to span 3D space (a zero column, or two parallel ones)."""
    m = np.asarray(rotation_zooms, dtype=np.float64)
    if not np.all(np.isfinite(m)):
        return True
    norms = np.linalg.norm(m, axis=0)
    return bool(np.any(norms == 0) or abs(np.linalg.det(m / norms[None, :])) < 1e-6)


def _bad_spacing(spacing) -> list[int]:
    """Indices (0-based) of spacings that are zero, negative or not finite."""
    return [i for i, v in enumerate(spacing) if not (np.isfinite(v) and v > 0)]


def _refuse_spacing(path: Path, field: str, spacing, bad: list[int]) -> MedsegError:
    shown = ", ".join(f"{field.format(i + 1)} = {spacing[i]:g}" for i in bad)
    return fail(
        path,
        f"voxel spacing is zero, negative or not a number ({shown}): sizes and volumes in mm cannot be computed",
        "re-export the volume with its true voxel size (or fix that header field)",
    )


GZIP_MAX_RATIO = (
    1100  # deflate cannot shrink data more than ~1032:1, so a .nii.gz holds at most this many times its size
)


def _check_nifti_size(path: Path, img) -> None:
    """Refuse, before reading, a NIfTI whose header claims more voxel bytes than the file can hold: one cut short,
    or a few kB that claim gigabytes (reading it would exhaust memory first)."""
    shape = tuple(int(v) for v in img.header.get_data_shape())
    needed = int(np.prod(shape, dtype=np.float64)) * np.dtype(img.header.get_data_dtype()).itemsize
    size = path.stat().st_size
    gz = file_ext(path) == ".nii.gz"
    room = size * GZIP_MAX_RATIO if gz else size - int(img.header.get("vox_offset", 352))
    if needed > room:
        raise _refuse_truncated(
            path,
            " as NIfTI",
            f"{'x'.join(map(str, shape))} {img.header.get_data_dtype()} voxels, {_bytes(needed)}",
            f"a gzip file of {_bytes(size)} can hold" if gz else f"the {_bytes(max(room, 0))} it holds",
        )


def _refuse_truncated(path: Path, as_what: str, claim: str, room: str) -> MedsegError:
    return fail(
        path,
        f"cannot be read{as_what}: it is truncated (its header claims {claim}, more than {room})",
        "re-export the volume, or copy it again if it was cut short on the way",
    )


def _bytes(n: float) -> str:
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} TB"


def _check_nifti_header(path: Path, img) -> None:
    """Refuse a NIfTI whose pixdim[1..3] (voxel size) is 0 or negative, or whose affine is singular. nibabel quietly
    turns a 0 into 1 and takes the absolute value of a negative, which would give sizes the file does not state."""
    from nibabel.openers import ImageOpener

    try:
        with ImageOpener(str(path)) as fh:
            raw = type(img.header).from_fileobj(fh, check=False)
    except Exception:  # noqa: BLE001 - the header was already read once: fall back to nibabel's view of it
        raw = img.header
    _check_nifti_size(path, img)
    n = int(min(max(int(raw["dim"][0]), 1), 3))
    spacing = [float(v) for v in raw["pixdim"][1 : 1 + n]]
    bad = _bad_spacing(spacing)
    if bad:
        raise _refuse_spacing(path, "pixdim[{}]", spacing, bad)
    if _singular(np.asarray(img.affine)[:3, :3]):
        which = (
            "sform (srow_x, srow_y, srow_z)"
            if int(raw["sform_code"]) > 0
            else "qform (quatern_b/c/d and pixdim)"
            if int(raw["qform_code"]) > 0
            else "pixdim"
        )
        raise fail(
            path,
            f"affine is singular (its {which} maps the voxel grid onto a plane or a line), so voxel "
            "positions and sizes in mm are undefined",
            "re-export the volume with a valid orientation header",
        )


def _check_itk_size(path: Path, size: list[int], components: int) -> None:
    """Refuse an NRRD / MetaImage with its voxels in the same file whose header claims more voxels than the file
    can hold (at one byte each, the least any type takes): ITK allocates them all before reading."""
    with open(path, "rb") as fh:  # the header only: the voxels may be gigabytes
        head = fh.read(65536).split(b"\n\n")[0].lower()
    if file_ext(path) in (".nhdr", ".mhd") or (b"elementdatafile" in head and b"elementdatafile = local" not in head):
        return  # the voxels are in another file
    if b"bzip2" in head or b"bz2" in head:
        return  # bzip2 has no useful bound on its ratio
    compressed = b"encoding: gz" in head or b"compresseddata = true" in head
    needed = float(np.prod(size, dtype=np.float64)) * max(components, 1)
    room = path.stat().st_size * (GZIP_MAX_RATIO if compressed else 1)
    if needed > room:
        size_text = _bytes(path.stat().st_size)
        raise _refuse_truncated(
            path,
            "",
            f"{'x'.join(map(str, size))} voxels, at least {_bytes(needed)}",
            f"a compressed file of {size_text} can hold" if compressed else f"the {size_text} it holds",
        )


def _read_itk(path: Path) -> tuple[np.ndarray, Geometry]:
    """NRRD / MetaImage through one ITK reader: its header is read and checked first, then the voxels."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        pass  # an unreadable header is reported by the full read below, with ITK's reason
    else:
        _check_itk_header(path, reader)
    try:
        img = reader.Execute()
    except RuntimeError as exc:
        raise fail(
            path, f"cannot be read ({short_reason(exc)})", "check that the file is complete and not truncated"
        ) from None
    return from_sitk(img, path, fmt="itk")


def _check_itk_header(path: Path, reader) -> None:
    """Refuse an NRRD / MetaImage whose spacing is 0 or negative or whose direction matrix is singular, from the
    header ``reader`` has read and naming its field (ITK itself only says 'Zero-valued spacing' or 'Bad direction')."""
    _check_itk_size(path, [int(v) for v in reader.GetSize()], reader.GetNumberOfComponents())
    nrrd = file_ext(path) in (".nrrd", ".nhdr")
    spacing = [float(v) for v in reader.GetSpacing()]
    bad = _bad_spacing(spacing)
    if bad:
        raise _refuse_spacing(path, "space directions (axis {})" if nrrd else "ElementSpacing[{}]", spacing, bad)
    dim = reader.GetDimension()
    direction = np.array(reader.GetDirection(), dtype=np.float64).reshape(dim, dim)
    if _singular(direction):
        field = "space directions" if nrrd else "TransformMatrix"
        raise fail(
            path,
            f"affine is singular (its {field} maps the voxel grid onto a plane or a line), so voxel "
            "positions and sizes in mm are undefined",
            f"re-export the volume with valid {field}",
        )


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
        atomic_write(path, lambda tmp: _sitk_write(img, tmp), suffix=ext)
    return path


def _sitk_write(img, path) -> None:
    """``sitk.WriteImage`` (compressed); ITK reports a failed write (a full disk, a read-only folder) as a
    RuntimeError, which becomes the OSError that callers handle as a failed write."""
    import SimpleITK as sitk

    try:
        sitk.WriteImage(img, str(path), True)
    except RuntimeError as exc:
        raise OSError(f"ITK could not write it: {short_reason(exc)}") from exc
