"""Lesion-wise detection of semantic evaluations, on cases worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from medseg.evaluation.lesions import LesionDetections, quantised


def two_cases():
    """Case 1: true lesions A and B; the prediction covers A (probability 0.9) and a stray blob (0.3).
    Case 2: true lesion C (4x4), predicted as a 4x4 square shifted by 2 columns (IoU 8/24 = 1/3, probability 0.8)."""
    gt1, pred1 = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    gt1[0:4, 0:4] = gt1[10:14, 10:14] = 1
    pred1[0:4, 0:4] = pred1[16:19, 0:3] = 1
    prob1 = np.where(pred1 > 0, 0.3, 0.05)
    prob1[0:4, 0:4] = 0.9
    gt2, pred2 = np.zeros((20, 20), np.uint8), np.zeros((20, 20), np.uint8)
    gt2[5:9, 5:9] = 1
    pred2[5:9, 7:11] = 1
    prob2 = np.where(pred2 > 0, 0.8, 0.0)
    return [(pred1, gt1, prob1), (pred2, gt2, prob2)]


def test_rows_of_the_hand_worked_cohort():
    lesions = LesionDetections(["background", "lesion"])
    for pred, gt, prob in two_cases():
        lesions.add(pred, gt, lesions.probabilities(prob[None]))
    at = {r["iou"]: r for r in lesions.rows()}
    # IoU 0.1: A and C found, B missed, the stray blob false
    low = at[0.1]
    assert (low["lesions_true"], low["lesions_pred"], low["tp"], low["fp"], low["fn"]) == (3, 3, 2, 1, 1)
    assert low["precision"] == pytest.approx(2 / 3) and low["recall"] == pytest.approx(2 / 3)
    # ranked A (0.9, hit), C (0.8, hit), stray (0.3, false): precision 1 up to recall 2/3, i.e. 67 of 101 steps
    assert low["ap"] == pytest.approx(67 / 101)
    assert low["sensitivity_at_1fp"] == pytest.approx(2 / 3)  # 2 false positives allowed over 2 cases
    # IoU 0.5: C's 1/3 is too little
    high = at[0.5]
    assert (high["tp"], high["fp"], high["fn"]) == (1, 2, 2) and high["ap"] == pytest.approx(34 / 101)
    assert low["cases"] == high["cases"] == 2


def test_masks_without_probabilities_count_but_do_not_rank():
    lesions = LesionDetections(["background", "lesion"])
    for pred, gt, _ in two_cases():
        lesions.add(pred, gt, None)
    row = lesions.rows()[0]
    assert row["tp"] == 2 and row["recall"] == pytest.approx(2 / 3) and not lesions.scored
    assert math.isnan(row["ap"]) and math.isnan(row["sensitivity_at_2fp"])


def test_multiclass_lesions_per_class_and_for_the_whole_foreground():
    lesions = LesionDetections(["background", "core", "edema"])
    assert lesions.names == ["core", "edema", "all_foreground"]
    probs = np.zeros((3, 4, 4))
    probs[0], probs[1, 0, 0], probs[2, 0, 0] = 0.25, 0.5, 0.25
    maps = lesions.probabilities(probs)
    assert maps["core"][0, 0] == 0.5 and maps["all_foreground"][0, 0] == pytest.approx(0.75)
    gt = np.zeros((6, 6), np.uint8)
    gt[0:2, 0:2], gt[0:2, 2:4] = 1, 2  # touching: one lesion of the whole foreground
    lesions.add(gt, gt, None)
    rows = {(r["class"], r["iou"]): r for r in lesions.rows()}
    assert rows[("core", 0.5)]["tp"] == rows[("edema", 0.5)]["tp"] == 1
    assert rows[("all_foreground", 0.5)]["lesions_true"] == 1


def test_quantised_probabilities_keep_a_255th():
    q = quantised({"a": np.array([0.0, 0.5, 1.0, 1.2])})["a"]
    assert q.dtype == np.uint8 and q.tolist() == [0, 128, 255, 255]


def test_pr_curves_exist_only_for_ranked_lesions():
    from medseg.evaluation.lesions import LesionDetections

    gt = np.zeros((8, 8), np.uint8)
    gt[1:3, 1:3] = 1
    ranked, unranked = LesionDetections(["background", "lesion"]), LesionDetections(["background", "lesion"])
    ranked.add(gt, gt, {"lesion": gt.astype(float)})
    unranked.add(gt, gt, None)
    ranked.rows(), unranked.rows()
    curves = ranked.curves()
    assert sorted(curves) == ["lesion, IoU 0.1", "lesion, IoU 0.5"] and unranked.curves() == {}
    recall, precision = curves["lesion, IoU 0.5"]
    assert precision[-1] == pytest.approx(1.0) and recall[-1] == pytest.approx(1.0)  # found, nothing false
