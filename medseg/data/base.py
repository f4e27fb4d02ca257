"""Recipe registry and shared helpers."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from medseg.errors import MedsegError, fail, os_reason

IMAGE = "image"
LABEL = "label"

_RECIPES: dict[str, Callable] = {}


@dataclass
class RecipeResult:
    samples: list[dict]
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one "PATH: PROBLEM; fix: FIX" line per case left out


def register(name: str):
    def deco(fn):
        _RECIPES[name] = fn
        return fn

    return deco


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def get_recipe(name: str) -> Callable:
    if name not in _RECIPES:
        raise MedsegError(f"unknown data recipe '{name}'; fix: use one of {list_recipes()}")
    return _RECIPES[name]


def load_samples(
    recipe: str, data_dir: str | Path, options: dict | None = None, collect_problems: bool = False
) -> RecipeResult:
    """Run a recipe on ``data_dir``; raises MedsegError for a missing or empty layout.

    A recipe leaves out a case it cannot use (an image without a mask, a missing modality) and records why in
    ``problems``. By default the first problem is raised, saying how many more there are; with ``collect_problems``
    (``medseg datasets check``) they are returned, so that one run lists every bad case."""
    data_dir = Path(data_dir)
    fn = get_recipe(recipe)
    if getattr(fn, "generates_data", False) and not data_dir.exists():
        try:
            data_dir.mkdir(parents=True)
        except OSError as exc:
            raise fail(
                data_dir, f"cannot be created ({os_reason(exc)})", "pass a --data-dir in a folder you can write to"
            ) from None
    if not data_dir.exists():
        raise fail(
            data_dir,
            "data directory does not exist",
            f"pass --data-dir pointing at your {recipe} data (see datasets/README.md)",
        )
    if not data_dir.is_dir():
        raise fail(data_dir, "is not a directory", f"pass the folder that holds the {recipe} data")
    result = fn(data_dir, dict(options or {}))
    if result.problems and not collect_problems:
        more = len(result.problems) - 1
        raise MedsegError(
            result.problems[0]
            + (
                f" ({more} more case{'s' if more > 1 else ''} with problems: `medseg datasets check` lists them all)"
                if more
                else ""
            )
        )
    if not result.samples and not result.problems:
        raise fail(
            data_dir, f"no {recipe} cases found", result.info.get("expected", "check the layout in datasets/README.md")
        )
    result.samples, copies = _drop_identical_copies(result.samples)
    if copies:
        a, b = copies[0]
        result.warnings.append(
            f"{data_dir}: {len(copies)} case{'s' if len(copies) > 1 else ''} appear twice with "
            f"identical files (e.g. {a} and {b}, as in archives that unpack a second copy of "
            "the data set): only the first copy is used; point --data-dir at one copy"
        )
    ids = [s["case_id"] for s in result.samples]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})[:3]
        raise fail(data_dir, f"duplicate case ids {dup}", "give every case a unique file or folder name")
    return result


def _files_of(sample: dict) -> list[Path]:
    files = sample[IMAGE] if isinstance(sample[IMAGE], (list, tuple)) else [sample[IMAGE]]
    return [Path(f) for f in files] + ([Path(sample[LABEL])] if sample.get(LABEL) else [])


def _drop_identical_copies(samples: list[dict]) -> tuple[list[dict], list[tuple[str, str]]]:
    """Leave out a case whose id, file names and file sizes repeat an earlier case's (a second copy of the data set
    inside the data directory); return the kept samples and (kept, dropped) image paths of each copy left out."""
    counts: dict[str, int] = {}
    for s in samples:
        counts[s["case_id"]] = counts.get(s["case_id"], 0) + 1
    if all(n == 1 for n in counts.values()):
        return samples, []

    def signature(s):
        return tuple((f.name, f.stat().st_size if f.is_file() else -1) for f in _files_of(s))

    first: dict[str, dict] = {}
    kept, copies = [], []
    for s in samples:
        earlier = first.get(s["case_id"])
        if earlier is not None and signature(earlier) == signature(s):
            copies.append((str(_files_of(earlier)[0]), str(_files_of(s)[0])))
            continue
        first.setdefault(s["case_id"], s)
        kept.append(s)
    return kept, copies


def first_subdir(root: Path, names: list[str]) -> Path | None:
    """The first of ``names`` that exists as a sub-folder of ``root``, matched case-insensitively."""
    lower = {p.name.lower(): p for p in root.iterdir() if p.is_dir()}
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def natural_key(text: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", str(text))]


def files_with_ext(folder: Path, exts: tuple[str, ...]) -> list[Path]:
    from medseg.io import file_ext

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
    from medseg.io import file_ext

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
