"""Metrics on small cases worked out by hand (2D, 3D, anisotropic spacing, empty masks)."""

import math

import numpy as np
import pytest

from medseg.evaluation.metrics import (
    bootstrap_ci,
    case_metrics,
    confusion,
    lesion_counts,
    overlap_metrics,
    surface_distances,
)


def _squares():
    gt = np.zeros((6, 8), bool)
    pred = np.zeros((6, 8), bool)
    gt[0:4, 0:4] = True  # 16 px
    pred[0:4, 2:6] = True  # 16 px, 8 shared
    return pred, gt


def test_overlap_by_hand():
    pred, gt = _squares()
    assert confusion(pred, gt) == (8, 8, 8, 24)
    m = overlap_metrics(pred, gt)
    assert m["dice"] == pytest.approx(16 / 32)
    assert m["jaccard"] == pytest.approx(8 / 24)
    assert m["precision"] == pytest.approx(0.5) and m["recall"] == pytest.approx(0.5)
    assert m["specificity"] == pytest.approx(24 / 32)


def test_sizes_use_spacing():
    pred, gt = _squares()
    m = case_metrics(pred, gt, (0.5, 0.5))
    assert m["gt_size"] == pytest.approx(16 * 0.25)  # mm^2
    v = np.zeros((4, 4, 4), bool)
    v[:2, :5, :1] = True  # 8 voxels of 1 x 1 x 2 mm
    assert case_metrics(v, v, (1.0, 1.0, 2.0))["gt_size"] == pytest.approx(8 * 2 / 1000)  # mL


def test_surface_distance_single_points_anisotropic():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[2, 2], b[2, 6] = True, True
    d = surface_distances(a, b, (1.0, 2.0))
    assert d["hd95_mm"] == pytest.approx(8.0) and d["assd_mm"] == pytest.approx(8.0)
    a3 = np.zeros((4, 4, 8), bool)
    b3 = np.zeros((4, 4, 8), bool)
    a3[1, 1, 1], b3[1, 1, 4] = True, True
    assert surface_distances(a3, b3, (0.5, 0.5, 3.0))["hd95_mm"] == pytest.approx(9.0)


def test_identical_masks_have_zero_distance():
    _pred, gt = _squares()
    d = surface_distances(gt, gt, (1.0, 1.0))
    assert d == {"hd95_mm": 0.0, "assd_mm": 0.0}


def test_empty_rules():
    e = np.zeros((5, 5), bool)
    x = np.zeros((5, 5), bool)
    x[1:3, 1:3] = True
    both = case_metrics(e, e, (1, 1))
    assert both["dice"] == 1.0 and both["jaccard"] == 1.0 and both["hd95_mm"] == 0.0
    assert math.isnan(both["precision"]) and math.isnan(both["recall"])
    fp_only = case_metrics(x, e, (1, 1))
    assert fp_only["dice"] == 0.0 and fp_only["precision"] == 0.0 and math.isnan(fp_only["recall"])
    assert math.isnan(fp_only["hd95_mm"])
    missed = case_metrics(e, x, (1, 1))
    assert missed["dice"] == 0.0 and missed["recall"] == 0.0 and math.isnan(missed["precision"])


def test_lesion_detection():
    gt = np.zeros((10, 10), bool)
    pred = np.zeros((10, 10), bool)
    gt[1:3, 1:3] = True
    gt[6:8, 6:8] = True
    pred[2:4, 2:4] = True  # overlaps the first lesion
    pred[0, 9] = True  # a false-positive lesion
    assert lesion_counts(pred, gt) == {"lesions_gt": 2, "lesions_pred": 2, "lesions_detected": 1}


def test_bootstrap_ci():
    lo, hi = bootstrap_ci([0.5] * 10)
    assert lo == hi == 0.5
    assert all(math.isnan(v) for v in bootstrap_ci([0.3]))
    lo, hi = bootstrap_ci(np.linspace(0, 1, 50))
    assert lo < 0.5 < hi and hi - lo < 0.4


def test_bootstrap_ci_is_the_seeded_percentile_interval():
    """The interval is the 2.5th and 97.5th percentile of the means of 2000 resamples drawn by a generator seeded
    with 0 (as written out below), NaN left out: summary.csv's intervals are the same on every run."""
    values = np.random.default_rng(3).uniform(0, 1, 23)
    rng = np.random.default_rng(0)
    means = values[rng.integers(0, values.size, size=(2000, values.size))].mean(axis=1)
    expected = np.quantile(means, [0.025, 0.975])
    assert bootstrap_ci([*values, float("nan")]) == pytest.approx(tuple(expected), rel=1e-12)
    assert bootstrap_ci(values, seed=1) != pytest.approx(tuple(expected), rel=1e-6)
