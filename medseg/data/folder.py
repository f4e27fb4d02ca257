"""Generic 2D recipe: an image folder and a mask folder paired by file name.

Layout::

    <data_dir>/images/<name>.<png|jpg|bmp|tif>
    <data_dir>/masks/<name>[_mask|_seg|_segmentation|_label].<png|bmp|tif>

When no folder has one of those names, folders named as the ISIC challenges name them are recognised by what their
name contains (``..._GroundTruth`` holds masks; ``..._Input`` / ``..._Data`` holds images, a training one preferred),
and ISIC's ``*_superpixels.png`` files beside the images are skipped.

A data directory may also be the folder an archive unpacked into, with the data set one level down: its single
sub-folder holding ``images/`` + ``masks/`` is read (``Kvasir-SEG/``, Kaggle's
``segmentation_full_body_mads_dataset_1192_img/``). Lossy JPEG masks (Kvasir-SEG) are thresholded by the loader.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.files import files_with_ext, first_subdir, mask_stem
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS

IMAGE_DIRS = ["images", "image", "imgs", "img"]
MASK_DIRS = ["masks", "mask", "labels", "label", "gt", "annotations", "segmentations"]
EXPECTED = "expected images/ and masks/ folders of PNG/JPEG/BMP/TIFF files paired by name"
MASK_HINTS = ("groundtruth", "ground_truth", "mask", "segmentation", "label", "annotation")
IMAGE_HINTS = ("input", "image", "data", "img")
NOT_IMAGES = ("_superpixels",)  # ISIC 2017 ships superpixel maps beside the images


def _by_hint(root: Path, hints: tuple[str, ...], exclude: Path | None = None) -> Path | None:
    """The sub-folder whose name contains one of ``hints``; among several, the one for training."""
    dirs = sorted(d for d in root.iterdir() if d.is_dir() and d != exclude and not d.name.startswith("."))
    for hint in hints:
        found = [d for d in dirs if hint in d.name.lower().replace("-", "_").replace(" ", "_")]
        training = [d for d in found if "train" in d.name.lower()]
        if len(training) == 1 or len(found) == 1:
            return (training or found)[0]
    return None


def _named_dirs(root: Path, image_dirs: list[str], mask_dirs: list[str]) -> tuple[Path | None, Path | None]:
    return first_subdir(root, image_dirs), first_subdir(root, mask_dirs)


def dataset_root(data_dir: Path, image_dirs: list[str], mask_dirs: list[str]) -> tuple[Path, list[Path]]:
    """The folder that holds the image and mask folders: ``data_dir`` itself, else its one sub-folder that does
    (the top folder of an unpacked archive). Returns it and, when several sub-folders hold both, all of them."""
    if all(_named_dirs(data_dir, image_dirs, mask_dirs)):
        return data_dir, []
    subs = sorted(d for d in data_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    holding = [d for d in subs if all(_named_dirs(d, image_dirs, mask_dirs))]
    return (holding[0], []) if len(holding) == 1 else (data_dir, holding)


def _several_sets(expected: str, holding: list[Path]) -> str:
    names = ", ".join(d.name for d in holding[:4])
    return f"{expected}; {len(holding)} sub-folders hold them ({names}): pass one of them as --data-dir"


def folder_samples(
    data_dir: Path,
    options: dict,
    *,
    image_dirs: list[str] = IMAGE_DIRS,
    mask_dirs: list[str] = MASK_DIRS,
    expected: str = EXPECTED,
    by_hint: bool = True,
) -> RecipeResult:
    """Images paired with masks by name, from the first of ``image_dirs`` and ``mask_dirs`` (or ``data.options``'
    ``image_dirs`` / ``mask_dirs``) in ``data_dir`` or its one sub-folder that holds both; with ``by_hint``, ISIC's
    folder names too. Recipes of other image + mask folder layouts call this with their own folder names."""
    image_dirs, mask_dirs = options.get("image_dirs", image_dirs), options.get("mask_dirs", mask_dirs)
    root, holding = dataset_root(data_dir, image_dirs, mask_dirs)
    if holding:
        return RecipeResult([], info={"expected": _several_sets(expected, holding)})
    img_dir, mask_dir = _named_dirs(root, image_dirs, mask_dirs)
    if mask_dir is None and by_hint and "mask_dirs" not in options:
        mask_dir = _by_hint(root, MASK_HINTS)
    if img_dir is None and mask_dir is not None and by_hint and "image_dirs" not in options:
        img_dir = _by_hint(root, IMAGE_HINTS, exclude=mask_dir)
    if img_dir is None or mask_dir is None:
        return RecipeResult([], info={"expected": expected})
    return _paired(img_dir, mask_dir, expected)


def _paired(img_dir: Path, mask_dir: Path, expected: str) -> RecipeResult:
    masks = {mask_stem(p.stem).lower(): p for p in files_with_ext(mask_dir, IMAGE_2D_EXTS)}
    samples, problems = [], []
    for img in files_with_ext(img_dir, IMAGE_2D_EXTS):
        if img.stem.lower().endswith(NOT_IMAGES):
            continue
        mask = masks.get(img.stem.lower())
        if mask is None:
            problems.append(
                str(
                    fail(
                        img,
                        "image has no mask",
                        f"add {mask_dir.name}/{img.stem}.png (or _mask.png) or remove the image",
                    )
                )
            )
            continue
        samples.append({IMAGE: str(img), LABEL: str(mask), "case_id": img.stem, "group": img.stem, "meta": {}})
    orphans = sorted(set(masks) - {s["case_id"].lower() for s in samples})
    warnings = [f"{mask_dir}: {len(orphans)} masks without an image were ignored"] if orphans else []
    return RecipeResult(samples, warnings, {"expected": expected}, problems)


@register
class Folder(Recipe):
    """2D images and masks in two folders, paired by file name."""

    name = "folder"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return folder_samples(data_dir, options)
