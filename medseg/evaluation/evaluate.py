"""``medseg evaluate``: per-case, per-class metrics at each case's original resolution.

Two entry points:

* :func:`evaluate_folders` pairs prediction and ground-truth files by case name
  (``_seg``/``_mask``/``_label`` suffixes and extensions ignored).
* :func:`evaluate_model` runs a checkpoint on a recipe's cases (all, or the
  checkpoint's own val/test split) and evaluates the result. Cases that are
  slices of one volume (LGG) are stacked back into that volume first, so the
  metrics are per patient.

Both write ``metrics.csv`` (one row per case and class), ``summary.csv``
(mean, std, median and 95% bootstrap interval per class and metric) and
``eval.json``; with ``figures`` (see :mod:`medseg.evaluation.outputs`) also the
plots and an overlay PNG per case (``overlays/``).

Units (docs/units.md): mm and mL for volumes; 2D images carry no pixel
spacing, so unless ``data.pixel_spacing_mm`` is set their distances are in px
(columns ``hd95_px``, ``assd_px``) and their sizes are pixel counts (px²).
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from medseg import __version__
from medseg.config.schema import value_classes
from medseg.data.base import IMAGE, LABEL
from medseg.errors import MedsegError, fail
from medseg.evaluation.detection import LESION_THRESHOLDS
from medseg.evaluation.instance_cohort import INSTANCE_CSV, InstanceCohort, scores_beside
from medseg.evaluation.lesions import LesionDetections, quantised
from medseg.evaluation.masks import (
    case_key,
    guess_labels,
    mask_files,
    pair_cases,
    read_instance_file,
    read_instance_map,
    read_label_map,
)
from medseg.evaluation.outputs import (
    Drawing,
    EvalResult,
    Figures,
    check_out,
    draw_overlays,
    write_evaluation,
)
from medseg.evaluation.tables import metrics_rows, rank_cases, units_info
from medseg.inference.options import InferenceOptions
from medseg.log import get_logger

log = get_logger(__name__)

# ----------------------------------------------------------------------------
# folders of masks
# ----------------------------------------------------------------------------


def evaluate_folders(
    pred_dir,
    gt_dir,
    out,
    labels: list[str] | None = None,
    images: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    figures: Figures | None = None,
    extra_metrics: tuple[str, ...] = (),
    instances: bool = False,
    label_values: dict[str, list[int]] | None = None,
) -> EvalResult:
    """Evaluate a folder of predictions against a folder of ground truth (``images``: a folder of the images,
    the overlays' background; ``extra_metrics``: groups of metrics beyond the standard ones, as a recipe's
    :attr:`~medseg.data.base.Recipe.extra_metrics` names them; ``label_values``: the ground truth's values that
    make each class, as ``data.label_values`` gives them, e.g. ``{"tumour": [1, 2, 3, 4]}``). With ``instances`` both are instance maps,
    scored object by object too, and ranked by the scores in ``<case>_objects.csv`` beside each prediction
    where ``medseg infer`` wrote one."""
    out_dir = Path(out)
    check_out(out_dir, force)
    pairs, pred_only, gt_only = pair_cases(pred_dir, gt_dir)
    if pred_only:
        log.warning(f"{len(pred_only)} predictions have no ground truth and are not scored: {', '.join(pred_only[:5])}")
    if gt_only:
        log.warning(f"{len(gt_only)} ground-truth cases have no prediction: {', '.join(gt_only[:5])}")
    if not pairs:
        raise fail(
            pred_dir,
            f"no prediction matches a ground-truth file in {gt_dir}",
            "name predictions <case>_seg.<ext> and ground truth <case>.<ext> (or <case>_mask.<ext>)",
        )
    labels = (
        list(labels) if labels else (["background", "object"] if instances else guess_labels([p[2] for p in pairs]))
    )
    values = _folder_values(labels, label_values, gt_dir)
    image_files = {case_key(p): p for p in mask_files(Path(images))} if images else {}
    lesions = LesionDetections(labels)
    cohort = InstanceCohort(labels[1]) if instances else None
    rows, cases, units = _score_pairs(
        pairs, labels, image_files, progress, tuple(extra_metrics), lesions, cohort, values
    )
    df = pd.DataFrame(rows)
    ranks = rank_cases(df)
    draw_overlays(figures, cases, ranks, out_dir, Drawing(labels, instances=instances, values=values), progress)
    info = {
        "mode": "folders",
        **units,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "labels": labels,
        **({"label_values": label_values} if label_values else {}),
        "extra_metrics": list(extra_metrics),
        "n_cases": len(pairs),
        "predictions_without_gt": pred_only,
        "gt_without_prediction": gt_only,
        "lesion_detection": _lesion_info(lesions),
        **({"instances": cohort.summary()} if cohort else {}),
        "cases": cases,
        "ranked": ranks,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return _write_all(out_dir, df, info, figures, lesions, cohort)


def _folder_values(labels: list[str], label_values: dict | None, gt_dir) -> dict[int, int] | None:
    """``label_values`` checked against ``labels`` as a config's are, then as value -> class."""
    if not label_values:
        return None
    from medseg.config.rules import check_label_values

    check_label_values(labels, label_values, False, f"--label-values for {gt_dir}")
    return value_classes(labels, label_values)


def _score_pairs(
    pairs: list,
    labels: list[str],
    image_files: dict,
    progress: bool,
    extra: tuple[str, ...],
    lesions,
    cohort=None,
    values: dict[int, int] | None = None,
) -> tuple[list, dict, dict]:
    """``(metrics rows, cases for eval.json, units)`` of the paired files; all of them must share one unit. With
    a ``cohort`` the files are instance maps: their foreground is scored, and their objects into ``cohort``."""
    from medseg.progress import track

    rows, cases, units = [], {}, None
    for case_id, pp, gp in track(pairs, desc="evaluate", enabled=progress, unit="case"):
        pred, gt, spacing = _read_pair(pp, gp, len(labels), instances=cohort is not None, values=values)
        if cohort is not None:  # objects scored as they are, pixels as the union of the objects
            scores = scores_beside(pp, pred)
            cohort.add(case_id, gt, pred, scores)
            lesions.add_objects(cohort.encoded[-1], ranked=scores is not None)
            pred, gt = (pred > 0).astype(np.uint8), (gt > 0).astype(np.uint8)
        case_units = units_info(spacing, gt.ndim)
        if units and case_units != units:  # one metrics.csv column cannot hold mm for some cases and px for others
            raise fail(
                gp,
                f"is measured in {case_units['size_unit']}, the cases before it in {units['size_unit']}",
                "evaluate volumes and 2D images (no pixel spacing) in separate runs",
            )
        units = case_units
        rows += metrics_rows(case_id, pred, gt, spacing, labels, extra)
        if cohort is None:
            lesions.add(pred, gt, None)  # masks alone: no probabilities to rank the lesions by
        cases[case_id] = {
            "prediction": str(pp),
            "ground_truth": str(gp),
            "image": str(image_files.get(case_id, "")) or None,
        }
    return rows, cases, units


def _read_pair(pp: Path, gp: Path, num_classes: int, instances: bool = False, values=None) -> tuple:
    """``(prediction, ground truth, spacing)`` of one pair (class maps, or with ``instances`` instance maps; the
    ground truth's values through ``values``); refused unless both lie on one grid."""
    read = read_instance_file if instances else (lambda p: read_label_map(p, num_classes))
    read_truth = read_instance_file if instances else (lambda p: read_label_map(p, num_classes, values))
    pred, _, paff = read(pp)
    gt, spacing, gaff = read_truth(gp)
    if pred.shape != gt.shape:
        raise MedsegError(
            f"{pp} and {gp}: shapes differ {pred.shape} vs {gt.shape}; fix: predict on the ground truth's "
            "grid (medseg infer writes masks in the input geometry)"
        )
    if (
        paff is not None
        and gaff is not None
        and not np.allclose(paff, gaff, atol=1e-3 * max(1.0, float(np.max(spacing))))
    ):
        raise MedsegError(
            f"{pp} and {gp}: geometry differs (origin/direction/spacing); fix: resample the prediction "
            "onto the ground-truth grid"
        )
    return pred, gt, spacing


# ----------------------------------------------------------------------------
# a model on a recipe's cases
# ----------------------------------------------------------------------------


def evaluate_model(
    model: str | Path | list,
    data: str,
    data_dir,
    out,
    split: str = "val",
    device: str = "auto",
    options: InferenceOptions | None = None,
    force: bool = False,
    progress: bool = True,
    figures: Figures | None = None,
) -> EvalResult:
    """Run ``model`` (one checkpoint, or a list of them to ensemble: probabilities averaged, as ``medseg infer``
    does) on a recipe's cases and evaluate at each case's original resolution.

    ``options`` override the checkpoint's test-time flips and post-processing (``threshold``, ``keep_largest``,
    ``min_size``, ``fill_holes``), so a choice can be measured on held-out cases without retraining."""
    from medseg.data import get_recipe, load_samples
    from medseg.runtime import resolve_device

    out_dir = Path(out)
    check_out(out_dir, force)
    dev = resolve_device(device)
    paths, models = _checkpoints(model, dev)
    cfg = models[0].cfg
    samples = load_samples(data, data_dir, {**cfg.data.options, "channels": cfg.data.channels}).samples
    samples, seen, test_set = _scored_samples(models, paths, samples, split, data_dir)
    labels = list(cfg.data.labels)
    t0 = time.time()
    recipe = get_recipe(data)
    volumes = recipe.volumes(samples)  # slices that stack into one volume (LGG), or None
    lesions = LesionDetections(labels)
    scorer = _scorer_for(cfg, volumes, labels, recipe.extra_metrics, lesions)
    predictor, infer_s = _predict(models, dev, options, samples, out_dir / "predictions", progress, scorer.add)
    rows, cases, units = scorer.finish()
    df = pd.DataFrame(rows)
    ranks = rank_cases(df)
    draw_overlays(figures, cases, ranks, out_dir, _drawing(cfg, recipe if volumes else None), progress)
    info = {
        "mode": "model",
        **units,
        **_models_info(paths, models),
        "data": data,
        "data_dir": str(data_dir),
        "split": "all" if test_set else split,
        "labels": labels,
        **({"label_values": cfg.data.label_values} if cfg.data.label_values else {}),
        "extra_metrics": list(recipe.extra_metrics),
        "n_cases": len(cases),
        "test_set": test_set,
        **({"split_requested": split} if test_set else {}),
        "training_cases_scored": len(seen) if split == "all" else 0,
        "per_volume": bool(volumes),
        "lesion_detection": _lesion_info(lesions),
        **({"instances": scorer.cohort.summary()} if cfg.instances else {}),
        "infer_seconds": round(infer_s, 1),
        "tta": predictor.options.tta,
        "postprocess": predictor.options.post,
        "cases": cases,
        "ranked": ranks,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    log.info(f"evaluated {len(cases)} {'volumes' if volumes else 'cases'} in {time.time() - t0:.0f}s")
    return _write_all(out_dir, df, info, figures, lesions, scorer.cohort if cfg.instances else None)


def _checkpoints(model, dev) -> tuple[list[str], list]:
    """``(paths, loaded models)`` of one checkpoint or a list of them (an ensemble)."""
    from medseg.inference.checkpoints import load_models

    paths = [str(m) for m in model] if isinstance(model, (list, tuple)) else [str(model)]
    if not paths:
        raise MedsegError("no checkpoint given; fix: --model runs/NAME/best.pt (repeat --model to ensemble)")
    return paths, load_models(paths, dev)


def _models_info(paths: list[str], models: list) -> dict:
    """What ``metrics.json`` says of the model: its file, hash and card, and the ensemble's members."""
    return {
        "model": str(Path(paths[0]).resolve()),
        "model_sha256_12": models[0].sha,
        "ensemble": [str(Path(p).resolve()) for p in paths] if len(paths) > 1 else None,
        "model_card": model_card(models[0].ckpt, models[0].sha),
    }


def _drawing(cfg, stacked_by) -> Drawing:
    """How a model's overlays are drawn: its classes, pixel size, background modality and, for slices that stack
    into volumes, the recipe that stacks them."""
    return Drawing(
        list(cfg.data.labels),
        spacing_2d=cfg.data.pixel_spacing_mm,
        modality=(list(cfg.data.channels) or [None])[0],  # the volume's background
        stacked_by=stacked_by,
        instances=cfg.instances,
        values=cfg.value_classes,
    )


def _predict(models: list, dev, options, samples: list[dict], pred_dir: Path, progress: bool, on_case) -> tuple:
    """``(predictor, seconds spent predicting)``: each sample segmented as ``medseg infer`` does, and handed with
    its probabilities to ``on_case(sample, segmentation file, probabilities)``."""
    from medseg.inference.cases import Case
    from medseg.inference.predictor import Predictor
    from medseg.inference.segment import segment_case_keeping_probabilities
    from medseg.progress import track

    predictor = Predictor(models, dev, options)  # options left unset: the first checkpoint's own
    pred_dir.mkdir(parents=True, exist_ok=True)
    seconds = 0.0
    for s in track(samples, desc="predict", enabled=progress, unit="case"):
        case = Case(s["case_id"], s[IMAGE] if isinstance(s[IMAGE], list) else [s[IMAGE]], s["case_id"])
        t0 = time.time()
        res, probs = segment_case_keeping_probabilities(predictor, case, pred_dir, force=True)
        seconds += time.time() - t0
        on_case(s, res["segmentation"], probs)
    return predictor, seconds


class _CaseScorer:
    """Each case on its own grid, scored as soon as it is predicted (its probabilities are then dropped); 2D cases
    in mm when the config gives their pixel spacing."""

    def __init__(self, labels: list[str], cfg, extra: tuple[str, ...], lesions: LesionDetections):
        self.labels, self.cfg, self.extra, self.lesions = labels, cfg, extra, lesions
        self.rows, self.cases = [], {}
        self.units = units_info(None, cfg.data.spatial_dims)

    def add(self, s: dict, segmentation: str, probs: np.ndarray) -> None:
        pred, _, _ = read_label_map(Path(segmentation), len(self.labels))
        gt, spacing, _ = read_label_map(Path(s[LABEL]), len(self.labels), self.cfg.value_classes)
        if self.cfg.data.spatial_dims == 2 and self.cfg.data.pixel_spacing_mm:
            spacing = tuple(self.cfg.data.pixel_spacing_mm)
        self.rows += metrics_rows(s["case_id"], pred, gt, spacing, self.labels, self.extra)
        self.lesions.add(pred, gt, _on_grid(self.lesions.probabilities(probs), gt.shape, segmentation))
        self.units = units_info(spacing, gt.ndim)
        self.cases[s["case_id"]] = {
            "meta": s.get("meta", {}),
            "image": s[IMAGE],
            "ground_truth": s[LABEL],
            "prediction": segmentation,
        }

    def finish(self) -> tuple[list, dict, dict]:
        return self.rows, self.cases, self.units


class _VolumeScorer:
    """Slices of one patient stacked into one volume (per-patient metrics, as in Buda et al. 2019); each slice's
    class probabilities are kept, as uint8, until its volume is scored."""

    def __init__(
        self, volumes: dict, labels: list[str], extra: tuple[str, ...], lesions: LesionDetections, values=None
    ):
        self.volumes, self.labels, self.extra, self.lesions = volumes, labels, extra, lesions
        self.values = values  # the ground truth's label values -> classes (data.label_values)
        self.predicted, self.kept = {}, {}

    def add(self, s: dict, segmentation: str, probs: np.ndarray) -> None:
        self.predicted[s["case_id"]] = segmentation
        self.kept[s["case_id"]] = quantised(self.lesions.probabilities(probs))

    def finish(self) -> tuple[list, dict, dict]:
        from medseg.data.stacking import stack_slices

        read = lambda p: read_label_map(Path(p), len(self.labels))[0]
        read_truth = lambda p: read_label_map(Path(p), len(self.labels), self.values)[0]
        rows, cases = [], {}
        for vid, sl in self.volumes.items():
            ids = [s["case_id"] for s in sl]
            pred = stack_slices([self.predicted[i] for i in ids], read)
            gt = stack_slices([s[LABEL] for s in sl], read_truth)
            # slices carry no in-plane spacing or thickness: sizes in voxels, distances in voxel steps
            rows += metrics_rows(vid, pred, gt, None, self.labels, self.extra)
            probabilities = {
                name: stack_slices([self.kept.pop(i)[name] for i in ids], lambda a: a) / 255.0
                for name in self.lesions.names
            }
            self.lesions.add(pred, gt, _on_grid(probabilities, gt.shape, self.predicted[ids[0]]))
            cases[vid] = {
                "slices": ids,
                "meta": sl[0].get("meta", {}),
                "image": [s[IMAGE] for s in sl],
                "ground_truth": [s[LABEL] for s in sl],
                "prediction": [self.predicted[i] for i in ids],
            }
        return rows, cases, units_info(None, 3)


class _InstanceScorer(_CaseScorer):
    """An instance task's cases: the foreground's pixel metrics as a binary task's, and the objects themselves
    (not connected components) for the object-wise scores of :class:`InstanceCohort` and lesions.csv."""

    def __init__(self, labels: list[str], cfg, extra: tuple[str, ...], lesions: LesionDetections):
        super().__init__(labels, cfg, extra, lesions)
        self.cohort = InstanceCohort(labels[1])

    def add(self, s: dict, segmentation: str, probs: np.ndarray) -> None:
        from medseg.data.nuclei import INSTANCES
        from medseg.objects import object_scores

        pred = read_instance_map(Path(segmentation))
        gt, volume_spacing, _ = read_instance_file(Path(s.get(INSTANCES, s[LABEL])))
        if pred.shape != gt.shape:
            raise fail(segmentation, f"is {pred.shape} but its ground truth is {gt.shape}", "predict on its grid")
        px = self.cfg.data.pixel_spacing_mm
        spacing = volume_spacing if gt.ndim == 3 else (tuple(px) if px else None)
        fg_pred, fg_gt = (pred > 0).astype(np.uint8), (gt > 0).astype(np.uint8)
        self.rows += metrics_rows(s["case_id"], fg_pred, fg_gt, spacing, self.labels, self.extra)
        scores = object_scores(pred, probs) if probs.shape[1:] == pred.shape else None
        self.cohort.add(s["case_id"], gt, pred, scores)
        self.lesions.add_objects(self.cohort.encoded[-1], ranked=scores is not None)
        self.units = units_info(spacing, gt.ndim)
        self.cases[s["case_id"]] = {
            "meta": s.get("meta", {}),
            "image": s[IMAGE],
            "ground_truth": s.get(INSTANCES, s[LABEL]),
            "prediction": segmentation,
        }


def _scorer_for(cfg, volumes, labels: list[str], extra: tuple[str, ...], lesions: LesionDetections):
    """How a model's cases are scored: as objects, as slices stacked into volumes, or each on its own."""
    if cfg.instances:
        return _InstanceScorer(labels, cfg, extra, lesions)
    if volumes:
        return _VolumeScorer(volumes, labels, extra, lesions, cfg.value_classes)
    return _CaseScorer(labels, cfg, extra, lesions)


def _write_all(out_dir: Path, df, info: dict, figures, lesions: LesionDetections, cohort) -> EvalResult:
    """The evaluation's files (:func:`write_evaluation`), with an instance ``cohort`` also instances.csv; the
    precision-recall curves are the objects' for instances, else the lesions'."""
    curves = cohort.curves() if cohort else lesions.curves()
    result = write_evaluation(out_dir, df, info, figures, info["lesion_detection"]["rows"], curves)
    if cohort:
        _write_instance_rows(out_dir, cohort)
        _log_instances(info["instances"])
    return result


def _write_instance_rows(out_dir: Path, cohort: InstanceCohort) -> None:
    from medseg.evaluation.outputs import write_csv

    write_csv(out_dir / INSTANCE_CSV, pd.DataFrame(cohort.per_case))


def _log_instances(summary: dict) -> None:
    log.info(
        f"objects: DSB 2018 score {summary['dsb_mean']:.4f}, AP50 {summary['ap50']:.4f}, "
        f"AP@[.50:.95] {summary['ap']:.4f}, PQ {summary['pq_mean']:.4f}, count error per image "
        f"{summary['count_error_mean']:+.1f} ({summary['objects_pred']} found, {summary['objects_true']} true) "
        f"-> {INSTANCE_CSV}"
    )


def _on_grid(probabilities: dict[str, np.ndarray], shape: tuple, segmentation: str) -> dict | None:
    """The class probabilities when they lie on the scored grid, else None (the lesions then go unranked)."""
    if all(p.shape == shape for p in probabilities.values()):
        return probabilities
    log.warning(f"{segmentation}: probabilities {next(iter(probabilities.values())).shape} are not on the mask's grid "
                f"{shape}; its lesions are scored without a ranking")  # fmt: skip
    return None


def _lesion_info(lesions: LesionDetections) -> dict:
    """eval.json's record of the lesion-wise detection (lesions.csv holds the table)."""
    return {
        "file": "lesions.csv",
        "ranked_by_probability": lesions.scored,
        "iou_thresholds": list(LESION_THRESHOLDS),
        "rows": lesions.rows(),
    }


# ----------------------------------------------------------------------------
# which cases are scored
# ----------------------------------------------------------------------------


def _scored_samples(models: list, paths: list[str], samples: list[dict], split: str, data_dir) -> tuple:
    """``(samples to score, cases the models saw, whether the folder is a test set)``. A folder holding none of
    the models' training or validation cases is all held out, whatever ``split`` asked for."""
    seen = _seen_cases(models, samples)
    test_set = split != "all" and not seen and all(m.ckpt.get("split", {}).get("train") for m in models)
    if test_set:
        log.info(
            f"none of the model's training or validation cases are in {data_dir}: scoring all {len(samples)} cases "
            "as a test set"
        )
    elif split != "all":
        samples = _split_samples(models, paths, samples, split, data_dir, seen)
    elif seen:
        log.warning(
            f"{len(seen)} of the {len(samples)} cases in {data_dir} were used to train or select the model "
            f"(e.g. {', '.join(sorted(seen)[:3])}): their scores are optimistic; fix: --split val (or test) scores "
            "only the held-out ones"
        )
    return samples, seen, test_set


def _seen_cases(models: list, samples: list[dict]) -> set[str]:
    """The cases of ``samples`` that any of ``models`` trained on or was selected on (its train and val splits)."""
    seen = set()
    for m in models:
        sp = m.ckpt.get("split", {})
        seen |= set(sp.get("train") or []) | set(sp.get("val") or [])
    return {s["case_id"] for s in samples if s["case_id"] in seen}


def _split_samples(
    models: list, paths: list[str], samples: list[dict], split: str, data_dir, seen: set[str]
) -> list[dict]:
    """The samples of the checkpoints' ``split``; stops when the ensemble's splits differ or none of it is here."""
    lm = models[0]
    ids = set(lm.ckpt.get("split", {}).get(split) or [])
    for other in models[1:]:
        if set(other.ckpt.get("split", {}).get(split) or []) != ids:
            raise fail(
                other.path,
                f"was trained on another split than {paths[0]}, so its '{split}' cases differ "
                "(an ensemble could score cases one member trained on)",
                "ensemble checkpoints of the same split, or evaluate on a folder of cases none of them saw",
            )
    if not ids:
        raise fail(
            paths[0], f"has no '{split}' cases in its split", "use --split all (or val/test when the run had them)"
        )
    chosen = [s for s in samples if s["case_id"] in ids]
    if not chosen:
        # some of the model's own cases are here (else this is a test set): scoring them all would be optimistic
        here = f", but {len(seen)} of its training or validation cases are" if seen else ""
        raise fail(
            data_dir,
            f"none of the checkpoint's '{split}' cases are in this folder{here}",
            "evaluate on the run's own data folder, or on a folder of cases the model never saw "
            "(then all of it is scored as a test set)",
        )
    return chosen


def architecture(spec: dict) -> str:
    """The network in one line: an encoder network names its encoder, a U-Net its levels."""
    kw = spec["kwargs"]
    if "fitted" in kw:  # a classical method: what its search chose
        chosen = ", ".join(f"{k} {v}" for k, v in kw["fitted"].items() if not isinstance(v, (list, dict)))
        return f"{spec['name']} {kw.get('spatial_dims')}D (classical), fitted: {chosen or 'its defaults'}"
    if kw.get("encoder"):
        levels = f", decoder widths {kw.get('channels')}" if spec["name"] == "encoder_unet" else ""
        return f"{spec['name']} {kw.get('spatial_dims')}D on {kw['encoder']}{levels}"
    return (
        f"{spec['name']} {kw.get('spatial_dims')}D, channels {kw.get('channels')}, "
        f"strides {kw.get('strides')}, residual units {kw.get('num_res_units')}"
    )


def initial_weights(w: dict | None) -> str:
    """Where training started: the file (and its hash) of ``--init`` or ``model.pretrained``, or random weights."""
    if not w:
        return "random initialisation"
    name = Path(w["source"]).name
    return f"{name} ({w['option']}, sha256 {w['sha256'][:12]}; {w['loaded']} of {w['total']} {w['target']} tensors)"


def model_card(ck: dict, sha: str) -> dict:
    """The facts of a checkpoint that eval.json and the reports show: architecture, inputs, training data."""
    d = ck.get("data", {})
    return {
        "architecture": architecture(ck["model"]),
        "inputs": ", ".join(ck.get("channels", [])),
        "labels": ", ".join(ck.get("labels", [])),
        "training_data": f"{d.get('recipe')} from {d.get('data_dir')}",
        "split": f"{d.get('n_train')} train / {d.get('n_val')} validation ({d.get('split_method')})",
        "validation": ", ".join(
            f"{k.replace('val_', '')} {float(v):.4f}" for k, v in (ck.get("val_metrics") or {}).items()
        ),
        "initial_weights": fitted_on(ck["fit"]) if ck.get("fit") else initial_weights(ck.get("weights")),
        "epochs": ck.get("epoch"),
        "medseg_version": ck.get("medseg_version"),
        "checkpoint_sha256_12": sha,
        "trained": ck.get("created"),
        "method": ck["model"]["name"],
        "classical": bool(ck.get("fit")),
    }


def fitted_on(fit: dict) -> str:
    """A classical method's start: no weights, a search (the checkpoint's ``fit`` facts)."""
    return (
        f"none: {fit.get('settings_tried')} settings searched on {fit.get('n_images')} training images "
        f"(training Dice {float(fit.get('train_dice', float('nan'))):.4f})"
    )
