"""A data set's clinical metadata: found for a single image from the data set's own table, and laid out for the
report as the data set's reference annotation (never as medseg's finding).

Each recipe says what it knows through its hooks (:meth:`Recipe.metadata_for`, :meth:`Recipe.reference_rows`,
...); these functions ask every registered recipe, so the report and ``medseg infer`` need not know which data
set an image came from.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import all_recipes


def lookup_metadata(path: str | Path, levels: int = 4) -> dict:
    """Metadata for one image when it sits inside a layout with a table (PH2, LGG); ``{}`` otherwise."""
    for recipe in all_recipes():
        found = recipe.metadata_for(Path(path), levels)
        if found is not None:
            return found
    return {}


def reference_diagnosis(meta: dict | None) -> str | None:
    """The data set's own diagnosis of a case (PH2's clinical diagnosis), decoded; None when it has none."""
    meta = meta or {}
    return next((d for r in all_recipes() if r.reference_keys & set(meta) and (d := r.reference_diagnosis(meta))), None)


def metadata_rows(meta: dict | None, source: str) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """``(study rows, reference rows)`` for the report: DICOM tags describe the study; a data set's table (PH2,
    LGG data.csv) is its reference annotation, labelled so it never reads as this software's finding. ``source``
    is the input file, whose name may mark it as one data set's."""
    meta = {k: v for k, v in (meta or {}).items() if k != "modality" and v not in (None, "", [])}
    reference: list[tuple[str, str]] = []
    rest = dict(meta)
    for recipe in all_recipes():
        if recipe.reference_keys & set(meta):
            reference += recipe.reference_rows(meta)
        rest = {k: v for k, v in rest.items() if k not in recipe.reference_keys}
    pretty = [
        (k.replace("_", " ").capitalize(), ", ".join(map(str, v)) if isinstance(v, list) else str(v))
        for k, v in rest.items()
    ]
    owner = next((r for r in all_recipes() if r.table_name and r.owns_image(source)), None)
    if owner is not None:  # the columns of the data set's clinical table
        return [], reference + [(f"{k} ({owner.table_name})", v) for k, v in pretty]
    return pretty, reference
