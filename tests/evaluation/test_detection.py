"""Cohort detection scores through pycocotools, on cases whose precision-recall curves are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from medseg.evaluation.detection import CaseObjects, evaluate_detections, lesion_objects


def boxes(shape, *windows):
    """An instance map with one object per (y0, y1, x0, x1) window, numbered in order."""
    m = np.zeros(shape, np.uint16)
    for i, (y0, y1, x0, x1) in enumerate(windows, start=1):
        m[y0:y1, x0:x1] = i
    return m


A, B, C, STRAY = (0, 4, 0, 4), (10, 14, 10, 14), (0, 4, 10, 14), (16, 19, 0, 3)


def two_cases():
    """Case 1: true A and B; detections A (0.9), a stray (0.8), B (0.7). Case 2: true C; one stray (0.95).
    Ranked over both: FP 0.95, TP 0.9, FP 0.8, TP 0.7, with three true objects."""
    one = CaseObjects(boxes((20, 20), A, B), boxes((20, 20), A, STRAY, B), scores={1: 0.9, 2: 0.8, 3: 0.7})
    two = CaseObjects(boxes((20, 20), C), boxes((20, 20), STRAY), scores={1: 0.95})
    return [one, two]


def test_ap_recall_and_the_operating_point_of_the_hand_worked_cohort():
    r = evaluate_detections(two_cases(), ["cell"])
    # precision 0, 1/2, 1/3, 1/2 at recall 0, 1/3, 1/3, 2/3; COCO's envelope is 1/2 up to recall 2/3, then 0:
    # 67 of the 101 recall steps (0.00 ... 0.66) at 1/2
    assert r.ap(0) == pytest.approx(67 * 0.5 / 101) and r.ap(0, 0.5) == pytest.approx(67 * 0.5 / 101)
    assert r.ar100[:, 0] == pytest.approx(np.full(10, 2 / 3))
    op = r.operating_point(0, 0.75)
    assert (op["tp"], op["fp"], op["fn"]) == (2, 2, 1)
    assert op["precision"] == pytest.approx(0.5) and op["recall"] == pytest.approx(2 / 3)


def test_froc_sensitivity_counts_false_positives_per_case():
    r = evaluate_detections(two_cases(), ["cell"])
    assert r.sensitivity_at(0, 0.5, 1) == pytest.approx(2 / 3)  # 2 FPs allowed over 2 cases: every detection
    assert r.sensitivity_at(0, 0.5, 0.5) == pytest.approx(1 / 3)  # 1 FP allowed: the first two detections
    assert r.sensitivity_at(0, 0.5, 0.0) == 0.0  # the most confident detection is already false


def test_overlap_below_a_threshold_is_a_miss_at_that_threshold_only():
    """A 4x4 object found as its 4x3 part (IoU 0.75): a hit up to 0.70, a false positive and a miss above."""
    case = CaseObjects(boxes((8, 8), (0, 4, 0, 4)), boxes((8, 8), (0, 4, 0, 3)))
    r = evaluate_detections([case], ["cell"])
    assert [r.ap(0, t) for t in (0.5, 0.7, 0.75, 0.8)] == pytest.approx([1, 1, 1, 0])  # COCO: IoU >= threshold
    assert r.ap(0) == pytest.approx(0.6)  # six of COCO's ten thresholds


def test_three_dimensional_objects_keep_their_iou():
    """Cubes of 2x2x2 a slice apart overlap by 4 of 12 voxels: IoU 1/3."""
    gt = np.zeros((4, 3, 3), np.uint8)
    gt[0:2, 0:2, 0:2] = 1
    pred = np.zeros_like(gt)
    pred[1:3, 0:2, 0:2] = 1
    r = evaluate_detections([CaseObjects(gt, pred)], ["lesion"], thresholds=(0.3, 0.5))
    assert r.ap(0, 0.3) == pytest.approx(1.0) and r.ap(0, 0.5) == 0.0


def test_classes_are_scored_apart_and_a_class_without_objects_is_undefined():
    gt = boxes((8, 8), (0, 4, 0, 4), (4, 8, 4, 8))
    scores = {1: 0.4, 2: 0.9}  # the object of class a is called b, less confidently than the real b
    case = CaseObjects(gt, gt.copy(), scores, gt_classes={1: 1, 2: 2}, pred_classes={1: 2, 2: 2})
    r = evaluate_detections([case], ["a", "b", "c"])
    assert r.ap(0) == 0.0 and r.ap(1) == pytest.approx(1.0) and math.isnan(r.ap(2))
    assert math.isnan(r.ar100[0, 2])
    assert r.operating_point(1, 0.5)["fp"] == 1  # the first object, called b
    with pytest.raises(ValueError, match="outside 1..3"):
        evaluate_detections([CaseObjects(gt, gt, gt_classes={1: 4})], ["a", "b", "c"])


def test_a_cohort_without_detections_scores_zero_not_an_error():
    case = CaseObjects(boxes((8, 8), (0, 4, 0, 4)), np.zeros((8, 8), np.uint8))
    r = evaluate_detections([case], ["cell"])
    assert r.ap(0) == 0.0 and r.sensitivity_at(0, 0.5, 2) == 0.0
    assert r.operating_point(0, 0.5) == {"tp": 0, "fp": 0, "fn": 1, "precision": pytest.approx(float("nan"),
                                         nan_ok=True), "recall": 0.0}  # fmt: skip


def test_lesions_are_connected_components_scored_by_their_mean_probability():
    gt = np.zeros((6, 6), bool)
    gt[0:2, 0:2] = gt[4:6, 4:6] = True
    pred = np.zeros((6, 6), bool)
    pred[0:2, 0:2] = pred[3, 0] = True  # the first lesion and one stray pixel
    prob = np.where(pred, 0.6, 0.0)
    prob[0, 0] = 1.0
    case = lesion_objects(gt, pred, prob)
    assert case.gt.max() == 2 and case.pred.max() == 2
    assert case.scores == {1: pytest.approx((1.0 + 3 * 0.6) / 4), 2: pytest.approx(0.6)}
    diagonal = np.eye(3, dtype=bool)  # one lesion under full connectivity, as the lesion counts have it
    assert lesion_objects(diagonal, diagonal).gt.max() == 1


@pytest.mark.parametrize("shape", [(37, 23), (9, 11, 7)], ids=["2d", "volume"])
def test_objects_are_encoded_as_pycocotools_encodes_their_full_masks(shape):
    """Run lengths counted on each object's own stretch of pixels equal pycocotools' encoding of its whole mask,
    objects at the edges, single pixels and objects with holes included."""
    from pycocotools import mask as mask_util
    from scipy import ndimage

    from medseg.evaluation.detection import _as_2d, _objects

    rng = np.random.default_rng(0)
    labels, n = ndimage.label(rng.random(shape) > 0.6)
    labels[(0,) * len(shape)] = n + 1  # a one-pixel object in the first pixel
    labels[tuple(s - 1 for s in shape)] = n + 2  # and in the last
    flat = _as_2d(labels)
    found = list(_objects(flat))
    assert len(found) == n + 2 > 10
    for label, rle, area, _box in found:
        whole = np.asfortranarray((flat == label).astype(np.uint8))
        assert rle == mask_util.encode(whole), label
        assert area == int(whole.sum())


def test_every_false_positive_counts_however_many_a_case_has():
    """One true object found, plus 1200 one-pixel specks scored below it: COCO's own caps (100, or any fixed
    number) would drop most specks and report far too few false positives."""
    truth = boxes((80, 80), (0, 4, 0, 4))
    pred = truth.copy()
    ys, xs = np.nonzero(np.add.outer(np.arange(80) % 2, np.arange(80) % 2) == 0)  # every other pixel, a lattice
    keep = (ys > 5) & (xs > 5)
    specks = list(zip(ys[keep], xs[keep]))[:1200]
    for i, (y, x) in enumerate(specks, start=2):
        pred[y, x] = i
    scores = {1: 0.99, **{i: 0.5 for i in range(2, len(specks) + 2)}}
    r = evaluate_detections([CaseObjects(truth, pred, scores=scores)], ["cell"])
    op = r.operating_point(0, 0.5)
    assert len(specks) == 1200 and (op["tp"], op["fp"], op["fn"]) == (1, 1200, 0)
    assert r.sensitivity_at(0, 0.5, 0.0) == 1.0  # the true object comes first: found with no false positive
    capped = evaluate_detections([CaseObjects(truth, pred, scores=scores)], ["cell"], max_dets=100)
    assert capped.operating_point(0, 0.5)["fp"] == 99  # an explicit cap still caps
