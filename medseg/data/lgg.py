"""Kaggle LGG brain-MRI recipe (Buda et al. 2019, ``kaggle_3m``).

Layout::

    <data_dir>/[kaggle_3m/]TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>.tif
                                                   TCGA_<inst>_<id>_<date>_<n>_mask.tif
    <data_dir>/[kaggle_3m/]data.csv   (one row per patient, optional)

Slices are 2D samples; ``group`` is the patient so splits never share a
patient, and ``volume_id`` / ``slice_index`` let evaluation stack a scan's
slices back into its volume (:mod:`medseg.data.stacking`;
:func:`stack_patient` reads a patient's image and mask that way). A copy flattened
into ``images/`` and ``masks/`` folders (or one folder) works too: a folder that
holds several patients' slices groups them by the name before ``_<n>``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from medseg.data.base import IMAGE, LABEL, DisplayChannel, Recipe, RecipeResult, register
from medseg.data.files import files_below, natural_key, walk_files
from medseg.data.stacking import group_by_volume, stack_slices  # noqa: F401  (group_by_volume: LGG's volumes)
from medseg.data.tables import read_rows
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS, read_image_2d

SLICE_RE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)$")
EXPECTED = (
    "expected patient folders 'TCGA_<inst>_<id>_<date>/' holding '<folder>_<n>.tif' slices and "
    "'<folder>_<n>_mask.tif' masks (optionally inside kaggle_3m/)"
)


def patient_key(folder_name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the data.csv key)."""
    parts = folder_name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 else folder_name


def _slice_files(data_dir: Path) -> dict[Path, list[Path]]:
    """Image and mask files under ``data_dir`` (any depth), by folder, folders in natural order."""
    by_dir: dict[Path, list[Path]] = {}
    for f in files_below(data_dir, IMAGE_2D_EXTS):
        by_dir.setdefault(f.parent, []).append(f)
    return dict(sorted(by_dir.items(), key=lambda kv: natural_key(kv[0].name)))


def _is_mask(f: Path) -> bool:
    return f.stem.lower().endswith("_mask")


def _patient_dirs(data_dir: Path) -> list[Path]:
    """Folders that hold masks (the patient folders of the original layout)."""
    return [d for d, files in _slice_files(data_dir).items() if any(_is_mask(f) for f in files)]


def read_table(data_dir: Path) -> tuple[dict[str, dict], Path | None]:
    """``({patient: metadata}, path)`` from the data set's data.csv (the first found at any depth, else the first
    .csv beside the slices); ``({}, None)`` without one."""
    cands = [f for f in walk_files(data_dir) if f.name == "data.csv"][:1] or sorted(data_dir.glob("*.csv"))[:1]
    if not cands:
        return {}, None
    rows = {}
    for row in read_rows(cands[0]):
        pcol = next((k for k in row if k.lower() in ("patient", "patient_id", "patientid", "patient id")), None)
        key = (row.get(pcol) or "").strip() if pcol else ""
        if key:
            rows[key] = {k: _num(v) for k, v in row.items() if k and k != pcol}
    return rows, cands[0]


def _num(v):
    if v is None or str(v).strip() == "":
        return None
    try:
        f = float(v)
        return int(f) if f.is_integer() else f
    except ValueError:
        return str(v).strip()


def lgg_samples(data_dir: Path, options: dict) -> RecipeResult:
    csv_rows, csv_path = read_table(data_dir)
    warnings = [] if csv_path else [f"{data_dir}: no data.csv found; patient metadata unavailable"]
    samples, problems = [], []
    by_dir = _slice_files(data_dir)
    masks = _MaskIndex(by_dir)
    unnamed = 0
    unmasked: list[Path] = []
    for d, files in by_dir.items():
        images = [(f, SLICE_RE.match(f.stem)) for f in files if not _is_mask(f)]
        unnamed += sum(m is None for _, m in images)
        images = [(f, m) for f, m in images if m]
        if not images:
            continue
        if not any(masks.of(f, d) for f, _ in images):  # a folder of images without any masks (a test set, say)
            unmasked.append(d)
            warnings.append(
                f"{d}: {len(images)} slice{'s' if len(images) > 1 else ''} without any mask "
                f"(e.g. {images[0][0].name}); left out of training; fix: add the <slice>_mask"
                f"{images[0][0].suffix} files beside them to train on this folder"
            )
            continue
        samples += _folder_samples(d, images, masks, csv_rows, problems)
    warnings += _leftover_warnings(samples, csv_rows, csv_path, masks, unnamed)
    samples.sort(key=lambda s: (natural_key(s["volume_id"]), s["slice_index"]))
    expected = _why_nothing_was_found(unmasked) if not samples and unmasked else EXPECTED
    return RecipeResult(samples, warnings, {"csv": str(csv_path) if csv_path else None, "expected": expected}, problems)


class _MaskIndex:
    """Which mask pairs with a slice: the mask of the same name in its own folder, or, in a copy flattened into
    images/ and masks/ folders, the one mask of that name anywhere in the tree. Remembers the masks it handed out."""

    def __init__(self, by_dir: dict[Path, list[Path]]):
        self.local = {d: {f.stem[: -len("_mask")].lower(): f for f in fs if _is_mask(f)} for d, fs in by_dir.items()}
        self.anywhere: dict[str, list[Path]] = {}
        for folder_masks in self.local.values():
            for key, f in folder_masks.items():
                self.anywhere.setdefault(key, []).append(f)
        self.used: set[Path] = set()

    def of(self, img: Path, folder: Path) -> Path | None:
        key = img.stem.lower()
        hit = self.local[folder].get(key)
        return hit or (self.anywhere[key][0] if len(self.anywhere.get(key, [])) == 1 else None)

    def unused(self) -> list[Path]:
        return [f for folder_masks in self.local.values() for f in folder_masks.values() if f not in self.used]


def _folder_samples(d: Path, images: list, masks: _MaskIndex, csv_rows: dict, problems: list) -> list[dict]:
    """The samples of one folder's named slices; a slice without its mask is a problem naming the file."""
    one_patient = len({m.group("stem") for _, m in images}) == 1
    samples = []
    for img, m in sorted(images, key=lambda fm: natural_key(fm[0].stem)):
        mask = masks.of(img, d)
        if mask is None:
            fix = f"add {img.stem}_mask{img.suffix} beside it or remove the slice"
            problems.append(str(fail(img, "slice has no mask", fix)))
            continue
        masks.used.add(mask)
        volume = d.name if one_patient else m.group("stem")
        pid = patient_key(volume)
        samples.append(
            {
                IMAGE: str(img),
                LABEL: str(mask),
                "case_id": img.stem,
                "group": pid,
                "slice_index": int(m.group("n")),
                "volume_id": volume,
                "meta": dict(csv_rows.get(pid, {})),
            }
        )
    return samples


def _leftover_warnings(samples: list, csv_rows: dict, csv_path, masks: _MaskIndex, unnamed: int) -> list[str]:
    """What was found but not used: patients data.csv lacks, masks without an image, files named otherwise."""
    warnings = []
    if csv_path:
        for vol in sorted({s["volume_id"] for s in samples}, key=natural_key):
            if patient_key(vol) not in csv_rows:
                warnings.append(f"{vol}: no row for {patient_key(vol)} in {csv_path.name}; metadata left empty")
    orphans = masks.unused()
    if orphans and samples:
        warnings.append(
            f"{len(orphans)} masks without an image were ignored ({orphans[0]}{', ...' if len(orphans) > 1 else ''})"
        )
    if unnamed and samples:
        warnings.append(f"{unnamed} image files not named '<patient>_<slice number>' were ignored")
    return warnings


def _why_nothing_was_found(unmasked: list[Path]) -> str:
    """The refusal's expectation when every folder held slices without masks."""
    more = len(unmasked) - 1
    return (
        f"{unmasked[0]}{f' and {more} more folder' + ('s' if more > 1 else '') if more else ''} "
        f"hold{'s' if not more else ''} slices without any mask: add their <slice>_mask.tif files; {EXPECTED}"
    )


def stack_patient(samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Stack one patient's slices (sorted numerically) into ``(H, W, Z, C)`` image and ``(H, W, Z)`` mask."""
    from medseg.data.loading import binarise_mask_2d

    ordered = sorted(samples, key=lambda s: s["slice_index"])
    image = stack_slices([s[IMAGE] for s in ordered], _image_slice)
    mask = stack_slices([s[LABEL] for s in ordered], lambda p: binarise_mask_2d(read_image_2d(p, kind="mask")))
    return image, mask.astype(np.uint8)


def _image_slice(path) -> np.ndarray:
    img = read_image_2d(path)
    return img if img.ndim == 3 else img[..., None]


@register
class LGG(Recipe):
    """Kaggle LGG slices: grouped by patient for splits, stacked per volume for scoring, drawn on FLAIR."""

    name = "lgg"
    display = DisplayChannel(index=1, name="FLAIR")  # the TIFFs hold pre-contrast, FLAIR, post-contrast
    table_name = "LGG data.csv"

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return lgg_samples(data_dir, options)

    def metadata_for(self, image: Path, levels: int) -> dict | None:
        stem = image.name.split(".")[0]
        m = SLICE_RE.match(stem)
        if not (stem.upper().startswith("TCGA_") and m):
            return None
        for d in list(image.parents)[:levels]:
            if (d / "data.csv").is_file():
                rows, _ = read_table(d)
                return dict(rows.get(patient_key(m.group("stem")), {}))
        return None

    def owns_image(self, source: str) -> bool:
        return Path(source).name.upper().startswith("TCGA_")
