"""Kaggle LGG brain-MRI recipe (Buda et al. 2019, ``kaggle_3m``).

Layout::

    <data_dir>/[kaggle_3m/]TCGA_<inst>_<id>_<date>/TCGA_<inst>_<id>_<date>_<n>.tif
                                                   TCGA_<inst>_<id>_<date>_<n>_mask.tif
    <data_dir>/[kaggle_3m/]data.csv   (one row per patient, optional)

Slices are 2D samples; ``group`` is the patient so splits never share a
patient. :func:`stack_patient` rebuilds a patient's 3D volume.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from ..errors import fail
from ..io import IMAGE_2D_EXTS, file_ext, read_image_2d
from .base import IMAGE, LABEL, RecipeResult, natural_key, register

SLICE_RE = re.compile(r"^(?P<stem>.+)_(?P<n>\d+)$")
EXPECTED = ("expected patient folders 'TCGA_<inst>_<id>_<date>/' holding '<folder>_<n>.tif' slices and "
            "'<folder>_<n>_mask.tif' masks (optionally inside kaggle_3m/)")


def patient_key(folder_name: str) -> str:
    """``TCGA_CS_4941_19960909`` -> ``TCGA_CS_4941`` (the data.csv key)."""
    parts = folder_name.split("_")
    return "_".join(parts[:3]) if len(parts) >= 3 else folder_name


def _patient_dirs(data_dir: Path) -> list[Path]:
    found = []
    for d in [data_dir] + [p for p in data_dir.rglob("*") if p.is_dir()][:5000]:
        if any(f.name.lower().endswith(tuple("_mask" + e for e in IMAGE_2D_EXTS)) for f in d.iterdir() if f.is_file()):
            found.append(d)
    return sorted(found, key=lambda p: natural_key(p.name))


def _read_csv(data_dir: Path) -> tuple[dict[str, dict], Path | None]:
    cands = sorted(data_dir.rglob("data.csv"))[:1] or sorted(data_dir.glob("*.csv"))[:1]
    if not cands:
        return {}, None
    rows = {}
    # utf-8-sig: a spreadsheet-saved CSV starts with a byte-order mark that would otherwise hide the first header
    text = cands[0].read_text(encoding="utf-8-sig", errors="replace")
    try:
        dialect = csv.Sniffer().sniff(text[:4096], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    for row in csv.DictReader(text.splitlines(), dialect=dialect):
        row = {(k or "").strip(): v for k, v in row.items() if isinstance(k, str)}
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


@register("lgg")
def lgg_samples(data_dir: Path, options: dict) -> RecipeResult:
    csv_rows, csv_path = _read_csv(data_dir)
    warnings = [] if csv_path else [f"{data_dir}: no data.csv found; patient metadata unavailable"]
    samples, problems = [], []
    for pdir in _patient_dirs(data_dir):
        pid = patient_key(pdir.name)
        if csv_path and pid not in csv_rows:
            warnings.append(f"{pdir.name}: no row for {pid} in {csv_path.name}; metadata left empty")
        files = [f for f in pdir.iterdir() if f.is_file() and file_ext(f) in IMAGE_2D_EXTS]
        masks = {f.stem[: -len("_mask")].lower(): f for f in files if f.stem.lower().endswith("_mask")}
        images = [f for f in files if not f.stem.lower().endswith("_mask")]
        n_slices = 0
        for img in sorted(images, key=lambda f: natural_key(f.stem)):
            m = SLICE_RE.match(img.stem)
            if not m:
                continue
            mask = masks.get(img.stem.lower())
            if mask is None:
                problems.append(str(fail(img, "slice has no mask",
                                         f"add {img.stem}_mask{img.suffix} beside it or remove the slice")))
                continue
            n_slices += 1
            samples.append({IMAGE: str(img), LABEL: str(mask), "case_id": img.stem, "group": pid,
                            "slice_index": int(m.group("n")), "volume_id": pdir.name,
                            "meta": dict(csv_rows.get(pid, {}))})
        orphans = set(masks) - {i.stem.lower() for i in images}
        if orphans:
            warnings.append(f"{pdir.name}: {len(orphans)} masks without an image were ignored")
    samples.sort(key=lambda s: (natural_key(s["volume_id"]), s["slice_index"]))
    return RecipeResult(samples, warnings, {"csv": str(csv_path) if csv_path else None, "expected": EXPECTED},
                        problems)


def group_by_volume(samples: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(s.get("volume_id", s["group"]), []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s["slice_index"])
    return out


def stack_patient(samples: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """Stack one patient's slices (sorted numerically) into ``(H, W, Z, C)`` image and ``(H, W, Z)`` mask."""
    from ..transforms import binarise_mask_2d

    ordered = sorted(samples, key=lambda s: s["slice_index"])
    imgs, masks = [], []
    for s in ordered:
        img = read_image_2d(s[IMAGE])
        imgs.append(img if img.ndim == 3 else img[..., None])
        masks.append(binarise_mask_2d(read_image_2d(s[LABEL], kind="mask")))
    shapes = {i.shape for i in imgs}
    if len(shapes) != 1:
        raise fail(ordered[0][IMAGE], f"slices of this patient differ in size {sorted(shapes)}",
                   "re-export the slices at one size")
    return np.stack(imgs, axis=2), np.stack(masks, axis=2).astype(np.uint8)

