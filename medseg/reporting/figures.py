"""The figures of an evaluation folder, drawn for :mod:`medseg.evaluation` when its caller asks for them.

Reporting sits above evaluation: it reads evaluation's masks and tables, and evaluation never imports it. The
command line passes :class:`EvaluationFigures` to ``evaluate_folders`` / ``evaluate_model``; a caller that needs
only the tables passes nothing.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from medseg.evaluation.outputs import Drawing
from medseg.reporting.overlays import save_case_overlay, save_volume_overlay
from medseg.reporting.plots import evaluation_plots, pr_curve_plot


class EvaluationFigures:
    """An overlay PNG per case (2D image, volume, or slices stacked into a volume) and the evaluation's plots."""

    def overlay(self, case: dict, target: Path, title: str, drawing: Drawing) -> str:
        if drawing.stacked_by is not None:
            return save_volume_overlay(case, drawing.labels, target, drawing.stacked_by, title, drawing.values)
        return save_case_overlay(
            case["image"],
            case["ground_truth"],
            case["prediction"],
            drawing.labels,
            target,
            title=title,
            spacing_2d=drawing.spacing_2d,
            modality=drawing.modality,
            instances=drawing.instances,
            values=drawing.values,
        )

    def plots(self, metrics: pd.DataFrame, out_dir: Path, size_unit: str) -> dict[str, str]:
        return evaluation_plots(metrics, out_dir, size_unit)

    def pr_curves(self, curves: dict, out_dir: Path) -> str:
        return pr_curve_plot(curves, out_dir / "pr_curve.png")
