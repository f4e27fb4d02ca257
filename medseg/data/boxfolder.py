"""The ``boxes`` recipe: 2D images in an ``images/`` folder and one box annotation file; each image's mask is drawn
from its boxes (:mod:`medseg.data.boxes`: formats, coordinates, shapes).

Layout::

    <data_dir>/images/**/<name>.<png|jpg|bmp|tif>
    <data_dir>/<boxes>.csv|json|txt        (or <data_dir>/annotations/<boxes>.json; data.options.boxes names one)
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import IMAGE, Recipe, RecipeResult, register
from medseg.data.boxes import box_options, read_boxes, resolve_box_file, with_box_masks
from medseg.data.files import files_below, first_subdir
from medseg.data.folder import IMAGE_DIRS
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS, file_ext

BOX_FILE_EXTS = (".csv", ".json", ".txt")
BOXES_EXPECTED = (
    "expected an images/ folder and one box file (image,x1,y1,x2,y2 CSV, COCO JSON or WIDER FACE text) beside it "
    "or in annotations/, or data.options.boxes naming it"
)


def find_box_file(data_dir: Path, options: dict) -> Path | None:
    """``data.options.boxes``, else the one CSV/JSON/TXT file in the data directory or its ``annotations/``."""
    if options.get("boxes"):
        return resolve_box_file(options["boxes"], data_dir)
    found = [
        p
        for d in (data_dir, data_dir / "annotations")
        for p in (sorted(d.iterdir()) if d.is_dir() else [])
        if p.is_file() and file_ext(p) in BOX_FILE_EXTS and not p.name.lower().startswith(("readme", "license", "."))
    ]
    if len(found) > 1:
        raise fail(
            data_dir,
            f"holds {len(found)} possible box files ({', '.join(p.name for p in found[:4])})",
            "set data.options.boxes to the one to use",
        )
    return found[0] if found else None


def boxes_samples(data_dir: Path, options: dict) -> RecipeResult:
    img_dir = first_subdir(data_dir, options.get("image_dirs", IMAGE_DIRS))
    box_file = find_box_file(data_dir, options)
    if img_dir is None or box_file is None:
        return RecipeResult([], info={"expected": BOXES_EXPECTED})
    shape, categories = box_options(options, f"boxes data in {data_dir}")
    samples = [
        {IMAGE: str(p), "case_id": p.stem, "group": p.stem, "meta": {}} for p in files_below(img_dir, IMAGE_2D_EXTS)
    ]
    if options.get("boxes"):  # load_samples draws data.options.boxes into every recipe's samples: not twice
        return RecipeResult(samples, [], {"expected": BOXES_EXPECTED, "boxes": str(box_file)})
    samples, warnings = with_box_masks(samples, read_boxes(box_file, categories), shape)
    return RecipeResult(samples, warnings, {"expected": BOXES_EXPECTED, "boxes": str(box_file)})


@register
class Boxes(Recipe):
    """2D images in an images/ folder with one box annotation file: each image's mask is drawn from its boxes."""

    name = "boxes"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return boxes_samples(data_dir, options)
