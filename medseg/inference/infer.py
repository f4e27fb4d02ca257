"""``medseg infer``: checkpoint(s) + new images -> masks in each input's exact geometry, and findings.

The checkpoint alone defines preprocessing (channels, orientation, spacing, intensity normalisation, resize); the
:class:`~medseg.inference.predictor.Predictor` runs it and the network and brings the probabilities back onto the
input's voxel grid. Here they become a label map (the task's threshold or arg-max, then the clean-up of
:mod:`medseg.postprocess`), written with the input's own header (NIfTI qform/sform kept), spacing, origin
and direction, beside a findings JSON. The stages:

- :mod:`medseg.inference.cases`: the user's inputs -> cases;
- :mod:`medseg.inference.checkpoints`: the models (given, or the newest that fits);
- :mod:`medseg.inference.options`: what the flags change;
- :mod:`medseg.inference.predictor`: probabilities on the input's grid;
- :mod:`medseg.inference.outputs`: the files.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError
from medseg.inference.cases import Case, expand_inputs, refuse_checkpoint_inputs
from medseg.inference.checkpoints import find_default_model, load_models
from medseg.inference.options import InferenceOptions
from medseg.inference.outputs import (
    CaseOutputs,
    CaseWriteError,
    batch_write_failure,
    findings_sizes,
    make_out_dir,
    spacing_note,
    write_case,
    write_label_tables,
)
from medseg.inference.predictor import Prediction, Predictor
from medseg.log import get_logger
from medseg.runtime import resolve_device

log = get_logger(__name__)


@dataclass
class InferSummary:
    out_dir: Path
    outputs: list[dict] = field(default_factory=list)  # one findings dict per case
    failures: list[str] = field(default_factory=list)


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
    cfg = predictor.models[0].cfg
    opts = predictor.options
    paths = CaseOutputs.of(case, out_dir, cfg.data.spatial_dims, opts.probabilities, cfg.instances, opts.dicom_seg)
    paths.refuse_existing(force)
    pred = predictor.predict(case, keep_probabilities=keep_probabilities)
    t0 = time.time()
    labels = case_labels(predictor, pred)
    pred.timings["postprocess_s"] = round(time.time() - t0, 3)
    return write_case(paths, case, labels, pred, predictor, t_start), pred.probs


def infer(
    inputs: list[str],
    model: list[str] | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    options: InferenceOptions | None = None,
    force: bool = False,
    progress: bool = True,
) -> InferSummary:
    """Segment every input; keep going past bad files and raise one MedsegError listing them at the end.

    ``options`` (tta, threshold, clean-up, sliding window, probabilities) default to the checkpoint's ``infer``
    settings; ``model`` defaults to the newest ``runs/**/best.pt`` that fits the inputs.
    """
    from medseg.progress import track

    inputs = [str(i) for i in inputs]
    _refuse_empty(inputs)
    refuse_checkpoint_inputs(inputs)
    dev = resolve_device(device)
    model = model or [str(find_default_model(inputs=inputs))]
    predictor = Predictor(load_models(model, dev), dev, options)
    out_dir = Path(out) if out else Path("runs") / f"infer-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    make_out_dir(out_dir)
    cfg = predictor.models[0].cfg
    cases, failures = expand_inputs(inputs, cfg, warn=True)
    summary = InferSummary(out_dir, failures=list(failures))
    if cases and not cfg.instances and (cfg.data.spatial_dims == 3 or not cfg.binary):  # class indices: name them
        try:
            tables = write_label_tables(out_dir, list(cfg.data.labels), force)
        except OSError as exc:
            raise batch_write_failure(out_dir / "labels.ctbl", exc, out_dir, 0, len(cases)) from None
        log.info(f"class names for the viewers: {tables[0]} (3D Slicer), {tables[1]} (ITK-SNAP)")
    for case in track(cases, desc="infer", enabled=progress and len(cases) >= 2, unit="case"):
        try:
            res = segment_case(predictor, case, out_dir, force=force)
        except CaseWriteError as exc:  # the folder is full or read-only: the next cases would fail alike
            raise batch_write_failure(exc.target, exc.cause, out_dir, len(summary.outputs), len(cases)) from None
        except MedsegError as exc:
            summary.failures.append(str(exc))
            log.error(str(exc))
            continue
        summary.outputs.append(res)
        _log_case(case, res)
    if summary.failures:
        written = f"the others were written to {out_dir}" if summary.outputs else "nothing was written"
        err = MedsegError(
            f"{len(summary.failures)} of {len(cases) + len(failures)} inputs failed (first: "
            f"{summary.failures[0]}); {written}"
        )
        err.summary = summary  # the cases that were segmented: infer --report still writes their PDFs
        raise err
    return summary


def _refuse_empty(inputs: list[str]) -> None:
    if not inputs:
        raise MedsegError("no INPUT given; fix: medseg infer scan.nii.gz --model runs/NAME/best.pt")
    if any(not i.strip() for i in inputs):  # an unset shell variable: Path("") is the current folder
        raise MedsegError(
            "an INPUT is empty (an unset shell variable?); fix: name the images, volumes or folders to segment"
        )


def _log_case(case: Case, res: dict) -> None:
    """The case's line (sizes per class, where the mask is), then what its loader facts mean for the reader."""
    from medseg.inference.facts import CaseFacts

    cls = ", ".join(f"{n}: {findings_sizes(res, v)}" for n, v in res["classes"].items()) + spacing_note(res)
    log.info(f"{case.case_id}: {cls} -> {res['segmentation']}")
    for level, text in CaseFacts.from_findings(res).notes(case.paths[0], res["geometry"]["shape"]):
        log.log(level, text)
