"""PH2 dermoscopy recipe (Mendonca et al., EMBC 2013).

Layout::

    <data_dir>/PH2 Dataset images/IMD003/IMD003_Dermoscopic_Image/IMD003.bmp|jpg|png
                                        /IMD003_lesion/IMD003_lesion.bmp|png
    <data_dir>/PH2_dataset.txt   ('||'-delimited clinical table, optional)

Rows of the table with no images on disk are skipped with a warning; cases on
disk with no row keep empty metadata. Copies that were flattened on the way
(``images/IMD003.jpg`` + ``masks/IMD003_lesion.png``, or all in one folder) are
read too: without IMDxxx case folders, image and lesion files are paired by
name wherever they sit under the data directory.
"""

from __future__ import annotations

import re
from pathlib import Path

from medseg.data.base import IMAGE, LABEL, Recipe, RecipeResult, register
from medseg.data.files import files_below, files_with_ext, natural_key, walk_files
from medseg.errors import fail
from medseg.io import IMAGE_2D_EXTS

CASE_RE = re.compile(r"^IMD\d+$", re.IGNORECASE)
DIAGNOSIS_NAMES = {0: "common nevus", 1: "atypical nevus", 2: "melanoma"}
CRITERIA = ["asymmetry", "pigment_network", "dots_globules", "streaks", "regression_areas", "blue_whitish_veil"]
# PH2_dataset.txt's codes for the dermoscopic criteria (Mendonça et al. 2013)
CRITERIA_CODES = {
    "asymmetry": {0: "fully symmetric", 1: "symmetric in one axis", 2: "fully asymmetric"},
    "pigment_network": {"T": "typical", "AT": "atypical", "A": "absent"},
    "dots_globules": {"T": "typical", "AT": "atypical", "A": "absent"},
    "streaks": {"P": "present", "A": "absent"},
    "regression_areas": {"P": "present", "A": "absent"},
    "blue_whitish_veil": {"P": "present", "A": "absent"},
}
COLOUR_NAMES = {1: "white", 2: "red", 3: "light-brown", 4: "dark-brown", 5: "blue-gray", 6: "black"}
EXPECTED = (
    "expected 'PH2 Dataset images/IMDxxx/IMDxxx_Dermoscopic_Image/IMDxxx.<bmp|jpg|png>' and "
    "'IMDxxx_lesion/IMDxxx_lesion.<ext>' under the data directory"
)


def find_case_root(data_dir: Path) -> Path | None:
    """The folder whose children are IMDxxx case folders (searched 3 levels deep)."""
    frontier = [data_dir]
    for _ in range(4):
        nxt = []
        for d in frontier:
            kids = [k for k in d.iterdir() if k.is_dir()] if d.is_dir() else []
            if any(CASE_RE.match(k.name) for k in kids):
                return d
            nxt.extend(kids)
        frontier = nxt
    return None


def _is_table(p: Path) -> bool:
    return p.suffix.lower() == ".txt" and p.name.lower().replace(" ", "_").startswith("ph2_dataset")


def find_table(data_dir: Path, case_root: Path | None) -> Path | None:
    for d in [data_dir] + ([case_root, case_root.parent] if case_root else []):
        for p in sorted(d.glob("*.txt")):
            if _is_table(p):
                return p
    return None


def parse_table(path: Path) -> dict[str, dict]:
    """Parse ``PH2_dataset.txt`` into ``{case: metadata}``."""
    rows: dict[str, dict] = {}
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip().startswith("||"):
            continue
        fields = [f.strip() for f in line.strip().strip("|").split("||")]
        if len(fields) < 3 or not CASE_RE.match(fields[0]):
            continue
        name, histo, clinical = fields[0].upper(), fields[1], fields[2]
        meta: dict = {"histological_diagnosis": histo or None}
        try:
            meta["diagnosis"] = int(clinical)
            meta["diagnosis_name"] = DIAGNOSIS_NAMES.get(int(clinical))
        except ValueError:
            meta["diagnosis"] = None
        if len(fields) > 3:
            crit = [c.strip() for c in fields[3].split("|")]
            for key, val in zip(CRITERIA, crit):
                meta[key] = int(val) if val.isdigit() else (val or None)
        if len(fields) > 4:
            colours = [int(c) for c in fields[4].split() if c.isdigit()]
            meta["colours"] = [COLOUR_NAMES.get(c, str(c)) for c in colours]
        rows[name] = meta
    return rows


def _single_file(folder: Path, stem: str) -> Path | None:
    """The image file in ``folder``, preferring one named ``stem``."""
    files = files_with_ext(folder, IMAGE_2D_EXTS)
    exact = [f for f in files if f.stem.lower() == stem.lower()]
    return (exact or files or [None])[0]


FLAT_IMAGE_RE = re.compile(r"^(IMD\d+)$", re.IGNORECASE)
FLAT_MASK_RE = re.compile(r"^(IMD\d+)_lesion$", re.IGNORECASE)


def _flat_samples(data_dir: Path, table: dict, table_path: Path | None) -> RecipeResult | None:
    """Pair ``IMDxxx.<ext>`` with ``IMDxxx_lesion.<ext>`` anywhere below ``data_dir``; None when there are none."""
    images, masks = {}, {}
    for f in sorted(files_below(data_dir, IMAGE_2D_EXTS), key=lambda p: len(p.parts)):  # shallowest copy wins
        if m := FLAT_IMAGE_RE.match(f.stem):
            images.setdefault(m.group(1).upper(), f)
        elif m := FLAT_MASK_RE.match(f.stem):
            masks.setdefault(m.group(1).upper(), f)
    if not masks:
        return None
    samples, problems = [], []
    for case in sorted(set(images) | set(masks), key=natural_key):
        if case not in images:
            problems.append(
                str(
                    fail(
                        masks[case],
                        "lesion mask has no image",
                        f"add {case}.bmp (or .jpg/.png) beside it or remove the mask",
                    )
                )
            )
            continue
        if case not in masks:
            problems.append(
                str(
                    fail(
                        images[case],
                        "lesion mask missing",
                        f"add {case}_lesion.bmp (or .png) beside it or remove the image",
                    )
                )
            )
            continue
        samples.append(
            {
                IMAGE: str(images[case]),
                LABEL: str(masks[case]),
                "case_id": case,
                "group": case,
                "meta": dict(table.get(case, {})),
            }
        )
    return RecipeResult(
        samples,
        _table_warnings(table, samples, table_path, data_dir),
        {"table": str(table_path) if table_path else None, "root": str(data_dir), "layout": "flat"},
        problems,
    )


def _table_warnings(table: dict, samples: list[dict], table_path: Path | None, data_dir: Path) -> list[str]:
    """No table at all; or cases on disk without a row in the table, then rows of the table without a case on disk."""
    if table_path is None:
        return [f"{data_dir}: no PH2_dataset.txt found; diagnoses unavailable (stratified splits fall back to random)"]
    if not table:
        return []
    out = [
        f"{s['case_id']}: no row in {table_path.name}; diagnosis unknown" for s in samples if s["case_id"] not in table
    ]
    missing = sorted(set(table) - {s["case_id"] for s in samples}, key=natural_key)
    if missing:
        out.append(
            f"{len(missing)} rows of {table_path.name} have no images on disk and were skipped "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''})"
        )
    return out


def ph2_samples(data_dir: Path, options: dict) -> RecipeResult:
    case_root = find_case_root(data_dir)
    if case_root is None:
        table_path = find_table(data_dir, None) or next((p for p in walk_files(data_dir) if _is_table(p)), None)
        flat = _flat_samples(data_dir, parse_table(table_path) if table_path else {}, table_path)
        return flat or RecipeResult([], info={"expected": EXPECTED})
    table_path = find_table(data_dir, case_root)
    table = parse_table(table_path) if table_path else {}
    samples, problems = [], []
    for case_dir in sorted(
        (d for d in case_root.iterdir() if d.is_dir() and CASE_RE.match(d.name)), key=lambda d: natural_key(d.name)
    ):
        case = case_dir.name.upper()
        img_dir = next((d for d in case_dir.iterdir() if d.is_dir() and "dermoscopic" in d.name.lower()), None)
        les_dir = next((d for d in case_dir.iterdir() if d.is_dir() and d.name.lower().endswith("_lesion")), None)
        image = _single_file(img_dir, case_dir.name) if img_dir else None
        if image is None:
            problems.append(
                str(
                    fail(
                        case_dir,
                        "no dermoscopic image found",
                        f"put the image in {case_dir.name}_Dermoscopic_Image/{case_dir.name}.bmp "
                        "(or .jpg/.png), or remove the case folder",
                    )
                )
            )
            continue
        label = _single_file(les_dir, f"{case_dir.name}_lesion") if les_dir else None
        if label is None:
            problems.append(
                str(
                    fail(
                        case_dir / f"{case_dir.name}_lesion",
                        "lesion mask missing",
                        f"add {case_dir.name}_lesion/{case_dir.name}_lesion.bmp or remove the case folder",
                    )
                )
            )
            continue
        samples.append(
            {IMAGE: str(image), LABEL: str(label), "case_id": case, "group": case, "meta": dict(table.get(case, {}))}
        )
    return RecipeResult(
        samples,
        _table_warnings(table, samples, table_path, data_dir),
        {"table": str(table_path) if table_path else None, "root": str(case_root)},
        problems,
    )


REFERENCE_KEYS = frozenset(["histological_diagnosis", "diagnosis", "diagnosis_name", *CRITERIA, "colours"])


def reference_diagnosis(meta: dict) -> str | None:
    """PH2's clinical diagnosis of a case, decoded; None when it has none."""
    if meta.get("diagnosis_name"):
        return str(meta["diagnosis_name"])
    code = meta.get("diagnosis")
    if code in (None, ""):
        return None
    number = int(code) if str(code).strip().isdigit() else code  # a table read as text gives "1"
    return DIAGNOSIS_NAMES.get(number, f"code {code}")


def reference_rows(meta: dict) -> list[tuple[str, str]]:
    """The report's rows for PH2's annotation of a case: diagnosis, histology, dermoscopic criteria, colours."""
    rows = []
    diagnosis = reference_diagnosis(meta)
    if diagnosis:
        rows.append(("Reference (PH2 annotation)", f"{diagnosis} (clinical diagnosis)"))
    if meta.get("histological_diagnosis"):
        rows.append(("Histology (PH2 annotation)", str(meta["histological_diagnosis"])))
    criteria = [
        f"{k.replace('_', ' ')}: {CRITERIA_CODES[k].get(meta[k], meta[k])}"
        for k in CRITERIA_CODES
        if meta.get(k) not in (None, "")
    ]
    if criteria:
        rows.append(("Dermoscopic criteria (PH2 annotation)", "; ".join(criteria)))
    if meta.get("colours"):
        rows.append(("Colours (PH2 annotation)", ", ".join(map(str, meta["colours"]))))
    return rows


@register
class PH2(Recipe):
    """PH2 dermoscopy: one image and lesion mask per case, and the clinical table PH2_dataset.txt."""

    name = "ph2"
    reference_keys = REFERENCE_KEYS

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return ph2_samples(data_dir, options)

    def metadata_for(self, image: Path, levels: int) -> dict | None:
        m = re.match(r"^(IMD\d+)", image.name, re.IGNORECASE)
        if not (m and CASE_RE.match(m.group(1))):
            return None
        for d in list(image.parents)[:levels]:
            table = find_table(d, None)
            if table:
                return dict(parse_table(table).get(m.group(1).upper(), {}))
        return None

    def reference_rows(self, meta: dict) -> list[tuple[str, str]]:
        return reference_rows(meta)

    def reference_diagnosis(self, meta: dict) -> str | None:
        return reference_diagnosis(meta)
