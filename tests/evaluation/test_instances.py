"""Object-by-object scores of one image, on instance maps small enough to work out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medseg.evaluation.instances import instance_scores, iou_matrix, matched_pairs


def hand_worked_pair():
    """True A (4x4 = 16 px) and B (2x2); predicted P1 = 12 px of A (IoU 0.75), P2 = half of B (IoU exactly 0.5,
    which is not above 0.5) and a stray pixel P3."""
    gt = np.zeros((10, 10), np.uint16)
    gt[0:4, 0:4] = 1
    gt[6:8, 6:8] = 2
    pred = np.zeros((10, 10), np.uint16)
    pred[0:4, 0:3] = 1
    pred[6:8, 6:7] = 2
    pred[9, 9] = 3
    return gt, pred


def test_iou_matrix_of_the_hand_worked_pair():
    iou = iou_matrix(*hand_worked_pair())
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou, [[0.75, 0, 0], [0, 0.5, 0]])


def test_scores_of_the_hand_worked_pair():
    s = instance_scores(*hand_worked_pair())
    # A-P1 (IoU 0.75) matches at t = 0.50 ... 0.70 (five thresholds): 1 / (2 + 3 - 1) each; none above
    assert s["dsb"] == pytest.approx(5 * 0.25 / 10)
    # at 0.5: TP 1, FP 2, FN 1 -> RQ = 1 / (1 + 1 + 0.5); SQ = 0.75
    assert s["rq"] == pytest.approx(0.4) and s["sq"] == pytest.approx(0.75) and s["pq"] == pytest.approx(0.3)
    assert s["precision50"] == pytest.approx(1 / 3) and s["recall50"] == pytest.approx(0.5)
    assert (s["n_true"], s["n_pred"], s["count_error"]) == (2, 3, 1)


def test_label_numbers_do_not_matter_only_objects_do():
    gt, pred = hand_worked_pair()
    renumbered = np.select([gt == 1, gt == 2], [7, 3], 0).astype(np.int32)  # gaps and another order
    assert instance_scores(renumbered, pred) == instance_scores(gt, pred)


def test_a_perfect_prediction_scores_one_everywhere():
    gt, _ = hand_worked_pair()
    s = instance_scores(gt, gt)
    assert s["dsb"] == s["pq"] == s["sq"] == s["rq"] == 1.0 and s["count_error"] == 0


def test_below_one_half_the_pairing_of_largest_total_iou_is_taken():
    # greedy on the largest IoU would pair true 0 with predicted 0 (0.4) and leave true 1 unmatched
    iou = np.array([[0.4, 0.3], [0.35, 0.0]])
    rows, cols = matched_pairs(iou, 0.1)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 1), (1, 0)]
    rows, cols = matched_pairs(iou, 0.32)  # 0.3 is below: only one pair can be kept
    assert list(zip(rows.tolist(), cols.tolist())) == [(0, 0)]


def test_empty_maps_follow_the_documented_rules():
    empty = np.zeros((5, 5), np.uint8)
    one = empty.copy()
    one[1:3, 1:3] = 1
    both = instance_scores(empty, empty)
    assert all(math.isnan(both[k]) for k in ("dsb", "pq", "sq", "rq", "precision50", "recall50"))
    assert both["count_error"] == 0
    missed = instance_scores(one, empty)
    assert missed["dsb"] == missed["pq"] == missed["rq"] == missed["recall50"] == 0.0
    assert math.isnan(missed["sq"]) and math.isnan(missed["precision50"]) and missed["count_error"] == -1
    stray = instance_scores(empty, one)
    assert stray["dsb"] == 0.0 and math.isnan(stray["recall50"]) and stray["precision50"] == 0.0


@pytest.mark.parametrize(
    "gt,pred,words",
    [
        (np.zeros((3, 3), int), np.zeros((3, 4), int), "differ in shape"),
        (np.zeros((3, 3), float), np.zeros((3, 3), int), "non-negative integers"),
        (-np.ones((3, 3), int), np.zeros((3, 3), int), "non-negative integers"),
    ],
)
def test_maps_that_are_not_instance_maps_are_refused(gt, pred, words):
    with pytest.raises(ValueError, match=words):
        instance_scores(gt, pred)


def test_a_cohort_of_perfect_and_half_found_images_scores_as_worked_out():
    from medseg.evaluation.instance_cohort import InstanceCohort

    truth = np.zeros((10, 10), np.uint16)
    truth[1:4, 1:4], truth[6:9, 6:9] = 1, 2
    half = np.where(truth == 1, 1, 0).astype(np.uint16)  # the second object missed
    cohort = InstanceCohort("nucleus")
    assert cohort.add("a", truth, truth, {1: 0.9, 2: 0.8})["dsb"] == 1.0
    assert cohort.add("b", truth, half, {1: 0.7})["dsb"] == 0.5  # TP 1 / (TP 1 + FN 1) at every threshold
    s = cohort.summary()
    assert (s["objects_true"], s["objects_pred"], s["dsb_mean"], s["count_error_mean"]) == (4, 3, 0.75, -0.5)
    # three detections, all true, ranked 0.9, 0.8, 0.7: precision 1 up to recall 3/4, then nothing
    assert s["ap50"] == pytest.approx(76 / 101) and s["operating_point_50"]["recall"] == 0.75
    unranked = InstanceCohort("nucleus")
    unranked.add("a", truth, truth, None)
    assert np.isnan(unranked.summary()["ap"]) and unranked.summary()["dsb_mean"] == 1.0
