"""One case through the model: probabilities on the input's grid, the label map, and the files of that case."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from medseg.inference.cases import Case
from medseg.inference.outputs import CaseOutputs, write_case
from medseg.inference.predictor import Prediction, Predictor


def case_outputs(predictor: Predictor, case: Case, out_dir: Path) -> CaseOutputs:
    """The files this case gets in ``out_dir`` with the predictor's model and options."""
    cfg, opts = predictor.models[0].cfg, predictor.options
    return CaseOutputs.of(case, out_dir, cfg.data.spatial_dims, opts.probabilities, cfg.instances, opts.dicom_seg)


def case_labels(predictor: Predictor, pred: Prediction) -> np.ndarray:
    """The label map of a prediction: the task's threshold or arg-max (already made when the prediction was
    resampled slab by slab), then the clean-up the options ask for."""
    opts = predictor.options
    labels = (
        pred.labels if pred.labels is not None else predictor.task.probabilities_to_labels(pred.probs, opts.threshold)
    )
    return predictor.task.clean(
        labels,
        pred.geom.spacing,
        keep_largest=bool(opts.keep_largest),
        min_size=float(opts.min_size),
        fill_holes=bool(opts.fill_holes),
    )


def segment_case(predictor: Predictor, case: Case, out_dir: Path, force: bool = False) -> dict:
    """Segment one case; write its mask (and probabilities) and findings JSON, and return the findings."""
    keep = bool(predictor.options.probabilities)  # otherwise a volume's probabilities are never held whole
    return segment_case_keeping_probabilities(predictor, case, out_dir, force, keep_probabilities=keep)[0]


def segment_case_keeping_probabilities(
    predictor: Predictor, case: Case, out_dir: Path, force: bool = False, keep_probabilities: bool = True
) -> tuple[dict, np.ndarray | None]:
    """:func:`segment_case`, also returning the probabilities ``(K, *shape)`` on the input's grid (which
    ``medseg evaluate`` ranks lesions by, without writing them)."""
    t_start = time.time()
    paths = case_outputs(predictor, case, out_dir)
    paths.refuse_existing(force)
    pred = predictor.predict(case, keep_probabilities=keep_probabilities)
    t0 = time.time()
    labels = case_labels(predictor, pred)
    pred.timings["postprocess_s"] = round(time.time() - t0, 3)
    return write_case(paths, case, labels, pred, predictor, t_start), pred.probs
