"""Segmentation metrics: pure functions of two boolean masks and the voxel spacing.

Empty-mask rules (explicit, documented in docs/metrics.md, tested):

====================  ==========================  ===========================
metric                GT and prediction empty     only one of them empty
====================  ==========================  ===========================
dice, jaccard         1.0                         0.0
precision             NaN (nothing predicted)     NaN if nothing predicted, else 0.0
recall                NaN (nothing to find)       NaN if GT empty, else 0.0
specificity           TN / (TN + FP), NaN if there are no negatives
hd95_mm, assd_mm      0.0                         NaN (no surface to measure to)
====================  ==========================  ===========================

NaN means *undefined*, never silently 0: summaries skip it and count it.
Surface distances are MONAI's kernels with the voxel spacing, so they are in
millimetres; without a spacing (2D images of unknown pixel size) they are in
pixels and named so (``hd95_px``, ``assd_px``), and sizes are pixel counts. Lesions are connected components (full connectivity); a ground
truth lesion counts as detected when any predicted voxel overlaps it.

A recipe can ask for more (:attr:`medseg.data.base.Recipe.extra_metrics`, the groups of :data:`EXTRA_METRICS`):
the pixel error, and scikit-image's Rand and variation-of-information scores of the regions (connected components)
of the class, the scores of the ISBI 2012 EM segmentation challenge.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from medseg.tasks import dice_from_counts

METRICS = ["dice", "jaccard", "precision", "recall", "specificity", "hd95_mm", "assd_mm"]


def distance_keys(length_unit: str = "mm") -> tuple[str, str]:
    """The names of the two surface distances in ``length_unit`` ("mm", or "px" when the spacing is unknown)."""
    return f"hd95_{length_unit}", f"assd_{length_unit}"


def metric_names(length_unit: str = "mm") -> list[str]:
    return METRICS[:5] + list(distance_keys(length_unit))


def confusion(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, int, int]:
    """``(tp, fp, fn, tn)`` voxel counts of two boolean masks of one shape."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch {p.shape} vs {g.shape}")
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p)) - tp
    fn = int(np.count_nonzero(g)) - tp
    return tp, fp, fn, int(p.size) - tp - fp - fn


def overlap_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    tp, fp, fn, tn = confusion(pred, gt)
    nan = float("nan")
    both_empty = tp + fp + fn == 0
    return {
        "dice": dice_from_counts(tp, fp, fn),
        "jaccard": 1.0 if both_empty else tp / (tp + fp + fn),
        "precision": tp / (tp + fp) if tp + fp else nan,
        "recall": tp / (tp + fn) if tp + fn else nan,
        "specificity": tn / (tn + fp) if tn + fp else nan,
    }


def surface_distances(pred: np.ndarray, gt: np.ndarray, spacing) -> dict[str, float]:
    """95th-percentile Hausdorff distance and average symmetric surface distance in mm; in px (keys ``hd95_px``,
    ``assd_px``) when ``spacing`` is None (unknown)."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    hd_key, asd_key = distance_keys("px" if spacing is None else "mm")
    if not p.any() and not g.any():
        return {hd_key: 0.0, asd_key: 0.0}
    if not p.any() or not g.any():
        return {hd_key: float("nan"), asd_key: float("nan")}
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

    # crop to the joint bounding box (plus a margin) so large volumes stay cheap
    box = ndimage.find_objects((p | g).astype(np.uint8))[0]
    box = tuple(slice(max(0, s.start - 2), s.stop + 2) for s in box)
    tp_ = torch.from_numpy(np.ascontiguousarray(p[box]))[None, None]
    tg_ = torch.from_numpy(np.ascontiguousarray(g[box]))[None, None]
    sp = [float(s) for s in spacing] if spacing is not None else [1.0] * p.ndim
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(tp_, tg_, include_background=True, percentile=95, spacing=sp)
        asd = compute_average_surface_distance(tp_, tg_, include_background=True, symmetric=True, spacing=sp)
    return {hd_key: float(hd.item()), asd_key: float(asd.item())}


def lesion_counts(pred: np.ndarray, gt: np.ndarray) -> dict[str, int]:
    """Connected components in GT and prediction, and GT lesions overlapped by the prediction."""
    p, g = np.asarray(pred, bool), np.asarray(gt, bool)
    structure = ndimage.generate_binary_structure(g.ndim, g.ndim)
    gl, ng = ndimage.label(g, structure=structure)
    _, npred = ndimage.label(p, structure=structure)
    detected = int(np.unique(gl[p & g]).size) if ng else 0
    return {"lesions_gt": int(ng), "lesions_pred": int(npred), "lesions_detected": detected}


def case_metrics(pred: np.ndarray, gt: np.ndarray, spacing, distances: bool = True) -> dict[str, float]:
    """All per-class metrics for one binary pair, plus sizes in mL (3D) or mm^2 (2D); with ``spacing`` None
    (unknown) distances in px and sizes as voxel counts."""
    unit = 1.0 if spacing is None else float(np.prod(spacing)) / (1000.0 if np.asarray(gt).ndim == 3 else 1.0)
    out = overlap_metrics(pred, gt)
    out.update(
        surface_distances(pred, gt, spacing)
        if distances
        else dict.fromkeys(distance_keys("px" if spacing is None else "mm"), float("nan"))
    )
    out["gt_size"] = float(np.count_nonzero(gt)) * unit
    out["pred_size"] = float(np.count_nonzero(pred)) * unit
    out.update(lesion_counts(pred, gt))
    return out


# -- extra metrics a recipe asks for ----------------------------------------------------------------------------------

REGION_KEYS = ("rand_error", "rand_precision", "rand_recall", "vi_split", "vi_merge")
EXTRA_METRICS: dict[str, tuple[str, ...]] = {"pixel_error": ("pixel_error",), "regions": REGION_KEYS}
EXTRA_KEYS = [k for keys in EXTRA_METRICS.values() for k in keys]  # their columns, in metrics.csv's order


def pixel_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """1 - pixel accuracy: the share of pixels that are foreground in one mask and not in the other."""
    tp, fp, fn, tn = confusion(pred, gt)
    return (fp + fn) / (tp + fp + fn + tn)


def region_scores(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Adapted Rand error, precision and recall and the split and merge terms of the variation of information
    (scikit-image), comparing the connected components of ``gt`` with those of ``pred``.

    Components are face-connected (4-neighbours in 2D): a one-pixel membrane running diagonally still separates two
    cells. Pixels that are background in ``gt`` are left out of every score; the prediction's background is one
    more region. All NaN when ``gt`` has no foreground (no region to compare)."""
    from skimage.metrics import adapted_rand_error, variation_of_information

    g, p = ndimage.label(np.asarray(gt, bool))[0], ndimage.label(np.asarray(pred, bool))[0]
    if not g.any():
        return dict.fromkeys(REGION_KEYS, float("nan"))
    with np.errstate(divide="ignore", invalid="ignore"):  # cells of one pixel each leave no pairs: NaN, not a warning
        error, precision, recall = adapted_rand_error(g, p, ignore_labels=(0,))
        split, merge = variation_of_information(g, p, ignore_labels=(0,))
    values = (error, precision, recall, split, merge)
    return dict(zip(REGION_KEYS, (float(v) for v in values)))


def extra_metrics(pred: np.ndarray, gt: np.ndarray, groups: tuple[str, ...] | list[str]) -> dict[str, float]:
    """The columns of the named :data:`EXTRA_METRICS` groups for one binary pair."""
    unknown = [g for g in groups if g not in EXTRA_METRICS]
    if unknown:
        raise ValueError(f"unknown metric groups {unknown}; known: {sorted(EXTRA_METRICS)}")
    out: dict[str, float] = {}
    if "pixel_error" in groups:
        out["pixel_error"] = pixel_error(pred, gt)
    if "regions" in groups:
        out.update(region_scores(pred, gt))
    return out


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (``scipy.stats.bootstrap``, ``n_boot`` resamples drawn by a
    generator seeded with ``seed``, so the interval is the same on every run), ignoring NaN; (nan, nan) with fewer
    than 2 values."""
    from scipy.stats import bootstrap

    v = np.asarray([x for x in values if np.isfinite(x)], dtype=np.float64)
    if v.size < 2:
        return float("nan"), float("nan")
    ci = bootstrap(
        (v,),
        np.mean,
        n_resamples=n_boot,
        confidence_level=1 - alpha,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    ).confidence_interval
    return float(ci.low), float(ci.high)
