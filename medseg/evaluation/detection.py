"""Detection scores over a cohort: every predicted object is a detection with a confidence, matched to the true
objects of its case by pycocotools' ``COCOeval`` (the reference implementation of the COCO metrics).

COCO's matching rules apply (docs/metrics.md): per case and class, detections are taken in decreasing
confidence and each claims the unclaimed true object it overlaps most, if their IoU is at least the threshold.
From one evaluation come:

- **AP** per IoU threshold, COCO's 101-point interpolated average precision, and **AP@[.50:.95]** its mean over
  COCO's ten thresholds; **AR@100**, the recall with each case's 100 most confident detections, averaged over the
  thresholds;
- the **operating point**, all detections kept: TP, FP and FN, hence precision and recall, per threshold;
- **FROC-style sensitivity**: the detections of all cases ranked by confidence, the recall reached while the
  false positives stay at or below ``k`` per case.

Objects may be 2D or 3D: pycocotools encodes 2D masks, so a volume is laid out as a (depth x height, width)
image, which keeps every voxel set and so every IoU.

:func:`lesion_objects` turns a semantic prediction into detections for the same scores: connected components
(full connectivity, as the lesion counts of :mod:`medseg.evaluation.metrics`) of the true mask are the objects,
those of the predicted mask the detections, each scored by its mean probability.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

COCO_THRESHOLDS = tuple(round(0.5 + 0.05 * k, 2) for k in range(10))
LESION_THRESHOLDS = (0.1, 0.5)


@dataclass
class CaseObjects:
    """One case's objects: true and predicted instance maps (0 background, 1..N objects), each detection's
    confidence (label -> score; all 1.0 when not given) and each object's class (label -> class 1..K; class 1
    when not given)."""

    gt: np.ndarray
    pred: np.ndarray
    scores: dict[int, float] | None = None
    gt_classes: dict[int, int] | None = None
    pred_classes: dict[int, int] | None = None


@dataclass
class DetectionResult:
    """The evaluation of a cohort; see the module docstring for what each number means."""

    classes: list[str]
    thresholds: tuple[float, ...]
    n_cases: int
    precision: np.ndarray  # [threshold, recall step, class]: COCO's interpolated precision, -1 where no true object
    recall_steps: np.ndarray
    ar100: np.ndarray  # [threshold, class], NaN where no true object
    ranked: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)  # (t, k): scores, hit
    n_true: np.ndarray = None  # [class]

    def index(self, iou: float) -> int:
        hits = [i for i, t in enumerate(self.thresholds) if abs(t - iou) < 1e-9]
        if not hits:
            raise ValueError(f"IoU {iou} was not evaluated; thresholds: {list(self.thresholds)}")
        return hits[0]

    def ap(self, k: int, iou: float | None = None) -> float:
        """AP of class ``k`` (0-based) at ``iou``, or averaged over every threshold; NaN without true objects."""
        p = self.precision[:, :, k] if iou is None else self.precision[self.index(iou), :, k]
        return float("nan") if self.n_true[k] == 0 else float(p.mean())

    def operating_point(self, k: int, iou: float) -> dict[str, float]:
        """TP, FP, FN, precision and recall of class ``k`` with every detection kept."""
        _, hit = self.ranked[(self.index(iou), k)]
        tp, fp = int(hit.sum()), int((~hit).sum())
        fn = int(self.n_true[k]) - tp
        nan = float("nan")
        return {
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "precision": tp / (tp + fp) if tp + fp else nan,
            "recall": tp / (tp + fn) if tp + fn else nan,
        }

    def sensitivity_at(self, k: int, iou: float, fp_per_case: float) -> float:
        """Recall of class ``k`` among the most confident detections while FP <= ``fp_per_case`` x cases."""
        if self.n_true[k] == 0:
            return float("nan")
        _, hit = self.ranked[(self.index(iou), k)]
        fp = np.cumsum(~hit)
        allowed = fp <= fp_per_case * self.n_cases
        tp = np.cumsum(hit)[allowed]
        return float(tp[-1] / self.n_true[k]) if tp.size else 0.0

    def pr_curve(self, k: int, iou: float) -> tuple[np.ndarray, np.ndarray]:
        """(recall, interpolated precision) of class ``k`` at ``iou``, for plotting."""
        return self.recall_steps, self.precision[self.index(iou), :, k]


def evaluate_detections(
    cases: list[CaseObjects | EncodedCase],
    classes: list[str],
    thresholds: tuple[float, ...] = COCO_THRESHOLDS,
    max_dets: int | None = None,
) -> DetectionResult:
    """Score every case's detections against its true objects with ``COCOeval`` (segmentation masks).

    ``max_dets`` caps the detections per case and class for AP; None (the default) keeps them all, so that AP,
    the operating point and the FROC budget see every false positive (COCO's own cap of 100 is far too few for
    microscopy, where one image may hold hundreds of nuclei). AR is reported at 100 as COCO does."""
    from pycocotools.cocoeval import COCOeval

    cases = [_as_encoded(c) for c in cases]  # once: both the cap and the COCO sets read the encodings
    most = max((len(c.detections) for c in cases), default=0)
    gt, dt = _coco_pair(cases, len(classes))
    ev = COCOeval(gt, dt, "segm")
    p = ev.params
    p.imgIds = list(range(1, len(cases) + 1))
    p.catIds = list(range(1, len(classes) + 1))
    p.iouThrs = np.asarray(thresholds, dtype=float)
    p.maxDets = [100, max(100, most if max_dets is None else int(max_dets))]
    p.areaRng, p.areaRngLbl = [[0, 1e12]], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):  # COCOeval narrates each step on stdout
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, -1]  # [T, R, K] over all areas, at the larger cap
    recall = ev.eval["recall"][:, :, 0, 0]  # [T, K] at 100 detections per case
    n_true = np.array([sum(1 for a in gt.dataset["annotations"] if a["category_id"] == c) for c in p.catIds])
    return DetectionResult(
        classes=list(classes),
        thresholds=tuple(float(t) for t in thresholds),
        n_cases=len(cases),
        precision=np.where(precision < 0, np.nan, precision),
        recall_steps=np.asarray(p.recThrs),
        ar100=np.where(recall < 0, np.nan, recall),
        ranked=_ranked_matches(ev, len(thresholds), len(classes)),
        n_true=n_true,
    )


def _ranked_matches(ev, n_thresholds: int, n_classes: int) -> dict:
    """Per (threshold, class): the confidences of all detections, most confident first, and whether each
    matched a true object, from COCOeval's per-case records."""
    parts = {(t, k): ([], []) for t in range(n_thresholds) for k in range(n_classes)}
    for rec in ev.evalImgs:
        if rec is None:
            continue
        k = rec["category_id"] - 1
        keep = ~np.asarray(rec["dtIgnore"], bool).reshape(n_thresholds, -1)
        matches = np.asarray(rec["dtMatches"]).reshape(n_thresholds, -1)
        for t in range(n_thresholds):
            parts[(t, k)][0].append(np.asarray(rec["dtScores"])[keep[t]])
            parts[(t, k)][1].append(matches[t][keep[t]] > 0)
    ranked = {}
    for key, (scores, hits) in parts.items():
        s = np.concatenate(scores) if scores else np.zeros(0)
        h = np.concatenate(hits).astype(bool) if hits else np.zeros(0, bool)
        order = np.argsort(-s, kind="mergesort")
        ranked[key] = (s[order], h[order])
    return ranked


@dataclass
class EncodedCase:
    """A case's objects as COCO run-length encodings, a small fraction of its label maps' memory: what a cohort
    keeps while it is read. ``truths``: (class, rle, area, box); ``detections``: (class, score, rle, area, box)."""

    height: int
    width: int
    truths: list[tuple]
    detections: list[tuple]


def encode(case: CaseObjects) -> EncodedCase:
    """``case`` encoded (:func:`evaluate_detections` takes either form)."""
    gt, pred = _as_2d(case.gt), _as_2d(case.pred)
    if gt.shape != pred.shape:
        raise ValueError(f"instance maps differ in shape: {gt.shape} vs {pred.shape}")
    truths = [((case.gt_classes or {}).get(label, 1), *obj) for label, *obj in _objects(gt)]
    detections = [
        ((case.pred_classes or {}).get(label, 1), float((case.scores or {}).get(label, 1.0)), *obj)
        for label, *obj in _objects(pred)
    ]
    return EncodedCase(gt.shape[0], gt.shape[1], truths, detections)


def _as_encoded(case: CaseObjects | EncodedCase) -> EncodedCase:
    return case if isinstance(case, EncodedCase) else encode(case)


def _coco_pair(cases: list, n_classes: int):
    """pycocotools ground-truth and detection sets built in memory, one image per case."""
    from pycocotools.coco import COCO

    images, truths, detections = [], [], []
    for image_id, case in enumerate(cases, start=1):
        enc = _as_encoded(case)
        images.append({"id": image_id, "height": enc.height, "width": enc.width})
        for cls, rle, area, box in enc.truths:
            truths.append(_annotation(len(truths) + 1, image_id, cls, rle, area, box, n_classes))
        for cls, score, rle, area, box in enc.detections:
            det = _annotation(len(detections) + 1, image_id, cls, rle, area, box, n_classes)
            det["score"] = score
            detections.append(det)
    categories = [{"id": c} for c in range(1, n_classes + 1)]
    sets = []
    for objects in (truths, detections):
        coco = COCO()
        coco.dataset = {"images": images, "categories": categories, "annotations": objects}
        with contextlib.redirect_stdout(io.StringIO()):
            coco.createIndex()
        sets.append(coco)
    return sets


def _annotation(ann_id: int, image_id: int, cls: int, rle, area: int, box, n_classes: int) -> dict:
    if not 1 <= cls <= n_classes:
        raise ValueError(f"object class {cls} is outside 1..{n_classes}")
    # ids start at 1: COCOeval marks an unmatched detection with the id 0
    return {"id": ann_id, "image_id": image_id, "category_id": cls, "segmentation": rle, "area": float(area),
            "bbox": box, "iscrowd": 0}  # fmt: skip


def _objects(labels: np.ndarray):
    """(label, COCO RLE, area, [x, y, w, h]) of every object of a 2D instance map.

    COCO's run lengths run down the columns. Each object's runs are counted from its own bounding box: encoding a
    full-size mask per object cost objects x pixels, over a minute for a poorly trained model's thousands of specks
    on a volume."""
    height, width = labels.shape
    for label, window in enumerate(ndimage.find_objects(labels), start=1):
        if window is None:  # a label number with no pixels
            continue
        ys, xs = window
        # the transposed box read row by row is the box read column by column: COCO's (column-major) order
        col, row = np.nonzero((labels[window] == label).T)
        rle, area = run_lengths((row + ys.start) + (col + xs.start) * height, height, width)
        box = [float(xs.start), float(ys.start), float(xs.stop - xs.start), float(ys.stop - ys.start)]
        yield label, rle, area, box


def run_lengths(pixels: np.ndarray, height: int, width: int) -> tuple[dict, int]:
    """The compressed COCO RLE and area of the mask whose pixels are ``pixels``: their column-major indices into a
    ``height`` x ``width`` image, in increasing order."""
    from pycocotools import mask as mask_util

    breaks = np.flatnonzero(np.diff(pixels) != 1)  # where one run ends and the next begins
    starts = pixels[np.r_[0, breaks + 1]]
    ends = pixels[np.r_[breaks, len(pixels) - 1]] + 1
    counts = np.empty(2 * len(starts) + 1, np.int64)  # background first, then object and background in turn
    counts[0] = starts[0]
    counts[1::2] = ends - starts
    counts[2:-1:2] = starts[1:] - ends[:-1]
    counts[-1] = height * width - ends[-1]
    if not counts[-1]:  # an object that ends on the last pixel: pycocotools writes no empty run after it
        counts = counts[:-1]
    rle = mask_util.frPyObjects({"size": [height, width], "counts": counts.tolist()}, height, width)
    return rle, len(pixels)


def _as_2d(labels: np.ndarray) -> np.ndarray:
    a = np.asarray(labels)
    if a.dtype.kind not in "iu":
        raise ValueError("an instance map holds non-negative integers (0 background, 1..N objects)")
    if a.ndim == 3:  # a volume as one tall image: voxel sets, hence IoUs, are kept
        a = a.reshape(-1, a.shape[-1])
    if a.ndim != 2:
        raise ValueError(f"instance maps are 2D or 3D, not {a.ndim}D")
    return a.astype(np.int64, copy=False)


def lesion_objects(gt_mask: np.ndarray, pred_mask: np.ndarray, probability: np.ndarray | None = None) -> CaseObjects:
    """A semantic case's lesions as objects: components of the true and predicted masks, each detection scored by
    its mean probability (1.0 for every one when no probability map is given)."""
    g, p = np.asarray(gt_mask, bool), np.asarray(pred_mask, bool)
    structure = ndimage.generate_binary_structure(g.ndim, g.ndim)
    true_map, _ = ndimage.label(g, structure=structure)
    pred_map, n = ndimage.label(p, structure=structure)
    scores = None
    if probability is not None and n:
        means = ndimage.mean(np.asarray(probability, float), pred_map, index=np.arange(1, n + 1))
        scores = {i + 1: float(m) for i, m in enumerate(means)}
    return CaseObjects(true_map, pred_map, scores)
