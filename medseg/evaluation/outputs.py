"""What an evaluation writes into its folder: ``metrics.csv``, ``summary.csv`` and ``eval.json``, plus the figures
(an overlay PNG per case under ``overlays/`` and the plots) when the caller passes a :class:`Figures`.

Evaluation sits below reporting: it never imports ``medseg.reporting``. The figures are drawn by an object the
caller chooses (``medseg.reporting.figures.EvaluationFigures`` draws them for the command line), so an evaluation
that needs only its tables (a cross-validation fold, a notebook) draws nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pandas as pd

from medseg.data.base import Recipe
from medseg.errors import fail
from medseg.evaluation.lesions import LESION_COLUMNS
from medseg.evaluation.tables import row_keys, summarise
from medseg.io import atomic_write

OUTPUTS = ("metrics.csv", "summary.csv", "lesions.csv", "instances.csv", "eval.json")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    info: dict


@dataclass(frozen=True)
class Drawing:
    """How the cases of one evaluation are drawn, beyond their files: the label names, a 2D image's pixel spacing
    (None: unknown, so no scale bar), the modality of a volume's background image, and for slices stacked into
    volumes the recipe that shows them (its display channel)."""

    labels: list[str]
    spacing_2d: tuple | None = None
    modality: str | None = None
    stacked_by: Recipe | None = None
    instances: bool = False  # the files are instance maps: each object outlined in its own colour
    values: dict[int, int] | None = None  # the ground truth's label values -> classes (data.label_values)


class Figures(Protocol):
    """Draws an evaluation's figures; each method returns the paths it wrote, which eval.json records."""

    def overlay(self, case: dict, target: Path, title: str, drawing: Drawing) -> str:
        """One case's overlay PNG at ``target`` (``case`` holds its image, ground_truth and prediction files)."""

    def plots(self, metrics: pd.DataFrame, out_dir: Path, size_unit: str) -> dict[str, str]:
        """The plots of the metrics table, by name."""

    def pr_curves(self, curves: dict, out_dir: Path) -> str:
        """The precision-recall curves ``{name: (recall, precision)}`` of the detections in one plot."""


def check_out(out_dir: Path, force: bool) -> None:
    """Refuse a folder that holds an evaluation already unless ``force``; create it."""
    existing = [f for f in OUTPUTS if (out_dir / f).exists()]
    if existing and not force:
        raise fail(
            out_dir,
            f"already holds an evaluation ({', '.join(existing)})",
            "pass --force to overwrite or choose another --out",
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def draw_overlays(
    figures: Figures | None, cases: dict, ranks: dict, out_dir: Path, drawing: Drawing, progress: bool
) -> None:
    """Each case's overlay (``overlays/<case>.png``, recorded as the case's ``overlay``); the best, median and worst
    case say so in their title."""
    if figures is None:
        return
    from medseg.progress import track

    tags = {cid: tag for tag, cid in ranks.items()}
    for cid, case in track(cases.items(), desc="overlays", enabled=progress, unit="case"):
        title = f"{cid} ({tags[cid]})" if cid in tags else cid
        case["overlay"] = figures.overlay(case, out_dir / "overlays" / f"{cid}.png", title, drawing)


def write_evaluation(
    out_dir: Path,
    df: pd.DataFrame,
    info: dict,
    figures: Figures | None = None,
    lesions: list[dict] | None = None,
    curves: dict | None = None,
) -> EvalResult:
    """metrics.csv, summary.csv, lesions.csv (the lesion-wise detection rows, when given), the plots (with
    ``figures``; ``curves``: precision-recall curves of the detections) and eval.json, each written whole or not
    at all."""
    df = df[[k for k in row_keys(info["length_unit"]) if k in df.columns]]
    summary = summarise(df, info)
    write_csv(out_dir / "metrics.csv", df)
    write_csv(out_dir / "summary.csv", summary)
    if lesions:
        write_csv(out_dir / "lesions.csv", pd.DataFrame(lesions, columns=LESION_COLUMNS))
    if figures is not None:
        info["plots"] = figures.plots(df, out_dir, info["size_unit"])
        if curves:
            info["plots"]["pr_curve"] = figures.pr_curves(curves, out_dir)
    atomic_write(
        out_dir / "eval.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, default=str)), suffix=".json"
    )
    return EvalResult(out_dir, df, summary, info)


def write_csv(path: Path, table: pd.DataFrame) -> None:
    """A table written whole or not at all, 6 significant figures."""
    atomic_write(path, lambda tmp: table.to_csv(tmp, index=False, float_format="%.6g"), suffix=".csv")
