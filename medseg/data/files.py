"""Finding a data set's files: natural order, extensions, link-safe walks and mask names."""

from __future__ import annotations

import os
import re
from pathlib import Path

from medseg.io import file_ext


def natural_key(text: str):
    """Sort key that orders numbers by value: ``slice_2`` before ``slice_10``."""
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def first_subdir(root: Path, names: list[str]) -> Path | None:
    """The first of ``names`` that exists as a sub-folder of ``root``, matched case-insensitively."""
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def files_with_ext(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    """Files of ``exts`` directly in ``folder`` (hidden ones skipped), in natural order of their names."""
    if not folder.is_dir():
        return []
    return sorted(
        (p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and file_ext(p) in exts),
        key=lambda p: natural_key(p.name),
    )


def walk_files(folder: Path) -> list[Path]:
    """Every file at any depth below ``folder``, in path order, following symlinked folders (linking a split's
    cases into a folder is the usual way to make one) but walking each real folder once, so that a folder linked
    twice is read once and a link back up the tree ends instead of looping. Files are listed by name: two names
    of one file (masks linked to one empty mask, say) stay two. ``Path.rglob`` follows no links (Python 3.11)."""
    seen_dirs: set[str] = set()
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen_dirs:
            dirs[:] = []  # a folder reached a second time, through a link: its files are listed already
            continue
        seen_dirs.add(real)
        dirs.sort()
        found.extend(Path(root) / f for f in files)
    return sorted(p for p in found if p.is_file())


def files_below(folder: Path, exts: tuple[str, ...], limit: int = 500000) -> list[Path]:
    """Files of ``exts`` at any depth below ``folder`` (hidden ones skipped), in path order, at most ``limit``;
    symlinked folders are followed, each real file listed once (:func:`walk_files`)."""
    return [p for p in walk_files(folder) if not p.name.startswith(".") and file_ext(p) in exts][:limit]


MASK_SUFFIXES = (
    "_mask",
    "_seg",
    "_segmentation",
    "_label",
    "_labels",
    "_lesion",
    "_gt",
    "_annotation",
    "-mask",
    "-seg",
    "-segmentation",
    "-label",
    ".seg",
)  # .seg: 3D Slicer's <case>.seg.nrrd


def mask_stem(stem: str) -> str:
    """Strip a trailing mask suffix (``_mask``, ``_seg``, ...) so images and masks pair by name."""
    low = stem.lower()
    for suf in MASK_SUFFIXES:
        if low.endswith(suf):
            return stem[: -len(suf)]
    return stem
