"""WIDER FACE (Yang et al., CVPR 2016) as downloaded: face boxes as weak labels for face segmentation.

Layout (the data directory is the folder holding both, or one of its sub-folders up to two levels down)::

    <data_dir>/WIDER_train/images/<event>/<name>.jpg
    <data_dir>/wider_face_split/wider_face_train_bbx_gt.txt
    <data_dir>/WIDER_val/images/<event>/<name>.jpg        (optional: the val subset)
    <data_dir>/wider_face_split/wider_face_val_bbx_gt.txt

Each image's mask is drawn from its faces (:mod:`medseg.data.boxes`; ``data.options.box_shape: box|ellipse``),
faces marked invalid left out. An image with 0 faces has an empty mask. The val images become the ``val`` subset
(a predefined split, ``data.split.use_predefined``). Images on disk that the file does not list, and images it lists
that are not on disk, are left out with a warning.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import IMAGE, Recipe, RecipeResult, register
from medseg.data.boxes import box_options, read_wider, with_box_masks
from medseg.data.files import files_below
from medseg.io import IMAGE_2D_EXTS

SPLIT_DIR = "wider_face_split"
SUBSETS = {"train": "train", "val": "val"}
EXPECTED = (
    "expected WIDER_train/images/<event>/<name>.jpg and wider_face_split/wider_face_train_bbx_gt.txt "
    "in the data directory (the folder holding both, as the downloads unpack)"
)


def find_root(data_dir: Path) -> Path | None:
    """The folder holding ``wider_face_split/`` and a ``WIDER_<split>/`` folder (searched two levels deep)."""
    frontier = [data_dir]
    for _ in range(3):
        for d in frontier:
            if (d / SPLIT_DIR).is_dir() and any((d / f"WIDER_{s}").is_dir() for s in SUBSETS):
                return d
        frontier = [k for d in frontier for k in sorted(d.iterdir()) if k.is_dir() and not k.name.startswith(".")]
    return None


def _subset_samples(root: Path, split: str, shape: str) -> tuple[list[dict], list[str]] | None:
    """The samples and warnings of one subset; None when its images or its box file are not there."""
    images_dir = root / f"WIDER_{split}" / "images"
    box_file = root / SPLIT_DIR / f"wider_face_{split}_bbx_gt.txt"
    if not images_dir.is_dir() or not box_file.is_file():
        return None
    found = read_wider(box_file)
    listed = {Path(k).as_posix().lower() for k in found.boxes}
    on_disk = files_below(images_dir, IMAGE_2D_EXTS)
    rel = lambda p: p.relative_to(images_dir).as_posix().lower()
    samples = [
        {IMAGE: str(p), "case_id": p.stem, "group": p.stem, "meta": {"event": p.parent.name}, "subset": SUBSETS[split]}
        for p in on_disk
        if rel(p) in listed
    ]
    samples, warnings = with_box_masks(samples, found, shape)
    unlisted = [p for p in on_disk if rel(p) not in listed]
    if unlisted:
        warnings.append(
            f"{images_dir}: {len(unlisted)} of {len(on_disk)} images not listed in {box_file.name} (e.g. "
            f"{rel(unlisted[0])}) left out: an image without an entry may hold faces nobody marked"
        )
    return samples, warnings


def widerface_samples(data_dir: Path, options: dict) -> RecipeResult:
    root = find_root(data_dir)
    if root is None:
        return RecipeResult([], info={"expected": EXPECTED})
    shape, _ = box_options(options, f"widerface data in {data_dir}")
    samples, warnings = [], []
    for split in SUBSETS:
        got = _subset_samples(root, split, shape)
        if got is not None:
            samples += got[0]
            warnings += got[1]
    return RecipeResult(samples, warnings, {"expected": EXPECTED, "root": str(root)})


@register
class WiderFace(Recipe):
    """WIDER FACE: photos with face boxes, each image's mask drawn from its boxes (weak labels)."""

    name = "widerface"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return widerface_samples(data_dir, options)
