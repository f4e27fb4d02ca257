"""ISBI 2012 electron-microscopy membranes, as the Keras U-Net repository (zhixuhao/unet) ships them.

Layout::

    <data_dir>/train/image/<n>.png     512x512 grey sections of the Drosophila ventral nerve cord
    <data_dir>/train/label/<n>.png     255 = cell interior, 0 = membrane
    <data_dir>/test/<n>.png            unlabelled sections: for ``medseg infer``, never read here

``data_dir`` may also be a folder above it: the Keras repository's root or its ``data/`` folder (``data/membrane``).

The labels mark the cells, not the membranes. Which value is the foreground is ``data.options.foreground_values``;
left unset it is ``[255]``, the cell interior (``default_options``), so a model segments cells and the evaluation's
region scores count cells. ``foreground_values: [0]`` segments the membranes instead.

The sections are consecutive slices of one stack (Cardona et al. 2010), so neighbouring cases look alike: a split by
slice is the only one the data allow, and it is slightly optimistic.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.files import files_with_ext
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS

CELL_INTERIOR, MEMBRANE = 255, 0
EXPECTED = (
    "expected train/image/<n>.png and train/label/<n>.png (the Keras U-Net's data/membrane folder) "
    "under the data directory"
)
# where the membrane folder may sit below the data directory: itself, the Keras repo's data/, or the repo's root
ROOTS = (".", "membrane", "data/membrane")


def find_membrane_root(data_dir: Path) -> Path | None:
    """The folder that holds ``train/image`` and ``train/label``: the data directory or a Keras-repo folder in it."""
    for sub in ROOTS:
        root = data_dir / sub
        if (root / "train" / "image").is_dir() and (root / "train" / "label").is_dir():
            return root
    return None


def membrane_samples(data_dir: Path) -> RecipeResult:
    root = find_membrane_root(data_dir)
    if root is None:
        return RecipeResult([], info={"expected": EXPECTED})
    image_dir, label_dir = root / "train" / "image", root / "train" / "label"
    labels = {p.stem: p for p in files_with_ext(label_dir, IMAGE_2D_EXTS)}
    images = files_with_ext(image_dir, IMAGE_2D_EXTS)  # in natural order: 2 before 10
    samples, problems = [], []
    for img in images:
        label = labels.get(img.stem)
        if label is None:
            problems.append(str(fail(img, "section has no label", f"add train/label/{img.stem}.png or remove it")))
            continue
        samples.append({IMAGE: str(img), LABEL: str(label), "case_id": img.stem, "group": img.stem, "meta": {}})
    orphans = sorted(set(labels) - {img.stem for img in images})
    warnings = [f"{label_dir}: {len(orphans)} labels without an image were ignored"] if orphans else []
    return RecipeResult(samples, warnings, {"expected": EXPECTED, "root": str(root)}, problems)


@register
class Membrane(Recipe):
    """ISBI 2012 EM sections and their labels (255 = cell interior, 0 = membrane); the foreground is the cell
    interior unless ``data.options.foreground_values`` says otherwise (``[0]``: the membranes)."""

    name = "membrane"
    default_options: ClassVar[dict] = {"foreground_values": [CELL_INTERIOR]}
    # the ISBI 2012 challenge's scores: pixel error, and Rand and VI on the cells as regions
    extra_metrics: ClassVar[tuple[str, ...]] = ("pixel_error", "regions")

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return membrane_samples(data_dir)
