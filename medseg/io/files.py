"""Files: names and extensions, the slices of a 2D volume beside each other, DICOM folders, and atomic writes."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from pathlib import Path

IMAGE_2D_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
VOLUME_EXTS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


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


def short_reason(exc: BaseException | None) -> str:
    """A library's error in one short line, for the parenthesis of a one-line refusal."""
    text = " ".join(str(exc).split()) if exc is not None else "unknown error"
    text = text or type(exc).__name__  # MemoryError and others can have no message
    return (text[:160] + "...") if len(text) > 160 else text


@contextlib.contextmanager
def quiet_logger(name: str):
    """Silence a library's logger for a moment: medseg reports what went wrong itself, as one line."""
    log = logging.getLogger(name)
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
