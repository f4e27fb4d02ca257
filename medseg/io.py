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

import contextlib
import logging
import os
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medseg.errors import MedsegError, fail

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
    ext = p.name[len(stem) :]
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
    ext = p.name[len(stem) :]
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

# PIL warns about damaged TIFF/EXIF blocks ("Corrupt EXIF data") while reading a header; medseg reports a damaged
# file itself, in one line. A process-wide filter, because catch_warnings() is not thread-safe and the training
# cache reads images from several threads at once.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")


def exif_orientation(path: str | Path) -> int:
    """A 2D file's EXIF orientation (1 = as stored, 2-8 = flipped or turned when shown); 1 when it has none."""
    try:
        with _open_image(Path(path)) as im:  # an over-large image is refused by read_image_2d, not here
            return _orientation(im)
    except Exception:  # noqa: BLE001 - unreadable files are reported by read_image_2d
        return 1


def _orientation(im) -> int:
    """The EXIF orientation of an open PIL image, 1 when it has none or an invalid one."""
    value = im.getexif().get(EXIF_ORIENTATION, 1)
    return int(value) if value in range(1, 9) else 1


@contextlib.contextmanager
def _quiet_logger(name: str):
    """Silence a library's logger for a moment: medseg reports what went wrong itself, as one line."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


MAX_IMAGE_PIXELS = 100_000_000  # 100 megapixels: a large microscopy tile passes, a decompression bomb does not
MAX_PIXELS_ENV = "MEDSEG_MAX_IMAGE_PIXELS"
_PIL_LIMIT_LOCK = threading.Lock()


def max_image_pixels() -> int:
    """The largest 2D image (width x height) medseg decodes: ``MEDSEG_MAX_IMAGE_PIXELS`` or 100 million."""
    raw = os.environ.get(MAX_PIXELS_ENV, "").strip().replace("_", "")
    if not raw:
        return MAX_IMAGE_PIXELS
    if not raw.isdigit() or int(raw) <= 0:
        raise fail(
            MAX_PIXELS_ENV,
            f"is {raw!r}, not a positive whole number of pixels",
            f"set it to e.g. {MAX_IMAGE_PIXELS} or unset it",
        )
    return int(raw)


def _check_pixel_count(path: Path, width: int, height: int) -> None:
    """Refuse, from the header and before decoding, an image too large to decode (a decompression bomb: a small
    file that claims billions of pixels, and would take gigabytes and minutes)."""
    limit = max_image_pixels()
    if int(width) * int(height) > limit:
        raise fail(
            path,
            f"is {width}x{height} pixels ({width * height / 1e6:.3g} megapixels), over medseg's limit of "
            f"{limit / 1e6:g} megapixels (a decompression bomb or a whole-slide image)",
            f"tile or downsample it, or raise the limit with {MAX_PIXELS_ENV}=<pixels> if you trust the file",
        )


def _open_image(path: Path):
    """``PIL.Image.open`` with PIL's own pixel limit lifted (ours, which says how to override it, applies instead)."""
    from PIL import Image

    with _PIL_LIMIT_LOCK:  # the limit is a module global of PIL's: restore it before another thread opens a file
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            im = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    try:
        _check_pixel_count(path, *im.size)
        _refuse_stack(path, im)
    except MedsegError:
        im.close()
        raise
    return im


def _refuse_stack(path: Path, im) -> None:
    """A multi-page TIFF (a z-stack or time series) would be read as its first page alone, the rest lost unsaid."""
    pages = int(getattr(im, "n_frames", 1) or 1)
    if pages > 1 and im.format == "TIFF":
        raise _stack_error(path, f"{pages} pages of {im.size[0]}x{im.size[1]}")


def _stack_error(path: Path, what: str) -> MedsegError:
    return fail(
        path,
        f"holds {what} (a stack), but a 2D image or mask is one page",
        "save each page as its own file (one slice each), or convert the stack to a volume (.nii.gz) for a 3D recipe",
    )


def _refuse_empty(arr: np.ndarray, path: Path) -> np.ndarray:
    """A decoder may hand back an empty array for a file cut short (a TIFF whose directory was lost)."""
    if arr.size == 0 or arr.ndim not in (2, 3):
        raise fail(
            path,
            f"is truncated or unreadable (decoded to an array of shape {tuple(arr.shape)})",
            "re-export or remove it",
        )
    return arr


def _read_tiff_fallback(path: Path) -> np.ndarray:
    """TIFFs PIL cannot decode (float, many samples, odd compression), via tifffile; its header is checked first."""
    import tifffile

    # tifffile logs, then returns an empty array, for a truncated file: we say so instead, in one line
    with _quiet_logger("tifffile"), tifffile.TiffFile(str(path)) as tif:
        if not tif.series or not tif.series[0].shape:
            raise fail(path, "is truncated or unreadable (no image directory in the TIFF)", "re-export or remove it")
        if len(tif.pages) > 1:
            raise _stack_error(path, f"{len(tif.pages)} pages")
        shape = tif.series[0].shape
        if len(shape) >= 2:
            dims = shape[-3:-1] if len(shape) >= 3 and shape[-1] in (1, 3, 4) else shape[-2:]
            _check_pixel_count(path, int(dims[1]), int(dims[0]))
        arr = np.asarray(tif.asarray())
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[-1] not in (1, 3, 4):
        arr = np.moveaxis(arr, 0, -1)
    return _refuse_empty(arr, path)


def read_image_2d(path: str | Path, kind: str = "image", upright: bool = True) -> np.ndarray:
    """Read a 2D image or mask: ``(H, W)`` or ``(H, W, C)``.

    Handles BMP/PNG/JPEG/TIFF, 1-bit and palette files, 16-bit and float
    TIFFs. ``kind="mask"`` keeps palette indices; ``kind="image"`` expands
    palettes to RGB. With ``upright`` (the default) a file's EXIF orientation
    is applied, so the array is the picture as viewers, browsers and annotation
    tools show it; ``upright=False`` gives the pixels as stored. Images over
    :func:`max_image_pixels` are refused from their header, before decoding.
    """
    path = Path(path)
    if not path.is_file():
        raise fail(path, "file not found", "check the path or restore the file")
    if path.stat().st_size == 0:
        raise fail(path, "file is empty", "re-export or remove this file")
    from PIL import UnidentifiedImageError

    err = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with _open_image(path) as im:
                im.load()
                if upright and _orientation(im) != 1:
                    from PIL import ImageOps

                    im = ImageOps.exif_transpose(im)
                if im.mode == "P" and kind == "image" or im.mode in {"CMYK", "YCbCr", "LAB", "HSV"}:
                    im = im.convert("RGB")
                elif im.mode == "LA":
                    im = im.convert("L")
                arr = np.array(im)
        if arr.dtype == bool:
            arr = arr.astype(np.uint8)
        return _refuse_empty(arr, path)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        err = exc
    if file_ext(path) in {".tif", ".tiff"}:
        try:
            return _read_tiff_fallback(path)
        except MedsegError:
            raise
        except Exception as exc:  # noqa: BLE001 - report the original failure
            err = exc
    raise fail(
        path,
        f"cannot be read as an image ({_short(err)})",
        "re-export it as PNG, BMP, JPEG or TIFF, or remove the case",
    )


def write_image_2d(array: np.ndarray, path: str | Path) -> None:
    from PIL import Image

    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    atomic_write(path, lambda tmp: Image.fromarray(arr).save(tmp, format=_pil_format(path)))


def _pil_format(path) -> str:
    ext = file_ext(path)
    return {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}.get(
        ext, "PNG"
    )


def geometry_2d(path: str | Path, shape, spacing: list[float] | None = None, channels: int = 1) -> Geometry:
    """Geometry of a 2D image: ``spacing`` in mm per (row, column); 1 mm assumed (and flagged) when unknown."""
    sp = tuple(float(s) for s in spacing) if spacing else (1.0, 1.0)
    return Geometry(
        shape=tuple(int(s) for s in shape[:2]),
        spacing=sp,
        affine=np.diag([sp[0], sp[1], 1.0, 1.0]),
        fmt="2d",
        path=str(path),
        meta={"channels": int(channels), "spacing_known": bool(spacing)},
    )


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

        _check_itk_header(path)
        try:
            img = sitk.ReadImage(str(path))
        except RuntimeError as exc:
            raise fail(
                path, f"cannot be read ({_short(exc)})", "check that the file is complete and not truncated"
            ) from None
        return _from_sitk(img, path, fmt="itk")
    raise fail(
        path,
        f"unsupported file type '{ext or path.suffix}'",
        f"use one of {', '.join(VOLUME_EXTS + IMAGE_2D_EXTS)} or a DICOM series folder",
    )


def _read_nifti(path: Path) -> tuple[np.ndarray, Geometry]:
    import nibabel as nib

    try:
        with _quiet_logger("nibabel"):  # it logs the header fixes it makes; _check_nifti_header refuses them instead
            img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise fail(
            path,
            f"cannot be read as NIfTI ({_short(exc)})",
            "check that the file is complete (not truncated) and re-export it",
        ) from None
    _check_nifti_header(path, img)  # from the header, before the voxels are read
    try:
        arr = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types on damaged files
        raise fail(
            path,
            f"cannot be read as NIfTI ({_short(exc)})",
            "check that the file is complete (not truncated) and re-export it",
        ) from None
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


def _check_itk_header(path: Path) -> None:
    """Refuse an NRRD / MetaImage whose spacing is 0 or negative or whose direction matrix is singular, from the
    header alone and naming its field (ITK itself only says 'Zero-valued spacing' or 'Bad direction')."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return  # an unreadable header is reported by the full read, with ITK's reason
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
    geom = Geometry(
        shape=tuple(arr.shape[:3]),
        spacing=tuple(spacing),
        affine=LPS_TO_RAS @ affine_lps,
        fmt=fmt,
        path=str(path),
        meta=meta or {},
    )
    return arr, geom


DICOM_TAGS = {
    "0010|0020": "patient_id",
    "0008|0060": "modality",
    "0008|0020": "study_date",
    "0008|103e": "series_description",
    "0018|0050": "slice_thickness",
    "0008|0070": "manufacturer",
}


def _read_dicom_dir(path: Path) -> tuple[np.ndarray, Geometry]:
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
        raise fail(path, f"DICOM series cannot be read ({_short(exc)})", "check that the series is complete") from None
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
        atomic_write(path, lambda tmp: _sitk_write(img, tmp), suffix=ext)
    return path


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def _sitk_write(img, path) -> None:
    """``sitk.WriteImage`` (compressed); ITK reports a failed write (a full disk, a read-only folder) as a
    RuntimeError, which becomes the OSError that callers handle as a failed write."""
    import SimpleITK as sitk

    try:
        sitk.WriteImage(img, str(path), True)
    except RuntimeError as exc:
        raise OSError(f"ITK could not write it: {_short(exc)}") from exc


TEMP_MARK = ".tmp"  # atomic_write's temp files: ".NAME.<random>.tmp<ext>" beside NAME


def atomic_write(path: str | Path, writer, suffix: str | None = None) -> None:
    """Call ``writer(tmp_path)`` then rename onto ``path``: no half-written files.

    The temp file is ``.NAME.<random>.tmp<suffix>`` in the same folder (``suffix`` defaults to the file's own
    extension, which writers such as nibabel and SimpleITK read the format from); it is removed when the writer or
    the rename fails. A process killed mid-write leaves it behind: :func:`stale_temp_files` finds it again.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = suffix if suffix is not None else file_ext(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f"{TEMP_MARK}{suffix}", dir=path.parent)
    os.close(fd)
    try:
        writer(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:  # already gone, or the folder refuses even that: the writer's error is the one to report
            pass
        raise


def stale_temp_files(folder: str | Path, names) -> list[Path]:
    """Temp files :func:`atomic_write` left in ``folder`` for the files ``names`` (a killed process cannot remove
    its own): ``.NAME.<random>.tmp...``, and nothing else, so a user's files are never matched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    pattern = re.compile("|".join(rf"\.{re.escape(n)}\.[A-Za-z0-9_]+{re.escape(TEMP_MARK)}.*" for n in names))
    return sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())


def _short(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) if exc is not None else "unknown error"
    text = text or type(exc).__name__  # MemoryError and others can have no message
    return (text[:160] + "...") if len(text) > 160 else text


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
