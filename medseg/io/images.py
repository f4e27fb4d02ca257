"""2D images: reading any of the common formats as the picture viewers show, refusing damaged or oversized files
in one line, and writing masks."""

from __future__ import annotations

import os
import threading
import warnings
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError, fail
from medseg.io.files import atomic_write, file_ext, quiet_logger, short_reason
from medseg.io.geometry import Geometry

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
    with quiet_logger("tifffile"), tifffile.TiffFile(str(path)) as tif:
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
        f"cannot be read as an image ({short_reason(err)})",
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
