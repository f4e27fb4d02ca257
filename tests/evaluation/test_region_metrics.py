"""Pixel error and the Rand / VI scores of regions (the ISBI 2012 scores), on arrays small enough to work by hand.

Rand counts pixel pairs within a region (skimage: sum of n^2 - n over regions), ignoring the ground truth's
background; the prediction's background is one more region. VI is in bits (log base 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from medseg.evaluation.evaluate import evaluate_folders
from medseg.evaluation.metrics import extra_metrics, pixel_error, region_scores
from medseg.evaluation.tables import metrics_rows, summarise, units_info

from ..conftest import csv_rows, run_cli

# two cells of 2 px each either side of a one-pixel membrane
TWO_CELLS = np.array([[1, 1, 0, 1, 1]], bool)


def test_pixel_error_by_hand():
    gt = np.zeros((4, 4), bool)
    gt[:2, :2] = True
    pred = gt.copy()
    pred[0, 0] = False  # a missed pixel
    pred[3, 3] = True  # a false one
    assert pixel_error(pred, gt) == pytest.approx(2 / 16)
    assert pixel_error(gt, gt) == 0.0
    assert pixel_error(~gt, gt) == 1.0


def test_a_perfect_segmentation_scores_no_error():
    s = region_scores(TWO_CELLS, TWO_CELLS)
    assert s == {"rand_error": 0.0, "rand_precision": 1.0, "rand_recall": 1.0, "vi_split": 0.0, "vi_merge": 0.0}


def test_two_cells_merged_into_one_region():
    """Cells A, B (2 px each) in one predicted region P (the membrane pixel under P is ignored).
    Pairs: joint 2*(4-2) = 4; ground truth 2*(4-2) = 4; prediction over the 4 scored px: 16-4 = 12.
    precision 4/4, recall 4/12, error 1 - 4/(4/2 + 12/2) = 0.5. VI: P holds A and B half each, so merge 1 bit."""
    s = region_scores(np.ones_like(TWO_CELLS), TWO_CELLS)
    assert s["rand_precision"] == pytest.approx(1.0)
    assert s["rand_recall"] == pytest.approx(1 / 3)
    assert s["rand_error"] == pytest.approx(0.5)
    assert s["vi_split"] == pytest.approx(0.0, abs=1e-12)
    assert s["vi_merge"] == pytest.approx(1.0)


def test_one_cell_split_by_a_false_membrane():
    """One 4 px cell, predicted as regions of 2, 1 (the prediction's background) and 1 px.
    Pairs: joint 4+1+1-4 = 2; ground truth 16-4 = 12; prediction 2. precision 2/12, recall 2/2,
    error 1 - 2/(12/2 + 2/2) = 5/7. VI split: the entropy of (1/2, 1/4, 1/4) = 1.5 bits; merge 0."""
    gt = np.ones((1, 4), bool)
    pred = np.array([[1, 1, 0, 1]], bool)
    s = region_scores(pred, gt)
    assert s["rand_precision"] == pytest.approx(1 / 6)
    assert s["rand_recall"] == pytest.approx(1.0)
    assert s["rand_error"] == pytest.approx(5 / 7)
    assert s["vi_split"] == pytest.approx(1.5)
    assert s["vi_merge"] == pytest.approx(0.0, abs=1e-12)


def test_a_diagonal_membrane_separates_two_cells():
    """Face connectivity: the 0s on the anti-diagonal split the 3x3 block into two cells of 3 px. One predicted region
    over both merges them (1 bit); with diagonal neighbours the cells would be one and the merge 0."""
    gt = np.array([[1, 1, 0], [1, 0, 1], [0, 1, 1]], bool)
    assert region_scores(np.ones_like(gt), gt)["vi_merge"] == pytest.approx(1.0)


def test_no_cell_in_the_ground_truth_leaves_every_region_score_undefined():
    empty = np.zeros((3, 3), bool)
    assert all(math.isnan(v) for v in region_scores(np.ones_like(empty), empty).values())
    assert pixel_error(empty, empty) == 0.0


def test_extra_metrics_by_group_and_unknown_groups_refused():
    assert set(extra_metrics(TWO_CELLS, TWO_CELLS, ("pixel_error",))) == {"pixel_error"}
    assert len(extra_metrics(TWO_CELLS, TWO_CELLS, ("pixel_error", "regions"))) == 6
    with pytest.raises(ValueError, match="unknown metric groups"):
        extra_metrics(TWO_CELLS, TWO_CELLS, ("rand",))


def test_rows_carry_the_extra_columns_only_when_asked_and_the_summary_gives_their_units():
    pred, gt = np.ones_like(TWO_CELLS).astype(int), TWO_CELLS.astype(int)
    plain = metrics_rows("c", pred, gt, None, ["background", "cell"])
    assert "rand_error" not in plain[0] and "pixel_error" not in plain[0]
    (row,) = metrics_rows("c", pred, gt, None, ["background", "cell"], ("pixel_error", "regions"))
    assert row["pixel_error"] == pytest.approx(1 / 5) and row["vi_merge"] == pytest.approx(1.0)
    import pandas as pd

    summary = summarise(pd.DataFrame([row, {**row, "case_id": "d"}]), units_info(None, 2)).set_index("metric")
    assert summary.loc["vi_merge", "unit"] == "bits" and summary.loc["rand_error", "mean"] == pytest.approx(0.5)


def _write_pair_folders(tmp_path):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    gt_dir.mkdir()
    pred_dir.mkdir()
    gt = np.zeros((8, 8), np.uint8)
    gt[1:4, 1:4] = gt[5:8, 5:8] = 255  # two cells of 9 px
    pred = np.zeros_like(gt)
    pred[1:8, 1:8] = 255  # one region over both
    Image.fromarray(gt).save(gt_dir / "0.png")
    Image.fromarray(pred).save(pred_dir / "0_seg.png")
    return pred_dir, gt_dir


def test_evaluate_folders_writes_the_extra_columns(tmp_path):
    """Two 9 px cells in one region: joint pairs 2*(81-9) = 144, prediction 324-18 = 306; recall 144/306, merge 1."""
    pred_dir, gt_dir = _write_pair_folders(tmp_path)
    res = evaluate_folders(pred_dir, gt_dir, tmp_path / "ev", progress=False, extra_metrics=("pixel_error", "regions"))
    (row,) = csv_rows(tmp_path / "ev" / "metrics.csv")
    assert float(row["rand_recall"]) == pytest.approx(144 / 306, rel=1e-5)
    assert float(row["vi_merge"]) == pytest.approx(1.0, rel=1e-5)
    assert float(row["pixel_error"]) == pytest.approx((49 - 18) / 64, rel=1e-5)
    assert "rand_error" in set(res.summary["metric"]) and res.info["extra_metrics"] == ["pixel_error", "regions"]


def test_the_command_line_adds_a_recipes_metrics_with_data(tmp_path):
    pred_dir, gt_dir = _write_pair_folders(tmp_path)
    plain = run_cli("evaluate", "--pred", pred_dir, "--gt", gt_dir, "--out", tmp_path / "a", "--quiet")
    assert plain.exit_code == 0, plain.output
    assert "rand_error" not in csv_rows(tmp_path / "a" / "metrics.csv")[0]
    membrane = run_cli(
        "evaluate", "--pred", pred_dir, "--gt", gt_dir, "--data", "membrane", "--out", tmp_path / "b", "--quiet"
    )
    assert membrane.exit_code == 0, membrane.output
    assert "Rand error" in membrane.output and "rand_error" in csv_rows(tmp_path / "b" / "metrics.csv")[0]
