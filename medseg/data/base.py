"""Recipes: a data set's layout on disk, and what the other stages need to know about it, as one object.

A :class:`Recipe` turns a data directory into sample dicts (:meth:`Recipe.cases`) and answers, through hooks with
defaults, the questions the later stages ask of a data set: which cases a split keeps together and what it
stratifies by, which 2D slices stack back into one volume, which image channel an overlay shows, how ``medseg
infer`` recognises a folder as one multi-modal case, and what clinical metadata a data set's own table holds for
the report. Inference, evaluation and reporting ask these hooks and never read a recipe's module.

A new recipe is one class in one file, registered by name::

    @register
    class MyRecipe(Recipe):
        name = "mine"

        def cases(self, data_dir, options):
            return RecipeResult([{"image": ..., "label": ..., "case_id": ..., "group": ..., "meta": {}}])

and an import of that file in :mod:`medseg.data`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from medseg.data.files import (  # noqa: F401  (the helpers every recipe uses, importable from here too)
    files_below,
    files_with_ext,
    first_subdir,
    mask_stem,
    natural_key,
    walk_files,
)
from medseg.data.keys import IMAGE, LABEL
from medseg.errors import MedsegError, fail, os_reason


@dataclass
class RecipeResult:
    samples: list[dict]
    warnings: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # one "PATH: PROBLEM; fix: FIX" line per case left out


@dataclass(frozen=True)
class DisplayChannel:
    """The image channel an overlay draws a case on: its index in the stored image (grey images repeated to three
    channels) and the name the overlay's title gives it (None: the config's first channel name)."""

    index: int = 0
    name: str | None = None


class Recipe:
    """One data set layout. Subclasses set :attr:`name` and write :meth:`cases`; every other hook has a default
    that suits a data set of whole images with no table of its own."""

    name: ClassVar[str] = ""
    generates_data: ClassVar[bool] = False  # the recipe writes its data (the demo): a missing folder is created
    display: ClassVar[DisplayChannel] = DisplayChannel()
    # data.options a config leaves unset take these values (membrane: which mask value is the foreground)
    default_options: ClassVar[dict[str, Any]] = {}

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        """The samples found in ``data_dir``, with warnings and the cases left out (``problems``)."""
        raise NotImplementedError(f"recipe {self.name!r} does not say how to find its cases")

    # -- splits -------------------------------------------------------------------------------------------------

    def split_group(self, sample: dict) -> str:
        """What a split keeps on one side: the patient (every slice of an LGG patient), else the case itself."""
        return sample["group"]

    def stratum(self, sample: dict, key: str | None) -> Any:
        """The value a split is stratified by (``data.split.stratify``: PH2's diagnosis, BraTS's grade)."""
        return sample.get("meta", {}).get(key) if key else None

    # -- volumes ------------------------------------------------------------------------------------------------

    def volumes(self, samples: list[dict]) -> dict[str, list[dict]] | None:
        """Slices to stack back into volumes before scoring, ``{volume_id: slices in order}``; None when every
        sample is a whole image or volume. Samples that carry a ``volume_id`` and ``slice_index`` are stacked."""
        from medseg.data.stacking import group_by_volume, is_sliced

        return group_by_volume(samples) if is_sliced(samples) else None

    def display_slice(self, path) -> np.ndarray:
        """The ``(H, W)`` picture of one 2D image that an overlay draws on (:attr:`display`)."""
        from medseg.data.loading import adapt_channels_2d
        from medseg.io import read_image_2d

        return adapt_channels_2d(read_image_2d(path), 3, path)[self.display.index]

    # -- inference ----------------------------------------------------------------------------------------------

    def modality_files(self, folder: Path, channels: list[str], options: dict) -> list[str] | None:
        """One multi-modal case held in ``folder`` (one volume per channel, found by file name:
        :mod:`medseg.data.modalities` and ``data.options.modalities``); None when a channel is missing."""
        from medseg.data.modalities import modality_case

        return modality_case(folder, channels, options.get("modalities"))

    # -- evaluation -------------------------------------------------------------------------------------------

    # metric groups medseg evaluate adds to every row of this data set (medseg.evaluation.metrics.EXTRA_METRICS)
    extra_metrics: ClassVar[tuple[str, ...]] = ()

    # -- clinical metadata --------------------------------------------------------------------------------------

    def metadata_for(self, image: Path, levels: int) -> dict | None:
        """A single image's row in the data set's own table, when it sits in this recipe's layout (searched up to
        ``levels`` folders up); None when the image is not one of this data set's."""
        return None

    reference_keys: ClassVar[frozenset[str]] = frozenset()  # metadata keys that are the data set's annotation

    def reference_rows(self, meta: dict) -> list[tuple[str, str]]:
        """``(label, text)`` rows of a case's reference annotation (the data set's own, never medseg's) for the
        report, from the :attr:`reference_keys` in ``meta``."""
        return []

    def reference_diagnosis(self, meta: dict) -> str | None:
        """The data set's own diagnosis of a case, decoded; None when it records none."""
        return None

    table_name: ClassVar[str | None] = None  # a clinical table whose other columns the report labels as such

    def owns_image(self, source: str) -> bool:
        """Whether an input file's name marks it as this data set's (its table's columns are then reference)."""
        return False


_RECIPES: dict[str, Recipe] = {}


def register(cls: type[Recipe]) -> type[Recipe]:
    """Class decorator: make a recipe available under its ``name`` (``--data NAME``, ``data.recipe``)."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a name to be registered")
    _RECIPES[cls.name] = cls()
    return cls


def list_recipes() -> list[str]:
    return sorted(_RECIPES)


def all_recipes() -> list[Recipe]:
    """The registered recipes, in the order they were registered."""
    return list(_RECIPES.values())


def get_recipe(name: str) -> Recipe:
    if name not in _RECIPES:
        raise MedsegError(f"unknown data recipe '{name}'; fix: use one of {list_recipes()}")
    return _RECIPES[name]


def recipe_or_default(name: str | None) -> Recipe:
    """The recipe of that name, or the default hooks for a name not registered here (a checkpoint trained with a
    recipe of someone else's): inference and evaluation then treat its cases as whole images."""
    return _RECIPES.get(name or "") or Recipe()


def load_samples(
    recipe: str, data_dir: str | Path, options: dict | None = None, collect_problems: bool = False
) -> RecipeResult:
    """Run a recipe on ``data_dir``; raises MedsegError for a missing or empty layout.

    A recipe leaves out a case it cannot use (an image without a mask, a missing modality) and records why in
    ``problems``. By default the first problem is raised, saying how many more there are; with ``collect_problems``
    (``medseg datasets check``) they are returned, so that one run lists every bad case."""
    data_dir = Path(data_dir)
    found = get_recipe(recipe)
    _check_data_dir(found, recipe, data_dir)
    options = {**found.default_options, **(options or {})}
    result = found.cases(data_dir, dict(options))
    if result.problems and not collect_problems:
        raise MedsegError(result.problems[0] + _more_problems(len(result.problems) - 1))
    if not result.samples and not result.problems:
        raise fail(
            data_dir, f"no {recipe} cases found", result.info.get("expected", "check the layout in datasets/README.md")
        )
    result.samples, copies = _drop_identical_copies(result.samples)
    from medseg.data.derived import derive_masks  # scaled copies of masks, foreground values: one cached mask each

    result.samples, notes = derive_masks(result.samples, dict(options), f"{recipe} data in {data_dir}")
    result.warnings.extend(notes)
    from medseg.data.boxes import apply_boxes  # data.options.boxes: each label drawn from its image's boxes

    result.samples, notes = apply_boxes(result.samples, dict(options or {}), data_dir, f"{recipe} data in {data_dir}")
    result.warnings.extend(notes)
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


def _check_data_dir(recipe: Recipe, name: str, data_dir: Path) -> None:
    """Refuse a data directory that is missing or not a folder (a generating recipe creates it)."""
    if recipe.generates_data and not data_dir.exists():
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
            f"pass --data-dir pointing at your {name} data (see datasets/README.md)",
        )
    if not data_dir.is_dir():
        raise fail(data_dir, "is not a directory", f"pass the folder that holds the {name} data")


def _more_problems(more: int) -> str:
    if not more:
        return ""
    return f" ({more} more case{'s' if more > 1 else ''} with problems: `medseg datasets check` lists them all)"


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
