"""Object-wise evaluation of an instance task: every case's true and predicted instance maps, scored per image
(:func:`medseg.evaluation.instances.instance_scores`: the Data Science Bowl 2018 score, panoptic quality, count
error) and over the cohort (:func:`medseg.evaluation.detection.evaluate_detections`: COCO AP@[.50:.95], AP50,
AP75 and AR@100, each predicted object ranked by its mean object probability).

``medseg evaluate`` writes the per-image rows to ``instances.csv`` and the cohort's numbers to eval.json
(``instances``); the foreground's pixel metrics go to ``metrics.csv`` as for any binary task.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.evaluation.detection import CaseObjects, DetectionResult, encode, evaluate_detections
from medseg.evaluation.instances import instance_scores

INSTANCE_CSV = "instances.csv"
PER_IMAGE = ("dsb", "pq", "sq", "rq", "precision50", "recall50", "count_error")


class InstanceCohort:
    """The instance maps of one evaluation, kept as run-length encodings, and each case's per-image scores."""

    def __init__(self, class_name: str):
        self.class_name = class_name
        self.encoded: list = []
        self.per_case: list[dict] = []
        self.scored = True
        self._result = None
        self._warned = False

    def add(self, case_id: str, gt: np.ndarray, pred: np.ndarray, scores: dict[int, float] | None) -> dict:
        """One case; ``scores`` maps each predicted id to its confidence (None: masks only, no ranking)."""
        if scores is None:
            self.scored = False
        self._warn_if_binary(case_id, gt)
        row = {"case": case_id, **instance_scores(gt, pred)}
        self.per_case.append(row)
        self.encoded.append(encode(CaseObjects(gt, pred, scores)))
        self._result = None
        return row

    def _warn_if_binary(self, case_id: str, gt: np.ndarray) -> None:
        """A binary mask given as instance ground truth is one object per image: say so once."""
        from scipy import ndimage

        if self._warned or len(np.unique(gt[gt > 0])) != 1 or ndimage.label(gt > 0)[1] < 2:
            return
        self._warned = True
        from medseg.log import get_logger

        get_logger(__name__).warning(
            f"{case_id}: the ground truth holds one value for several separate regions, so it counts them as one "
            "object; fix: give instance maps (a value per object), or score it as a semantic mask"
        )

    def detections(self) -> DetectionResult:
        if self._result is None:
            self._result = evaluate_detections(self.encoded, [self.class_name])
        return self._result

    def curves(self) -> dict[str, tuple]:
        """``{"CLASS, IoU t": (recall, precision)}`` at IoU 0.5 and 0.75 (none without a ranking or objects)."""
        res = self.detections() if self.per_case else None
        if res is None or not self.scored or not res.n_true[0]:
            return {}
        return {f"{self.class_name}, IoU {t:g}": res.pr_curve(0, t) for t in (0.5, 0.75)}

    def summary(self) -> dict:
        """The cohort's numbers for eval.json: per-image means and the COCO scores (NaN without a ranking)."""
        import pandas as pd

        if not self.per_case:
            return {"cases": 0}
        df = pd.DataFrame(self.per_case)
        res = self.detections()
        nan = float("nan")
        coco = {
            "ap": res.ap(0),
            "ap50": res.ap(0, 0.5),
            "ap75": res.ap(0, 0.75),
            "ar100": float(np.nanmean(res.ar100[:, 0])) if res.n_true[0] else nan,
        }
        if not self.scored:
            coco = dict.fromkeys(coco, nan)
        return {
            "file": INSTANCE_CSV,
            "class": self.class_name,
            "cases": len(df),
            "objects_true": int(df["n_true"].sum()),
            "objects_pred": int(df["n_pred"].sum()),
            **{f"{k}_mean": _mean(df[k]) for k in PER_IMAGE},
            "count_error_abs_mean": _mean(df["count_error"].abs()),
            **coco,
            "ranked_by_probability": self.scored,
            "operating_point_50": res.operating_point(0, 0.5),
        }


def scores_beside(prediction: Path, ids: np.ndarray) -> dict[int, float] | None:
    """The objects' scores ``medseg infer`` wrote beside an instance map (``<case>_objects.csv`` next to
    ``<case>_seg.<ext>``), or None when there is no such table, or it does not score every object of ``ids``
    (the objects then go unranked: an object left out would otherwise rank first)."""
    import pandas as pd

    from medseg.errors import fail
    from medseg.io import strip_ext
    from medseg.log import get_logger

    stem = strip_ext(prediction)
    table = prediction.parent / f"{stem.removesuffix('_seg')}_objects.csv"
    if not table.is_file():
        return None
    try:
        df = pd.read_csv(table)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise fail(table, f"cannot be read as a table ({exc})", "remove it or write id,score columns") from None
    scores = {}
    if {"id", "score"} <= set(df.columns) and not df["score"].isna().any():
        scores = {int(i): float(v) for i, v in zip(df["id"], df["score"])}
    missing = set(np.unique(ids[ids > 0]).tolist()) - set(scores)
    if missing:
        get_logger(__name__).warning(
            f"{table}: scores {len(missing)} object(s) of {prediction.name} too few (e.g. id {min(missing)}); its "
            "objects are scored without a ranking"
        )
        return None
    return scores


def _mean(col) -> float:
    v = col.astype(float).to_numpy()
    return round(float(np.nanmean(v)), 4) if np.isfinite(v).any() else float("nan")
