"""The tables of an evaluation: one metrics row per case and class (``metrics.csv``), the summary per class and
metric (``summary.csv``), and the ranking of cases by Dice.

Units (docs/units.md): mm and mL for volumes; 2D images carry no pixel spacing, so unless ``data.pixel_spacing_mm``
is set their distances are in px (columns ``hd95_px``, ``assd_px``) and their sizes are pixel counts (px²).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from medseg.evaluation.metrics import (
    EXTRA_KEYS,
    bootstrap_ci,
    case_metrics,
    distance_keys,
    extra_metrics,
    metric_names,
)
from medseg.inference.findings import significant

SIZE_KEYS = ["gt_size", "pred_size"]
COUNT_KEYS = ["lesions_gt", "lesions_pred", "lesions_detected"]


def row_keys(length_unit: str = "mm") -> list[str]:
    """The columns metrics.csv may have, in order (the extra metrics only when a recipe asks for them)."""
    return ["case_id", "class", *metric_names(length_unit), *EXTRA_KEYS, *SIZE_KEYS, *COUNT_KEYS]


def units_info(spacing, ndim: int) -> dict:
    """eval.json's unit fields for cases measured with ``spacing`` (None: unknown, so px and pixel/voxel counts)."""
    known = spacing is not None
    size = ("mL" if ndim == 3 else "mm²") if known else ("voxels" if ndim == 3 else "px²")
    return {"spacing_known": known, "size_unit": size, "length_unit": "mm" if known else "px"}


def metrics_rows(
    case_id: str, pred: np.ndarray, gt: np.ndarray, spacing, labels: list[str], extra: tuple[str, ...] = ()
) -> list[dict]:
    """One row per foreground class (and the whole foreground when there are several classes) of one case;
    ``extra`` names the groups of extra metrics to add (a recipe's ``extra_metrics``)."""
    return [
        {
            "case_id": case_id,
            "class": name,
            **_rounded_sizes(case_metrics(p, g, spacing), spacing is not None),
            **extra_metrics(p, g, extra),
        }
        for name, p, g in class_masks(pred, gt, labels)
    ]


def class_masks(pred: np.ndarray, gt: np.ndarray, labels: list[str]) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(class name, predicted mask, true mask)`` of every foreground class of two class maps, and of the whole
    foreground ("all_foreground", the whole tumour for BraTS) when there are several classes."""
    pairs = [(name, pred == c, gt == c) for c, name in enumerate(labels) if c]
    if len(labels) > 2:
        pairs.append(("all_foreground", pred > 0, gt > 0))
    return pairs


def _rounded_sizes(m: dict, physical: bool) -> dict:
    """Sizes as the data support them: mm² and mL to 3 significant figures (the pixel count is exact, the area is
    not known to six digits); pixel and voxel counts stay whole."""
    if physical:
        for k in SIZE_KEYS:
            m[k] = significant(m[k])
    return m


def summarise(df: pd.DataFrame, units: dict | None = None) -> pd.DataFrame:
    """Per class and metric: n, undefined count, mean, SD, median, 95% bootstrap interval, and the unit."""
    units = units or units_info((1.0, 1.0, 1.0), 3)
    length = units["length_unit"]
    unit_of = {
        **dict.fromkeys(distance_keys(length), length),
        **dict.fromkeys(SIZE_KEYS, units["size_unit"]),
        **dict.fromkeys(("vi_split", "vi_merge"), "bits"),
    }
    out = []
    extras = [k for k in EXTRA_KEYS if k in df.columns]
    for cls, g in df.groupby("class", sort=False):
        for metric in metric_names(length) + extras + SIZE_KEYS:
            out.append({"class": cls, "metric": metric, "unit": unit_of.get(metric, ""), **_statistics(g[metric])})
    return pd.DataFrame(out)


def _statistics(column: pd.Series) -> dict:
    """n, undefined count, mean, SD, median and the 95% bootstrap interval of one metric's defined values."""
    v = column.to_numpy(dtype=float)
    finite = v[np.isfinite(v)]
    lo, hi = bootstrap_ci(finite)
    return {
        "n": int(finite.size),
        "n_undefined": int(v.size - finite.size),
        "mean": float(finite.mean()) if finite.size else np.nan,
        "std": float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
        "median": float(np.median(finite)) if finite.size else np.nan,
        "ci95_low": lo,
        "ci95_high": hi,
    }


def rank_cases(df: pd.DataFrame) -> dict[str, str]:
    """Best, median and worst case by mean Dice over foreground classes."""
    per_case = df[df["class"] != "all_foreground"].groupby("case_id")["dice"].mean().sort_values()
    if per_case.empty:
        return {}
    return {"worst": per_case.index[0], "median": per_case.index[len(per_case) // 2], "best": per_case.index[-1]}
