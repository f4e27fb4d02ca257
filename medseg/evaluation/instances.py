"""Object-by-object scores of one image: instance label maps (0 background, 1..N one object each) compared
object by object.

Matching (documented in docs/metrics.md, tested on hand-worked maps). Two objects are compared by their
intersection over union (IoU). At a threshold ``t`` a predicted object and a true one match when their IoU is
*above* ``t``, each object at most once. Above 0.5 no object can match two others (two disjoint objects cannot
both cover more than half of a third), so the pairing is unique; below 0.5 the one-to-one pairing of largest
total IoU is taken (the Hungarian algorithm, scipy's ``linear_sum_assignment``).

- ``dsb``: the Data Science Bowl 2018 score, TP / (TP + FP + FN) at t = 0.50, 0.55, ..., 0.95, averaged over t.
- ``pq``, ``sq``, ``rq``: panoptic quality (Kirillov et al. 2019) at t = 0.5. SQ is the mean IoU of the matched
  pairs, RQ = TP / (TP + FP/2 + FN/2), PQ = SQ x RQ.
- ``precision50``, ``recall50``: TP / predicted objects, TP / true objects at t = 0.5.
- ``count_error``: predicted minus true objects (signed: negative means objects were missed or merged).

An image with no object in either map has nothing to score: its DSB score, PQ, SQ, RQ, precision and recall are
NaN, which summaries skip and count. With objects on one side only, DSB, PQ and RQ are 0, SQ is NaN (nothing
matched), and precision (nothing predicted) or recall (nothing to find) is NaN, as for pixels.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.segmentation import relabel_sequential

DSB_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
INSTANCE_METRICS = ["dsb", "pq", "sq", "rq", "precision50", "recall50", "count_error", "n_true", "n_pred"]


def iou_matrix(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true object (rows, in increasing label order) with every predicted one (columns)."""
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape:
        raise ValueError(f"instance maps differ in shape: {gt.shape} vs {pred.shape}")
    g = _consecutive(gt)
    p = _consecutive(pred)
    n_g, n_p = int(g.max(initial=0)), int(p.max(initial=0))
    joint = np.bincount(g * (n_p + 1) + p, minlength=(n_g + 1) * (n_p + 1)).reshape(n_g + 1, n_p + 1)
    inter = joint[1:, 1:]
    union = joint[1:, :].sum(1)[:, None] + joint[:, 1:].sum(0)[None, :] - inter
    return inter / np.maximum(union, 1)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 1..N (gaps closed), flattened, as int64 for the joint histogram."""
    if labels.dtype.kind not in "iu" or (labels.dtype.kind == "i" and labels.min(initial=0) < 0):
        raise ValueError("an instance map holds non-negative integers (0 background, 1..N objects)")
    return relabel_sequential(labels.ravel().astype(np.int64))[0]


def matched_pairs(iou: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(true rows, predicted columns) of the one-to-one pairs whose IoU is above ``threshold``."""
    if iou.size == 0:
        return np.zeros(0, int), np.zeros(0, int)
    if threshold >= 0.5:  # unique by geometry: no search needed
        return np.nonzero(iou > threshold)
    rows, cols = linear_sum_assignment(np.where(iou > threshold, iou, 0.0), maximize=True)
    keep = iou[rows, cols] > threshold
    return rows[keep], cols[keep]


def instance_scores(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """The scores of the module docstring for one image's true and predicted instance maps."""
    iou = iou_matrix(gt, pred)
    n_true, n_pred = iou.shape
    out = {"n_true": n_true, "n_pred": n_pred, "count_error": n_pred - n_true}
    if n_true == n_pred == 0:
        return {**dict.fromkeys(INSTANCE_METRICS[:6], float("nan")), **out}
    matches = [len(matched_pairs(iou, t)[0]) for t in DSB_THRESHOLDS]
    rows, cols = matched_pairs(iou, 0.5)
    tp = len(rows)
    sq = float(iou[rows, cols].mean()) if tp else float("nan")
    rq = tp / (tp + (n_pred - tp) / 2 + (n_true - tp) / 2)
    return {
        "dsb": float(np.mean([m / (n_true + n_pred - m) for m in matches])),
        "pq": sq * rq if tp else 0.0,
        "sq": sq,
        "rq": rq,
        "precision50": tp / n_pred if n_pred else float("nan"),
        "recall50": tp / n_true if n_true else float("nan"),
        **out,
    }
