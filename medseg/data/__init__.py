"""Dataset recipes: a data directory in its real on-disk layout -> sample dicts, and hooks for the later stages.

Each recipe (:class:`medseg.data.base.Recipe`) returns a :class:`RecipeResult` whose samples are MONAI-style
dicts::

    {"image": path | [path, ...], "label": path, "case_id": str,
     "group": str,            # what splits keep together (patient)
     "meta": {...}}           # clinical / csv metadata, JSON-serialisable

Every recipe has a synthetic twin in :mod:`medseg.data.synthetic` that writes a
small fake data set in the same layout, used by the tests and the demo.
"""

from medseg.config import add_recipe_names
from medseg.data import boxes, boxfolder, brats, demo, folder, humanseg, lgg, membrane, nifti, nuclei, ph2, widerface  # noqa: F401  (register recipes)
from medseg.data.base import (  # noqa: F401
    IMAGE,
    LABEL,
    DisplayChannel,
    Recipe,
    RecipeResult,
    get_recipe,
    list_recipes,
    load_samples,
    recipe_or_default,
    register,
)

add_recipe_names(list_recipes)  # a recipe registered in code, without a YAML, loads by name
