"""Lesion-wise detection for semantic evaluations: each connected component of a prediction is a detection,
scored by its mean probability, and each component of the ground truth an object (docs/metrics.md, "Objects").

:class:`LesionDetections` gathers a cohort case by case, keeping only run-length encodings, and gives one row per
class and IoU threshold (0.1 and 0.5): the lesion counts, TP, FP, FN, precision and recall with every detection
kept, and, when the detections carry probabilities, lesion-wise AP and the sensitivity at 1 and 2 false positives
per case. Masks without probabilities (``medseg evaluate --pred``) have no ranking, so they get no AP or
sensitivity: those columns stay empty rather than report the arbitrary order of equal confidences.
"""

from __future__ import annotations

import numpy as np

from medseg.evaluation.detection import (
    LESION_THRESHOLDS,
    CaseObjects,
    EncodedCase,
    encode,
    evaluate_detections,
    lesion_objects,
)
from medseg.evaluation.tables import class_masks

FP_PER_CASE = (1, 2)
LESION_COLUMNS = [
    "class",
    "iou",
    "cases",
    "lesions_true",
    "lesions_pred",
    "tp",
    "fp",
    "fn",
    "precision",
    "recall",
    "ap",
    *(f"sensitivity_at_{k}fp" for k in FP_PER_CASE),
]


class LesionDetections:
    """The lesions of every case and foreground class of one evaluation (and the whole foreground when there are
    several classes, as the metrics rows have it)."""

    def __init__(self, labels: list[str]):
        self.labels = list(labels)
        self.names = [*self.labels[1:], *(["all_foreground"] if len(self.labels) > 2 else [])]
        self.cases: dict[str, list] = {n: [] for n in self.names}
        self.scored = True
        self.results: dict = {}  # class -> DetectionResult, once rows() has scored it

    def probabilities(self, probs: np.ndarray) -> dict[str, np.ndarray]:
        """Each class's probability map from a prediction's ``(K, ...)`` probabilities: a binary task's single
        channel, or a multi-class task's channel per class (the whole foreground: 1 - background)."""
        if len(self.labels) == 2:
            return {self.names[0]: probs[0]}
        out = {name: probs[c] for c, name in enumerate(self.labels) if c}
        out["all_foreground"] = 1.0 - probs[0]
        return out

    def add(self, pred: np.ndarray, gt: np.ndarray, probabilities: dict[str, np.ndarray] | None) -> None:
        """One case's class maps, with :meth:`probabilities` of the same grid (None: masks only)."""
        if probabilities is None:
            self.scored = False
        for name, p, g in class_masks(pred, gt, self.labels):
            prob = None if probabilities is None else probabilities[name]
            self.cases[name].append(encode(lesion_objects(g, p, prob)))

    def add_objects(self, objects: CaseObjects | EncodedCase, ranked: bool | None = None) -> None:
        """One case's objects as they are (an instance task's maps, one foreground class), not as components;
        ``ranked`` says whether an encoded case's detections carry real scores."""
        if (objects.scores is None) if isinstance(objects, CaseObjects) else not ranked:
            self.scored = False
        self.cases[self.names[0]].append(encode(objects) if isinstance(objects, CaseObjects) else objects)

    def rows(self) -> list[dict]:
        """One row per class and IoU threshold (columns :data:`LESION_COLUMNS`)."""
        out = []
        for name, cases in self.cases.items():
            if not cases:
                continue
            result = self.results[name] = evaluate_detections(cases, [name], LESION_THRESHOLDS)
            for iou in LESION_THRESHOLDS:
                op = result.operating_point(0, iou)
                ranked = {
                    "ap": result.ap(0, iou),
                    **{f"sensitivity_at_{k}fp": result.sensitivity_at(0, iou, k) for k in FP_PER_CASE},
                }
                if not self.scored:
                    ranked = dict.fromkeys(ranked, float("nan"))
                out.append(
                    {
                        "class": name,
                        "iou": iou,
                        "cases": len(cases),
                        "lesions_true": int(result.n_true[0]),
                        "lesions_pred": op["tp"] + op["fp"],
                        **op,
                        **ranked,
                    }
                )
        return out

    def curves(self) -> dict[str, tuple]:
        """``{"CLASS, IoU t": (recall, precision)}`` of the classes :meth:`rows` scored, when lesions were ranked."""
        if not self.scored:
            return {}
        return {
            f"{name}, IoU {iou:g}": res.pr_curve(0, iou)
            for name, res in self.results.items()
            for iou in LESION_THRESHOLDS
            if res.n_true[0]
        }


def quantised(probabilities: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probability maps as uint8 (1/255 steps: ample to rank lesions by their mean), a quarter of float32's
    memory for slices kept until their patient's volume is complete."""
    return {k: np.round(np.clip(v, 0, 1) * 255).astype(np.uint8) for k, v in probabilities.items()}
