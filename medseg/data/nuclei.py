"""Nuclei recipe: the Kaggle Data Science Bowl 2018 stage-1 layout, and instance label maps in general.

Data Science Bowl layout (Caicedo et al., Nature Methods 2019), one folder per image::

    <data_dir>/stage1_train/<id>/images/<id>.png      RGBA microscopy image (alpha dropped by the loader)
                           /<id>/masks/<mask id>.png  one 0/255 file per nucleus

``data_dir`` may be ``stage1_train`` itself or the folder above it (``stage1_test/`` beside it is not read). Each
image's per-nucleus masks become one instance label map (0 background, 1..N in the masks' name order), written
once as a 16-bit PNG to medseg's cache (:mod:`medseg.data.derived`). The sample's ``label`` is that map, so a
binary task trains on the union of the nuclei; ``instances`` names the same file for instance work, and
:func:`instance_map` reads it. ``meta["objects"]`` is the number of nuclei.

**Overlaps.** Where masks overlap, the smallest nucleus keeps the pixel (equal sizes: the later file in name
order). A nucleus drawn generously over its neighbour would otherwise swallow a small one whole; giving the pixel
to the smaller object loses at most a rim of the larger.

**Cases left out**, each named by a problem line: a case folder without ``masks/`` (the stage-1 test set ships
none: run ``medseg infer`` on its images instead), a mask of another size than its image, more objects than a
16-bit map holds (65535).

Generic instance layout, read when no Data Science Bowl case folders are found (or with
``data.options.layout: instances``)::

    <data_dir>/images/<name>.<png|tif|...>
    <data_dir>/instances/<name>.<png|tif>      (or labels/): one integer per object, 0 background

The map is renumbered 1..N (by its values' order) into the same cached 16-bit PNG, so an 8-bit or 32-bit map
reads like the Data Science Bowl's. ``data.options.layout: dsb`` insists on the Data Science Bowl layout.
"""

from __future__ import annotations

import hashlib
import os
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.coco_masks import CocoMasks, annotation_mask, find_coco_json, read_coco_masks
from medseg.data.derived import derived_mask, image_sizes
from medseg.data.files import files_with_ext, first_subdir, mask_stem, natural_key
from medseg.errors import MedsegError, fail
from medseg.io import IMAGE_2D_EXTS, read_image_2d

INSTANCES = "instances"  # the sample key naming the instance label map
MAX_OBJECTS = 65535  # what a 16-bit label map holds
TRAIN_DIRS = ["stage1_train", "stage2_train"]
INSTANCE_DIRS = ["instances", "labels"]
LAYOUTS = ("auto", "dsb", "instances", "coco")
OVERLAP_RULE = "smallest-object-keeps-pixel"
EXPECTED = (
    "expected stage1_train/<id>/images/<id>.png with stage1_train/<id>/masks/<one file per nucleus>.png "
    "(the Data Science Bowl 2018 layout), images/<name>.png with instances/<name>.png|tif label maps, or images/ "
    "with a COCO instance JSON (annotations/*.json)"
)


def instance_map(sample: dict | str | Path) -> np.ndarray:
    """A sample's instance label map as ``(H, W)`` uint16: 0 background, 1..N one value per object."""
    path = sample[INSTANCES] if isinstance(sample, dict) else sample
    return np.asarray(read_image_2d(path, kind="mask"), dtype=np.uint16)


def count_objects(label_map: np.ndarray) -> int:
    """How many objects a map renumbered 1..N holds: its largest value."""
    return int(label_map.max(initial=0))


# -- finding the layout ---------------------------------------------------------------------------------------------


def _case_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold an ``images/`` folder (Data Science Bowl cases), in name order."""
    if not root.is_dir():
        return []
    kids = [k for k in root.iterdir() if k.is_dir() and not k.name.startswith(".")]
    return sorted((k for k in kids if first_subdir(k, ["images"]) is not None), key=lambda k: natural_key(k.name))


def find_dsb_root(data_dir: Path) -> Path | None:
    """The folder of Data Science Bowl case folders: ``data_dir`` itself or its ``stage1_train/``."""
    if _case_folders(data_dir):
        return data_dir
    train = first_subdir(data_dir, TRAIN_DIRS)
    return train if train is not None and _case_folders(train) else None


def _layout(options: dict, data_dir: Path) -> str:
    layout = str(options.get("layout", "auto")).lower()
    if layout not in LAYOUTS:
        raise fail(data_dir, f"data.options.layout is {layout!r}", f"use one of {', '.join(LAYOUTS)}")
    return layout


# -- Data Science Bowl: one mask file per nucleus --------------------------------------------------------------------


def _case_image(case: Path) -> Path | None:
    """The image of a case folder: ``images/<id>.<ext>``, else the folder's only image."""
    files = files_with_ext(first_subdir(case, ["images"]), IMAGE_2D_EXTS)
    named = [f for f in files if f.stem == case.name]
    return (named or files or [None])[0]


def _size_problem(mask_file: Path, mask_hw: tuple, image: Path, image_hw: tuple) -> MedsegError:
    return fail(
        mask_file,
        f"mask is {mask_hw[0]}x{mask_hw[1]} but its image {image.name} is {image_hw[0]}x{image_hw[1]}",
        "re-export the mask at the image's size or remove it",
    )


@dataclass(frozen=True)
class Blob:
    """One object: the box it sits in (top-left corner) and its pixels inside the box."""

    top: int
    left: int
    pixels: np.ndarray  # bool (h, w)

    @property
    def area(self) -> int:
        return int(self.pixels.sum())


def blob_of(mask: np.ndarray) -> Blob:
    """The object a mask marks (not 0), cropped to its box: small to keep, quick to paint."""
    fg = mask.max(axis=-1) if mask.ndim == 3 else mask
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    if not rows.size:
        return Blob(0, 0, np.zeros((0, 0), bool))
    box = fg[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    return Blob(int(rows[0]), int(cols[0]), box != 0)


def _read_blob(mask_file: Path, image: Path, image_hw: tuple) -> Blob:
    """One nucleus mask file as a :class:`Blob`; refuses a mask of another size than its image."""
    mask = read_image_2d(mask_file, kind="mask")
    if mask.shape[:2] != image_hw:
        raise _size_problem(mask_file, mask.shape[:2], image, image_hw)
    return blob_of(mask)


def paint_instances(blobs: list[Blob], hw: tuple[int, int]) -> np.ndarray:
    """One uint16 label map of ``blobs``, object k (from 0) as value k + 1, then renumbered 1..N.

    Overlaps go to the smallest object: the largest is painted first and every smaller one over it (equal sizes
    in list order, so the later one wins). An object whose pixels all went to smaller ones, or an empty mask,
    leaves no value, and the values after it close the gap."""
    out = np.zeros(hw, np.uint16)
    areas = [b.area for b in blobs]
    for k in sorted(range(len(blobs)), key=lambda k: (-areas[k], k)):
        b = blobs[k]
        h, w = b.pixels.shape
        out[b.top : b.top + h, b.left : b.left + w][b.pixels] = k + 1
    return _renumbered(out)


def _renumbered(label_map: np.ndarray) -> np.ndarray:
    """Values 1..N in the order of the map's own values (0 stays background), as uint16 (callers check N)."""
    flat = label_map.ravel()
    if flat.size and 0 <= flat.min() and flat.max() < 2**20:  # a lookup table: no sort of every pixel
        flat = flat.astype(np.int64)
        present = np.bincount(flat, minlength=1) > 0
        present[0] = False
        lut = np.cumsum(present).astype(np.uint16)
        return lut[flat].reshape(label_map.shape)
    values, inverse = np.unique(flat, return_inverse=True)
    inverse = inverse + (values[0] != 0)  # no background: every value is an object
    return inverse.reshape(label_map.shape).astype(np.uint16)


def _too_many(where: Path, n: int, what: str) -> MedsegError:
    return fail(
        where,
        f"{n} {what}: more objects than a 16-bit label map holds ({MAX_OBJECTS})",
        "split the image into tiles with fewer objects each",
    )


def _mask_files(masks_dir: Path | None) -> list[os.DirEntry]:
    """The mask files of a case, in natural name order, listed with their sizes and times in one pass (17,720
    files: a scan of each folder, where a path-by-path walk takes seconds)."""
    if masks_dir is None:
        return []
    with os.scandir(masks_dir) as found:
        files = [e for e in found if _is_image_name(e.name) and e.is_file()]
    return sorted(files, key=lambda e: natural_key(e.name))


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_2D_EXTS


def _listing_key(files: list[os.DirEntry]) -> str:
    """A digest of the masks' names, sizes and modification times: an edited, added or removed mask derives the
    map again."""
    text = "\n".join(f"{e.name}\t{e.stat().st_size}\t{e.stat().st_mtime_ns}" for e in files)
    return hashlib.sha256(text.encode()).hexdigest()


def _stored_size(image: Path) -> tuple[int, int]:
    """``(h, w)`` of an image as stored, from its header (microscopy images carry no EXIF orientation)."""
    from PIL import Image

    with Image.open(image) as im:
        return im.size[1], im.size[0]


def _dsb_case(case: Path) -> dict:
    """One Data Science Bowl case folder as a sample whose label is its derived instance map."""
    image = _case_image(case)
    if image is None:
        raise fail(case / "images", "no image in this case folder", f"add images/{case.name}.png or remove the case")
    masks_dir = first_subdir(case, ["masks"])
    masks = _mask_files(masks_dir)
    if not masks:
        raise fail(
            case,
            "case has no masks/ (a test-set case has no ground truth)",
            "add masks/<one file per nucleus>.png, or move the folder out and run medseg infer on its image",
        )
    if len(masks) > MAX_OBJECTS:
        raise _too_many(masks_dir, len(masks), "mask files")
    image_hw = _stored_size(image)

    def build() -> np.ndarray:
        return paint_instances([_read_blob(Path(m.path), image, image_hw) for m in masks], image_hw)

    params = {"overlap": OVERLAP_RULE, "masks": _listing_key(masks)}
    return _sample(case.name, image, masks_dir, derived_mask("nuclei", [image, masks_dir], params, build))


def _sample(case_id: str, image: Path, source: Path, label: Path) -> dict:
    return {
        IMAGE: str(image),
        LABEL: str(label),
        INSTANCES: str(label),
        "label_source": str(source),
        "case_id": case_id,
        "group": case_id,
        "meta": {"objects": count_objects(instance_map(label))},
    }


# -- generic: one instance label map per image -------------------------------------------------------------------


def _instance_pairs(data_dir: Path, options: dict) -> tuple[list[tuple[Path, Path]], list[str]] | None:
    """``(image, label map)`` pairs of ``images/`` and ``instances/`` (or ``labels/``), and a problem line per
    image without a map; None when there are no such folders."""
    img_dir = first_subdir(data_dir, options.get("image_dirs", ["images"]))
    map_dir = first_subdir(data_dir, options.get("instance_dirs", INSTANCE_DIRS))
    if img_dir is None or map_dir is None:
        return None
    maps = {mask_stem(p.stem).lower(): p for p in files_with_ext(map_dir, IMAGE_2D_EXTS)}
    pairs, problems = [], []
    for img in files_with_ext(img_dir, IMAGE_2D_EXTS):
        found = maps.get(img.stem.lower())
        if found is None:
            problems.append(str(fail(img, "image has no instance map", f"add {map_dir.name}/{img.stem}.png")))
        else:
            pairs.append((img, found))
    return pairs, problems


def _integer_map(path: Path) -> np.ndarray:
    """A label map file as one channel of whole non-negative values; refuses colour maps and fractions."""
    arr = read_image_2d(path, kind="mask")
    if arr.ndim == 3:
        if not (arr == arr[..., :1]).all():
            raise fail(path, "instance map has colour channels", "save one channel, one whole value per object")
        arr = arr[..., 0]
    fractions = not np.issubdtype(arr.dtype, np.integer) and not (np.isfinite(arr) & (arr == np.round(arr))).all()
    if fractions:
        raise fail(path, "instance map has values that are not whole numbers", "save one integer per object")
    if arr.min(initial=0) < 0:
        raise fail(path, "instance map has negative values", "save 0 for background and 1..N for the objects")
    return arr


def _instance_case(image: Path, map_file: Path) -> dict:
    """One image and its instance label map as a sample whose label is the map renumbered into the cache."""

    def build() -> np.ndarray:
        arr = _integer_map(map_file)
        upright, stored = image_sizes(image)
        if arr.shape not in (upright, stored):
            raise _size_problem(map_file, arr.shape, image, upright)
        n = len(np.unique(arr[arr != 0]))
        if n > MAX_OBJECTS:
            raise _too_many(map_file, n, "objects")
        return _renumbered(arr)

    return _sample(image.stem, image, map_file, derived_mask("instances", [map_file], {"renumber": 1}, build))


# -- the recipe --------------------------------------------------------------------------------------------------


def _derive_all(jobs: list, make) -> tuple[list[dict], list[str]]:
    """``make(*job)`` for every job, in order; a MedsegError becomes that case's problem line. (One thread: on two
    cores a pool of 2 or 4 reading the 17,720 Data Science Bowl masks was no faster, the decoding being small.)"""
    samples, problems = [], []
    for job in jobs:
        try:
            samples.append(make(*job))
        except MedsegError as exc:
            problems.append(str(exc))
    return samples, problems


def summary(samples: list[dict], what: str = "nuclei") -> str:
    """The data set as a biologist counts it: ``400 images, 17,720 nuclei (1 to 375 per image, median 28)``, and
    what the masks medseg checks are."""
    counts = [s["meta"]["objects"] for s in samples]
    if not counts:
        return f"no images with {what}"
    return (
        f"{len(counts)} image{'s' if len(counts) != 1 else ''}, {sum(counts):,} {what} ({min(counts)} to "
        f"{max(counts)} per image, median {statistics.median(counts):g}); each image's masks are one label map "
        f"with a value per {what[:-1] if what == 'objects' else 'nucleus'}"
    )


@register
class Nuclei(Recipe):
    """Microscopy images and their nuclei as instance label maps (Data Science Bowl 2018, or one map per image)."""

    name = "nuclei"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        layout = _layout(options, data_dir)
        if options.get("coco") and layout in ("auto", "coco"):  # named outright: it wins over what is found
            return _coco_result(data_dir, find_coco_json(data_dir, options), options)
        root = find_dsb_root(data_dir) if layout in ("auto", "dsb") else None
        if root is not None:
            samples, problems = _derive_all([(c,) for c in _case_folders(root)], _dsb_case)
            return _result(samples, problems, "nuclei")
        found = _instance_pairs(data_dir, options) if layout in ("auto", "instances") else None
        if found is None:
            coco = find_coco_json(data_dir, options) if layout in ("auto", "coco") else None
            if coco is not None:
                return _coco_result(data_dir, coco, options)
            return RecipeResult([], info={"expected": EXPECTED})
        pairs, missing = found
        samples, problems = _derive_all(pairs, _instance_case)
        return _result(samples, missing + problems, "objects")


def _coco_result(data_dir: Path, path: Path, options: dict) -> RecipeResult:
    """The images of a COCO instance JSON, each with its annotations painted into a cached instance map."""
    cats = list(options.get("categories") or [])
    coco = read_coco_masks(path, cats)
    jobs, problems = [], []
    for image_id, entry in coco.images.items():
        image = _coco_image(data_dir, path, str(entry["file_name"]))
        if image is None:
            problems.append(str(fail(data_dir / "images" / entry["file_name"], "listed in the COCO JSON but not found",
                                     f"add the image or remove it from {path.name}")))  # fmt: skip
        else:
            jobs.append((image, image_id, entry))

    def make(image: Path, image_id: int, entry: dict) -> dict:
        upright, stored = image_sizes(image)
        listed = (entry.get("height"), entry.get("width"))
        if None not in listed and tuple(int(v) for v in listed) not in (upright, stored):
            raise fail(image, f"is {upright[0]}x{upright[1]} but {path.name} says {listed[0]}x{listed[1]}",
                       "re-export the annotations for this image")  # fmt: skip
        hw = upright if None in listed else tuple(int(v) for v in listed)
        build = lambda: instance_map_of(coco, image_id, hw)
        label = derived_mask("coco", [path], {"image": str(entry["file_name"]), "categories": cats}, build)
        return _sample(image.stem, image, path, label)

    samples, failed = _derive_all(jobs, make)
    res = _result(samples, problems + failed, "objects")
    if coco.left_out:
        left = ", ".join(f"{n} {why}" for why, n in sorted(coco.left_out.items()))
        res.info["summary"] += f"; left out of {path.name}: {left}"
    return res


def instance_map_of(coco: CocoMasks, image_id: int, hw: tuple[int, int]) -> np.ndarray:
    """The uint16 instance map of one COCO image: its annotations in file order, overlaps to the smallest object."""
    anns = coco.annotations[image_id]
    if len(anns) > MAX_OBJECTS:
        raise _too_many(coco.path, len(anns), "annotations")
    return paint_instances([blob_of(annotation_mask(a, hw, coco.path)) for a in anns], hw)


def _coco_image(data_dir: Path, json_path: Path, file_name: str) -> Path | None:
    """A COCO ``file_name`` on disk: under ``images/``, the data folder, or beside the JSON's folder."""
    for base in (data_dir / "images", data_dir, json_path.parent.parent / "images", json_path.parent):
        p = base / file_name
        if p.is_file():
            return p
    return None


def _result(samples: list[dict], problems: list[str], what: str) -> RecipeResult:
    return RecipeResult(samples, info={"expected": EXPECTED, "summary": summary(samples, what)}, problems=problems)
