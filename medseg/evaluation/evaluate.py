"""``medseg evaluate``: per-case, per-class metrics at each case's original resolution.

Two entry points:

* :func:`evaluate_folders` pairs prediction and ground-truth files by case name
  (``_seg``/``_mask``/``_label`` suffixes and extensions ignored).
* :func:`evaluate_model` runs a checkpoint on a recipe's cases (all, or the
  checkpoint's own val/test split) and evaluates the result. Cases that are
  slices of one volume (LGG) are stacked back into that volume first, so the
  metrics are per patient.

Both write ``metrics.csv`` (one row per case and class), ``summary.csv``
(mean, std, median and 95% bootstrap interval per class and metric), plots,
an overlay PNG per case (``overlays/``), and ``eval.json``.

Units (docs/units.md): mm and mL for volumes; 2D images carry no pixel
spacing, so unless ``data.pixel_spacing_mm`` is set their distances are in px
(columns ``hd95_px``, ``assd_px``) and their sizes are pixel counts (px²).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from medseg import __version__
from medseg.data.base import IMAGE, LABEL, mask_stem
from medseg.errors import MedsegError, fail
from medseg.evaluation.findings import significant
from medseg.evaluation.metrics import bootstrap_ci, case_metrics, distance_keys, metric_names
from medseg.inference.options import InferenceOptions
from medseg.io import IMAGE_2D_EXTS, VOLUME_EXTS, atomic_write, file_ext, read_image_2d, read_volume, strip_ext

SIZE_KEYS = ["gt_size", "pred_size"]
COUNT_KEYS = ["lesions_gt", "lesions_pred", "lesions_detected"]
OUTPUTS = ("metrics.csv", "summary.csv", "eval.json")


@dataclass
class EvalResult:
    out_dir: Path
    metrics: pd.DataFrame
    summary: pd.DataFrame
    info: dict


# ----------------------------------------------------------------------------
# reading and pairing
# ----------------------------------------------------------------------------


def case_key(path: str | Path) -> str:
    return mask_stem(strip_ext(path))


def _mask_files(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file()
        and file_ext(p) in VOLUME_EXTS + IMAGE_2D_EXTS
        and not p.name.startswith(".")
        and "_prob" not in p.name
    )


def pair_cases(pred_dir: str | Path, gt_dir: str | Path) -> tuple[list[tuple[str, Path, Path]], list[str], list[str]]:
    """Return ``(pairs, predictions_without_gt, gt_without_prediction)``."""
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d, what in ((pred_dir, "--pred"), (gt_dir, "--gt")):
        if not d.is_dir():
            raise fail(d, "is not a folder", f"pass {what} as a folder of masks")
    preds = {case_key(p): p for p in _mask_files(pred_dir)}
    gts = {case_key(p): p for p in _mask_files(gt_dir)}
    if not preds:
        raise fail(pred_dir, "holds no mask files", "point --pred at the folder medseg infer wrote")
    pairs = [(k, preds[k], gts[k]) for k in sorted(preds) if k in gts]
    return pairs, sorted(set(preds) - set(gts)), sorted(set(gts) - set(preds))


def row_keys(length_unit: str = "mm") -> list[str]:
    return ["case_id", "class", *metric_names(length_unit), *SIZE_KEYS, *COUNT_KEYS]


def units_info(spacing, ndim: int) -> dict:
    """eval.json's unit fields for cases measured with ``spacing`` (None: unknown, so px and pixel/voxel counts)."""
    known = spacing is not None
    size = ("mL" if ndim == 3 else "mm²") if known else ("voxels" if ndim == 3 else "px²")
    return {"spacing_known": known, "size_unit": size, "length_unit": "mm" if known else "px"}


def read_label_map(path: Path, num_classes: int) -> tuple[np.ndarray, tuple | None, np.ndarray | None]:
    """A mask file -> ``(class map, spacing, affine or None)``; binary tasks threshold anything > 0. 2D files carry
    no pixel spacing: theirs is None."""
    from medseg.data.transforms import binarise_mask_2d, labels_to_classes

    if file_ext(path) in IMAGE_2D_EXTS:
        raw = read_image_2d(path, kind="mask")
        if num_classes == 2:
            return binarise_mask_2d(raw), None, None
        return labels_to_classes(raw if raw.ndim == 2 else raw[..., 0], num_classes, path), None, None
    arr, geom = read_volume(path)
    if arr.ndim == 4:
        arr = arr[..., 0]
    return labels_to_classes(np.asarray(arr, dtype=np.float32), num_classes, path), tuple(geom.spacing), geom.affine


def guess_labels(gt_files: list[Path]) -> list[str]:
    values = set()
    for p in gt_files[:20]:
        arr = read_image_2d(p, kind="mask") if file_ext(p) in IMAGE_2D_EXTS else read_volume(p)[0]
        values |= {int(v) for v in np.unique(np.asarray(arr)) if float(v).is_integer()}
    if values <= {0, 1} or values <= {0, 255}:
        return ["background", "lesion"]
    return ["background"] + [f"class_{i}" for i in range(1, max(values) + 1)]


# ----------------------------------------------------------------------------
# computing
# ----------------------------------------------------------------------------


def metrics_rows(case_id: str, pred: np.ndarray, gt: np.ndarray, spacing, labels: list[str]) -> list[dict]:
    """One row per foreground class (and the whole foreground when there are several classes) of one case."""
    pairs = [(name, pred == c, gt == c) for c, name in enumerate(labels) if c]
    if len(labels) > 2:  # whole foreground ("whole tumour" for BraTS)
        pairs.append(("all_foreground", pred > 0, gt > 0))
    return [
        {"case_id": case_id, "class": name, **_rounded_sizes(case_metrics(p, g, spacing), spacing is not None)}
        for name, p, g in pairs
    ]


def _rounded_sizes(m: dict, physical: bool) -> dict:
    """Sizes as the data support them: mm² and mL to 3 significant figures (the pixel count is exact, the area is
    not known to six digits); pixel and voxel counts stay whole."""
    if physical:
        for k in SIZE_KEYS:
            m[k] = significant(m[k])
    return m


def summarise(df: pd.DataFrame, units: dict | None = None) -> pd.DataFrame:
    """Per class and metric: n, undefined count, mean, SD, median, 95% bootstrap interval, and the unit."""
    units = units or units_info((1.0, 1.0, 1.0), 3)
    length = units["length_unit"]
    unit_of = {**dict.fromkeys(distance_keys(length), length), **dict.fromkeys(SIZE_KEYS, units["size_unit"])}
    out = []
    for cls, g in df.groupby("class", sort=False):
        for metric in metric_names(length) + SIZE_KEYS:
            v = g[metric].to_numpy(dtype=float)
            finite = v[np.isfinite(v)]
            lo, hi = bootstrap_ci(finite)
            out.append(
                {
                    "class": cls,
                    "metric": metric,
                    "unit": unit_of.get(metric, ""),
                    "n": int(finite.size),
                    "n_undefined": int(v.size - finite.size),
                    "mean": float(finite.mean()) if finite.size else np.nan,
                    "std": float(finite.std(ddof=1)) if finite.size > 1 else np.nan,
                    "median": float(np.median(finite)) if finite.size else np.nan,
                    "ci95_low": lo,
                    "ci95_high": hi,
                }
            )
    return pd.DataFrame(out)


def _check_out(out_dir: Path, force: bool) -> None:
    existing = [f for f in OUTPUTS if (out_dir / f).exists()]
    if existing and not force:
        raise fail(
            out_dir,
            f"already holds an evaluation ({', '.join(existing)})",
            "pass --force to overwrite or choose another --out",
        )
    out_dir.mkdir(parents=True, exist_ok=True)


def _write(out_dir: Path, df: pd.DataFrame, info: dict) -> EvalResult:
    df = df[[k for k in row_keys(info["length_unit"]) if k in df.columns]]
    summary = summarise(df, info)
    atomic_write(out_dir / "metrics.csv", lambda tmp: df.to_csv(tmp, index=False, float_format="%.6g"), suffix=".csv")
    atomic_write(
        out_dir / "summary.csv", lambda tmp: summary.to_csv(tmp, index=False, float_format="%.6g"), suffix=".csv"
    )
    from medseg.reporting.overlays import evaluation_plots

    info["plots"] = evaluation_plots(df, out_dir, info["size_unit"])
    atomic_write(
        out_dir / "eval.json", lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, default=str)), suffix=".json"
    )
    return EvalResult(out_dir, df, summary, info)


def _rank_cases(df: pd.DataFrame) -> dict[str, str]:
    """Best, median and worst case by mean Dice over foreground classes."""
    per_case = df[df["class"] != "all_foreground"].groupby("case_id")["dice"].mean().sort_values()
    if per_case.empty:
        return {}
    return {"worst": per_case.index[0], "median": per_case.index[len(per_case) // 2], "best": per_case.index[-1]}


def evaluate_folders(
    pred_dir,
    gt_dir,
    out,
    labels: list[str] | None = None,
    images: str | Path | None = None,
    force: bool = False,
    progress: bool = True,
    log=print,
) -> EvalResult:
    """Evaluate a folder of predictions against a folder of ground truth."""
    from medseg.progress import track
    from medseg.reporting.overlays import save_case_overlay

    out_dir = Path(out)
    _check_out(out_dir, force)
    pairs, pred_only, gt_only = pair_cases(pred_dir, gt_dir)
    if pred_only:
        log(
            f"warning: {len(pred_only)} predictions have no ground truth and are not scored: {', '.join(pred_only[:5])}"
        )
    if gt_only:
        log(f"warning: {len(gt_only)} ground-truth cases have no prediction: {', '.join(gt_only[:5])}")
    if not pairs:
        raise fail(
            pred_dir,
            f"no prediction matches a ground-truth file in {gt_dir}",
            "name predictions <case>_seg.<ext> and ground truth <case>.<ext> (or <case>_mask.<ext>)",
        )
    labels = list(labels) if labels else guess_labels([p[2] for p in pairs])
    image_files = {case_key(p): p for p in _mask_files(Path(images))} if images else {}
    rows, cases, units = [], {}, None
    for case_id, pp, gp in track(pairs, desc="evaluate", enabled=progress, unit="case"):
        pred, _, paff = read_label_map(pp, len(labels))
        gt, spacing, gaff = read_label_map(gp, len(labels))
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
        case_units = units_info(spacing, gt.ndim)
        if units and case_units != units:  # one metrics.csv column cannot hold mm for some cases and px for others
            raise fail(
                gp,
                f"is measured in {case_units['size_unit']}, the cases before it in {units['size_unit']}",
                "evaluate volumes and 2D images (no pixel spacing) in separate runs",
            )
        units = case_units
        rows += metrics_rows(case_id, pred, gt, spacing, labels)
        cases[case_id] = {
            "prediction": str(pp),
            "ground_truth": str(gp),
            "image": str(image_files.get(case_id, "")) or None,
        }
    df = pd.DataFrame(rows)
    ranks = _rank_cases(df)
    tags = {cid: tag for tag, cid in ranks.items()}
    for cid, c in track(cases.items(), desc="overlays", enabled=progress, unit="case"):
        title = f"{cid} ({tags[cid]})" if cid in tags else cid
        c["overlay"] = save_case_overlay(
            c["image"], c["ground_truth"], c["prediction"], labels, out_dir / "overlays" / f"{cid}.png", title=title
        )
    info = {
        "mode": "folders",
        **units,
        "pred_dir": str(pred_dir),
        "gt_dir": str(gt_dir),
        "labels": labels,
        "n_cases": len(pairs),
        "predictions_without_gt": pred_only,
        "gt_without_prediction": gt_only,
        "cases": cases,
        "ranked": ranks,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return _write(out_dir, df, info)


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
    log=print,
) -> EvalResult:
    """Run ``model`` (one checkpoint, or a list of them to ensemble: probabilities averaged, as ``medseg infer``
    does) on a recipe's cases and evaluate at each case's original resolution.

    ``options`` override the checkpoint's test-time flips and post-processing (``threshold``, ``keep_largest``,
    ``min_size``, ``fill_holes``), so a choice can be measured on held-out cases without retraining."""
    from medseg.data import get_recipe, load_samples
    from medseg.data.stacking import stack_slices
    from medseg.inference.cases import Case
    from medseg.inference.checkpoints import load_models
    from medseg.inference.infer import segment_case
    from medseg.inference.predictor import Predictor
    from medseg.progress import track
    from medseg.reporting.overlays import save_case_overlay, save_volume_overlay
    from medseg.runtime import resolve_device

    out_dir = Path(out)
    _check_out(out_dir, force)
    dev = resolve_device(device)
    paths = [str(m) for m in model] if isinstance(model, (list, tuple)) else [str(model)]
    if not paths:
        raise MedsegError("no checkpoint given; fix: --model runs/NAME/best.pt (repeat --model to ensemble)")
    model = paths[0]
    models = load_models(paths, dev)
    lm = models[0]
    cfg = lm.cfg
    samples = load_samples(data, data_dir, {**cfg.data.options, "channels": cfg.data.channels}).samples
    seen = _seen_cases(models, samples)
    test_set = split != "all" and not seen and all(m.ckpt.get("split", {}).get("train") for m in models)
    if test_set:  # a folder the model(s) never saw: all of it is held out, whatever the split asked for
        log(
            f"none of the model's training or validation cases are in {data_dir}: scoring all {len(samples)} cases "
            "as a test set"
        )
    elif split != "all":
        samples = _split_samples(models, paths, samples, split, data_dir, seen)
    elif seen:
        log(
            f"warning: {len(seen)} of the {len(samples)} cases in {data_dir} were used to train or select the model "
            f"(e.g. {', '.join(sorted(seen)[:3])}): their scores are optimistic; fix: --split val (or test) scores "
            "only the held-out ones"
        )
    labels = list(cfg.data.labels)
    predictor = Predictor(models, dev, options)  # options left unset: the first checkpoint's own
    pred_dir = out_dir / "predictions"
    pred_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    predicted = {}
    for s in track(samples, desc="predict", enabled=progress, unit="case"):
        case = Case(s["case_id"], s[IMAGE] if isinstance(s[IMAGE], list) else [s[IMAGE]], s["case_id"])
        res = segment_case(predictor, case, pred_dir, force=True)
        predicted[s["case_id"]] = res["segmentation"]
    infer_s = time.time() - t0
    rows, cases = [], {}
    recipe = get_recipe(data)
    volumes = recipe.volumes(samples)  # slices that stack into one volume (LGG), or None
    units = units_info(None, 3 if volumes else cfg.data.spatial_dims)
    if volumes:  # slices of one patient -> one volume (per-patient metrics, as in Buda et al. 2019)
        read = lambda p: read_label_map(Path(p), len(labels))[0]
        for vid, sl in volumes.items():
            pred = stack_slices([predicted[s["case_id"]] for s in sl], read)
            gt = stack_slices([s[LABEL] for s in sl], read)
            # slices carry no in-plane spacing or thickness: sizes in voxels, distances in voxel steps
            rows += metrics_rows(vid, pred, gt, None, labels)
            cases[vid] = {
                "slices": [s["case_id"] for s in sl],
                "meta": sl[0].get("meta", {}),
                "image": [s[IMAGE] for s in sl],
                "ground_truth": [s[LABEL] for s in sl],
                "prediction": [predicted[s["case_id"]] for s in sl],
            }
    else:
        for s in samples:
            pred, _, _ = read_label_map(Path(predicted[s["case_id"]]), len(labels))
            gt, spacing, _ = read_label_map(Path(s[LABEL]), len(labels))
            if cfg.data.spatial_dims == 2 and cfg.data.pixel_spacing_mm:
                spacing = tuple(cfg.data.pixel_spacing_mm)
            rows += metrics_rows(s["case_id"], pred, gt, spacing, labels)
            units = units_info(spacing, gt.ndim)
            cases[s["case_id"]] = {
                "meta": s.get("meta", {}),
                "image": s[IMAGE],
                "ground_truth": s[LABEL],
                "prediction": predicted[s["case_id"]],
            }
    df = pd.DataFrame(rows)
    ranks = _rank_cases(df)
    tags = {cid: tag for tag, cid in ranks.items()}
    for cid, c in track(cases.items(), desc="overlays", enabled=progress, unit="case"):
        target = out_dir / "overlays" / f"{cid}.png"
        title = f"{cid} ({tags[cid]})" if cid in tags else cid
        if volumes:
            c["overlay"] = save_volume_overlay(c, labels, target, recipe, title=title)
        else:
            c["overlay"] = save_case_overlay(
                c["image"],
                c["ground_truth"],
                c["prediction"],
                labels,
                target,
                title=title,
                spacing_2d=cfg.data.pixel_spacing_mm,
                modality=(list(cfg.data.channels) or [None])[0],
            )  # the volume's background
    ck = lm.ckpt
    info = {
        "mode": "model",
        **units,
        "model": str(Path(model).resolve()),
        "model_sha256_12": lm.sha,
        "data": data,
        "ensemble": [str(Path(p).resolve()) for p in paths] if len(paths) > 1 else None,
        "data_dir": str(data_dir),
        "split": "all" if test_set else split,
        "labels": labels,
        "n_cases": len(cases),
        "test_set": test_set,
        **({"split_requested": split} if test_set else {}),
        "training_cases_scored": len(seen) if split == "all" else 0,
        "per_volume": bool(volumes),
        "infer_seconds": round(infer_s, 1),
        "tta": predictor.options.tta,
        "postprocess": predictor.options.post,
        "cases": cases,
        "ranked": ranks,
        "model_card": model_card(ck, lm.sha),
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    log(f"evaluated {len(cases)} {'volumes' if volumes else 'cases'} in {time.time() - t0:.0f}s")
    return _write(out_dir, df, info)


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


def model_card(ck: dict, sha: str) -> dict:
    d = ck.get("data", {})
    spec = ck["model"]
    kw = spec["kwargs"]
    return {
        "architecture": f"{spec['name']} {kw.get('spatial_dims')}D, channels {kw.get('channels')}, "
        f"strides {kw.get('strides')}, residual units {kw.get('num_res_units')}",
        "inputs": ", ".join(ck.get("channels", [])),
        "labels": ", ".join(ck.get("labels", [])),
        "training_data": f"{d.get('recipe')} from {d.get('data_dir')}",
        "split": f"{d.get('n_train')} train / {d.get('n_val')} validation ({d.get('split_method')})",
        "validation": ", ".join(
            f"{k.replace('val_', '')} {float(v):.4f}" for k, v in (ck.get("val_metrics") or {}).items()
        ),
        "epochs": ck.get("epoch"),
        "medseg_version": ck.get("medseg_version"),
        "checkpoint_sha256_12": sha,
        "trained": ck.get("created"),
    }
