"""Human-Segmentation-Dataset (the HumanSegNet project's person set): photos of people and their 0/255 masks.

Layout, as the GitHub repository ships it::

    <data_dir>/Training_Images/<n>.jpg
    <data_dir>/Ground_Truth/<n>.png

Folder names are matched whatever their case (``training_images``, ``Training Images``), images may be JPEG or
PNG, and ``data_dir`` may be the folder above the data set (``Human-Segmentation-Dataset-master/`` as GitHub's
zip unpacks). Two thirds of the masks are a smaller copy of their photo in the same proportions: the common
loading step (:mod:`medseg.data.derived`) brings them to the photo's size and counts them; a mask of other
proportions is refused by the loader, naming it. The few greyscale photos are repeated into the configured
channels by :func:`medseg.data.loading.adapt_channels_2d`.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import Recipe, RecipeResult, register
from medseg.data.folder import folder_samples

IMAGE_DIRS = ["Training_Images", "Training Images", "TrainingImages", "Training-Images", "images"]
MASK_DIRS = ["Ground_Truth", "Ground Truth", "GroundTruth", "Ground-Truth", "masks"]
EXPECTED = (
    "expected Training_Images/<n>.jpg and Ground_Truth/<n>.png (the Human-Segmentation-Dataset layout), "
    "in --data-dir or in its one sub-folder"
)


@register
class HumanSeg(Recipe):
    """Person photos in ``Training_Images/`` and their masks in ``Ground_Truth/``, paired by number."""

    name = "humanseg"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        # the folder recipe's pairing, with this data set's folder names and no ISIC guessing
        return folder_samples(
            data_dir, options, image_dirs=IMAGE_DIRS, mask_dirs=MASK_DIRS, expected=EXPECTED, by_hint=False
        )
