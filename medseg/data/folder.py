"""Generic 2D recipe: an image folder and a mask folder paired by file name.

Layout::

    <data_dir>/images/<name>.<png|jpg|bmp|tif>
    <data_dir>/masks/<name>[_mask|_seg|_label].<png|bmp|tif>
"""

from __future__ import annotations

from pathlib import Path

from ..errors import fail
from ..io import IMAGE_2D_EXTS
from .base import IMAGE, LABEL, RecipeResult, files_with_ext, first_subdir, mask_stem, register

IMAGE_DIRS = ["images", "image", "imgs", "img"]
MASK_DIRS = ["masks", "mask", "labels", "label", "gt", "annotations", "segmentations"]
EXPECTED = "expected images/ and masks/ folders of PNG/JPEG/BMP/TIFF files paired by name"


@register("folder")
def folder_samples(data_dir: Path, options: dict) -> RecipeResult:
    img_dir = first_subdir(data_dir, options.get("image_dirs", IMAGE_DIRS))
    mask_dir = first_subdir(data_dir, options.get("mask_dirs", MASK_DIRS))
    if img_dir is None or mask_dir is None:
        return RecipeResult([], info={"expected": EXPECTED})
    masks = {mask_stem(p.stem).lower(): p for p in files_with_ext(mask_dir, IMAGE_2D_EXTS)}
    samples, problems = [], []
    for img in files_with_ext(img_dir, IMAGE_2D_EXTS):
        mask = masks.get(img.stem.lower())
        if mask is None:
            problems.append(str(fail(img, "image has no mask",
                                     f"add {mask_dir.name}/{img.stem}.png (or _mask.png) or remove the image")))
            continue
        samples.append({IMAGE: str(img), LABEL: str(mask), "case_id": img.stem, "group": img.stem, "meta": {}})
    orphans = sorted(set(masks) - {s["case_id"].lower() for s in samples})
    warnings = [f"{mask_dir}: {len(orphans)} masks without an image were ignored"] if orphans else []
    return RecipeResult(samples, warnings, {"expected": EXPECTED}, problems)
