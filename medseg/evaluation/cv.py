"""``medseg cv``: k-fold cross-validation of a config, each held-out fold scored at the original resolution.

Fold ``f`` of ``K`` is the split ``data.split.folds=K, data.split.fold=f`` that ``medseg train`` draws itself: groups
(patients) stay on one side, folds are drawn per stratum (``data.split.stratify``) with ``data.split.seed``, so the
folds of every run of a config are the same and two runs can be compared case by case (:mod:`medseg.evaluation.compare`).

The output folder holds one run folder per fold (``fold0/`` ...: what ``medseg train`` writes, plus ``eval-last/``:
what ``medseg evaluate`` writes for the fold's held-out cases) and the pooled results:

* ``cv.json``: how the folds were made and, per fold, the headline scores, the held-out cases and the timings;
* ``folds.csv``: every fold's ``summary.csv`` stacked, with a ``fold`` column;
* ``summary.csv``: per class and metric, the mean of the fold means and their spread over folds, beside the
  per-case statistics of all held-out cases pooled;
* ``metrics.csv``: every held-out case's metrics, with its ``fold``.

The scored checkpoint is each fold's final weights (``last.pt``): ``best.pt`` was picked by Dice on the held-out fold
itself, so its score there is optimistic; ``score_best`` scores it beside (``eval-best/``) for reference. The folds'
``last.pt`` together are the ensemble that ``medseg infer -m CVDIR`` runs (:mod:`medseg.evaluation.cv_ensemble`).
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
from medseg.config import Config, load_config
from medseg.errors import MedsegError, fail
from medseg.evaluation.outputs import write_csv
from medseg.io import atomic_write
from medseg.log import get_logger

_log = get_logger(__name__)

SCORED = "last"  # the checkpoint whose held-out score is the headline, and the ensemble's members
CV_FILES = ("cv.json", "folds.csv", "summary.csv", "metrics.csv")
EVAL_OUTPUTS = ("metrics.csv", "summary.csv", "eval.json")


@dataclass
class CVResult:
    out_dir: Path
    info: dict  # cv.json
    folds: pd.DataFrame  # folds.csv
    summary: pd.DataFrame  # summary.csv
    metrics: pd.DataFrame  # metrics.csv


def describe_machine() -> str:
    """Cores, CPU model, GPU and torch version: where a figure was measured."""
    import os
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{os.cpu_count()} cores ({cpu}), {gpu}, torch {torch.__version__}"


# ----------------------------------------------------------------------------
# the folds and what a rerun may reuse
# ----------------------------------------------------------------------------


def fold_config(config: str, folds: int, fold: int, overrides=()) -> Config:
    """``config`` with ``overrides`` as fold ``fold`` of ``folds`` (the overrides cannot move the fold)."""
    return load_config(config, [*overrides, f"data.split.folds={folds}", f"data.split.fold={fold}"])


def _setup(config: str, folds: int, data_dir: Path, overrides: list[str], tta, cfg: Config) -> dict:
    """What makes two runs' folds the same folds, scored the same way; a rerun into one folder must match it."""
    values = cfg.to_dict()
    values["data"]["split"].pop("fold")
    return {
        "config": config,
        "folds": folds,
        "data_dir": str(data_dir.resolve()),
        "overrides": list(overrides),
        "tta": tta,
        "config_values": values,
    }


def _differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = sorted(set(old) | set(new))
    out = []
    for k in keys:
        a, b = old.get(k), new.get(k)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{k}.")
        elif a != b:
            out.append(f"{prefix}{k}")
    return out


def read_cv(out_dir: Path) -> dict | None:
    """cv.json of ``out_dir``, or None when there is none."""
    path = out_dir / "cv.json"
    if not path.is_file():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise fail(path, f"cannot be read ({exc})", "remove it or choose another --out") from None
    if not isinstance(info, dict) or "setup" not in info or "folds" not in info:
        raise fail(path, "was not written by medseg cv", "move it away or choose another --out")
    return info


def _check_same_setup(out_dir: Path, old: dict, setup: dict) -> None:
    changed = _differences(old["setup"], setup)
    if changed:
        raise fail(
            out_dir,
            f"holds folds of another cross-validation (differs in {', '.join(changed[:4])}), and pooling "
            "folds of two setups would mix two experiments",
            "choose another --out (or delete the folder to start over)",
        )


def _refuse_foreign_files(out_dir: Path) -> None:
    """Without a cv.json, files named as the pooled results belong to something else (an evaluation's
    metrics.csv, say): they are never replaced, even with --force."""
    found = [n for n in CV_FILES[1:] if (out_dir / n).exists()]
    if found:
        raise fail(
            out_dir,
            f"holds {', '.join(found)} but no cv.json, so medseg cv did not write them",
            "choose another --out (an empty or new folder)",
        )


def _holds_fold_run(fold_dir: Path) -> list[str]:
    found = [f"{ck}.pt" for ck in ("last", "best") if (fold_dir / f"{ck}.pt").exists()]
    return found + [f"{d.name}/" for d in sorted(fold_dir.glob("eval-*")) if d.is_dir()]


def _folds_to_run(out_dir: Path, wanted: list[int], done: dict, force: bool) -> list[int]:
    """The folds still to train: without ``force``, finished folds are kept and a fold folder left by an unfinished
    run is refused (its files would be overwritten)."""
    if force:
        return wanted
    todo = [f for f in wanted if str(f) not in done]
    blocked = {f: _holds_fold_run(out_dir / f"fold{f}") for f in todo}
    blocked = {f: files for f, files in blocked.items() if files}
    if blocked:
        f, files = next(iter(blocked.items()))
        raise fail(
            out_dir / f"fold{f}",
            f"already holds {', '.join(files)} of a fold that did not finish",
            f"pass --force to train fold{'s' if len(blocked) > 1 else ''} {' '.join(map(str, blocked))} again, "
            "or choose another --out",
        )
    for f in wanted:
        if str(f) in done:
            _log.info(f"fold {f}: finished already, kept (pass --force to train it again)")
    return todo


# ----------------------------------------------------------------------------
# one fold
# ----------------------------------------------------------------------------


def _headline(summary: pd.DataFrame, label: str) -> dict[str, float]:
    s = summary[summary["class"] == label].set_index("metric")["mean"]
    return {m: float(s[m]) for m in ("dice", "jaccard")}


def _run_fold(
    cfg: Config, data_dir: Path, fold_dir: Path, device: str, tta, score_best: bool, force, progress, figures, init=None
):
    from medseg.engine.train import train
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.inference.options import InferenceOptions

    t0 = time.time()
    tr = train(cfg, data_dir, fold_dir, device=device, force=force, progress=progress, init=init)
    train_min = (time.time() - t0) / 60
    label = cfg.data.labels[1]
    scores, t0 = {}, time.time()
    for ck in (SCORED, "best") if score_best else (SCORED,):
        # the fold was just trained into this folder, so an evaluation left there belongs to a run now replaced
        ev = evaluate_model(
            fold_dir / f"{ck}.pt",
            cfg.data.recipe,
            data_dir,
            fold_dir / f"eval-{ck}",
            split="val",
            device=device,
            options=InferenceOptions(tta=tta),
            force=True,
            progress=progress,
            figures=figures,
        )
        scores[ck] = (_headline(ev.summary, label), ev)
    ev = scores[SCORED][1]
    best = scores["best"][0] if "best" in scores else {"dice": None, "jaccard": None}
    return {
        "fold": cfg.data.split.fold,
        "dice": scores[SCORED][0]["dice"],
        "jaccard": scores[SCORED][0]["jaccard"],
        "dice_best_pt": best["dice"],
        "jaccard_best_pt": best["jaccard"],
        "class": label,
        "train_minutes": round(train_min, 2),
        "eval_minutes": round((time.time() - t0) / 60, 2),
        "best_val_dice_training_grid": tr.best_metric,
        "best_epoch": tr.best_epoch,
        "n_val": ev.info["n_cases"],
        "per_volume": bool(ev.info.get("per_volume", False)),
        "tta": bool(ev.info["tta"]),
        "held_out": sorted(ev.info["cases"]),
        **({"instances": ev.info["instances"]} if "instances" in ev.info else {}),
        "machine": describe_machine(),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


# ----------------------------------------------------------------------------
# pooling
# ----------------------------------------------------------------------------


def _read_fold_tables(out_dir: Path, folds: list[int]) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    metrics, summaries, units = [], [], None
    for f in folds:
        ev_dir = out_dir / f"fold{f}" / f"eval-{SCORED}"
        missing = [n for n in EVAL_OUTPUTS if not (ev_dir / n).is_file()]
        if missing:
            raise fail(ev_dir, f"lacks {', '.join(missing)} of a finished fold", f"pass --force --only {f}")
        metrics.append(pd.read_csv(ev_dir / "metrics.csv", dtype={"case_id": str}).assign(fold=f))
        summaries.append(pd.read_csv(ev_dir / "summary.csv").assign(fold=f))
        units = units or json.loads((ev_dir / "eval.json").read_text(encoding="utf-8"))
    first = lambda df: df[["fold", *[c for c in df.columns if c != "fold"]]]
    return first(pd.concat(metrics, ignore_index=True)), first(pd.concat(summaries, ignore_index=True)), units


def pool(fold_summaries: pd.DataFrame, metrics: pd.DataFrame, units: dict) -> pd.DataFrame:
    """Per class and metric: the mean of the fold means with their SD, min and max over folds, and the
    statistics of all held-out cases pooled (``case_*``, as ``medseg evaluate`` computes them)."""
    from medseg.evaluation.tables import summarise

    per_case = summarise(metrics.drop(columns="fold"), units).set_index(["class", "metric"])
    rows = []
    for (cls, metric), g in fold_summaries.groupby(["class", "metric"], sort=False):
        means = g["mean"].to_numpy(dtype=float)
        means = means[np.isfinite(means)]
        case = per_case.loc[(cls, metric)]
        rows.append(
            {
                "class": cls,
                "metric": metric,
                "unit": case["unit"],
                "folds": int(means.size),
                "mean": float(means.mean()) if means.size else np.nan,
                "std": float(means.std(ddof=1)) if means.size > 1 else np.nan,
                "min": float(means.min()) if means.size else np.nan,
                "max": float(means.max()) if means.size else np.nan,
                **{f"case_{k}": case[k] for k in ("n", "mean", "std", "median", "ci95_low", "ci95_high")},
            }
        )
    return pd.DataFrame(rows)


def _pooled_headline(done: list[dict]) -> dict:
    mean = lambda k: None if any(r[k] is None for r in done) else float(np.mean([r[k] for r in done]))
    spread = lambda k: float(np.std([r[k] for r in done], ddof=1)) if len(done) > 1 else None
    return {
        "dice": mean("dice"),
        "dice_std_over_folds": spread("dice"),
        "jaccard": mean("jaccard"),
        "dice_best_pt": mean("dice_best_pt"),
        "jaccard_best_pt": mean("jaccard_best_pt"),
        "train_minutes_per_fold": mean("train_minutes"),
        **_pooled_instances(done),
    }


def _pooled_instances(done: list[dict]) -> dict:
    """An instance task's object scores over the folds: per-image means weighted by each fold's images, and the
    folds' mean COCO AP (each fold's detections are ranked by its own model)."""
    if not done or not all("instances" in r for r in done):
        return {}
    runs = [r["instances"] for r in done if r["instances"].get("cases")]
    if not runs:
        return {}
    n = np.array([r["cases"] for r in runs], dtype=float)

    def weighted(k: str) -> float:  # a fold whose images have no objects on either side has NaN means
        v = np.array([r[k] for r in runs], dtype=float)
        ok = np.isfinite(v)
        return float(np.sum(n[ok] * v[ok]) / n[ok].sum()) if ok.any() else float("nan")

    return {
        "instances": {
            "cases": int(n.sum()),
            **{k: round(weighted(k), 4) for k in ("dsb_mean", "pq_mean", "count_error_mean", "count_error_abs_mean")},
            **{f"{k}_fold_mean": round(float(np.nanmean([r[k] for r in runs])), 4) for k in ("ap", "ap50", "ap75")},
        }
    }


def _write_json(path: Path, info: dict) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(info, indent=1, default=str)), suffix=".json")


def write_pooled(out_dir: Path, info: dict) -> CVResult:
    """Rewrite folds.csv, summary.csv, metrics.csv and cv.json from the finished folds recorded in ``info``."""
    done = sorted(int(f) for f in info["folds"])
    metrics, fold_summaries, units = _read_fold_tables(out_dir, done)
    summary = pool(fold_summaries, metrics, units)
    k = info["setup"]["folds"]
    records = [info["folds"][str(f)] for f in done]
    info["pooled"] = {"folds_done": done, "complete": len(done) == k, **_pooled_headline(records)}
    info["scored_checkpoint"] = f"{SCORED}.pt"
    info["medseg_version"] = __version__
    info["updated"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_csv(out_dir / "metrics.csv", metrics)
    write_csv(out_dir / "folds.csv", fold_summaries)
    write_csv(out_dir / "summary.csv", summary)
    _write_json(out_dir / "cv.json", info)  # last: cv.json names only folds whose tables are written
    return CVResult(out_dir, info, fold_summaries, summary, metrics)


# ----------------------------------------------------------------------------
# the command
# ----------------------------------------------------------------------------


def _check_folds(folds: int, only) -> list[int]:
    if folds < 2:
        raise MedsegError(f"--folds {folds}: cross-validation needs at least 2 folds; fix: e.g. --folds 5")
    wanted = list(range(folds)) if not only else sorted(set(only))
    outside = [f for f in wanted if not 0 <= f < folds]
    if outside:
        raise MedsegError(f"--only {outside[0]} is not a fold of {folds} (0..{folds - 1}); fix: --only 0..{folds - 1}")
    return wanted


def cross_validate(
    config: str,
    data_dir: str | Path,
    out: str | Path,
    folds: int = 5,
    only: list[int] | None = None,
    overrides: list[str] | None = None,
    device: str = "auto",
    tta: bool | None = None,
    score_best: bool = False,
    force: bool = False,
    progress: bool = True,
    figures=None,
    init: str | Path | None = None,
) -> CVResult:
    """Train and score the folds of ``config`` (all of them, or ``only`` these) into ``out``; see the module text.

    A rerun into the same ``out`` with the same setup keeps the finished folds and trains the others, so
    ``only`` runs a cross-validation in parts; ``force`` trains the asked-for folds again. ``tta`` None: the
    config's own ``infer.tta``. ``figures`` draws each fold evaluation's overlays and plots, as for
    :func:`medseg.evaluation.evaluate.evaluate_model` (None: metrics only). ``init``: every fold starts from this
    medseg checkpoint (``medseg train --init``)."""
    wanted = _check_folds(folds, only)
    overrides = list(overrides or [])
    out_dir, data_dir = Path(out), Path(data_dir)
    cfgs = {f: fold_config(config, folds, f, overrides) for f in wanted}
    setup = _setup(config, folds, data_dir, overrides, tta, cfgs[wanted[0]])
    if init:  # another starting model makes another experiment (older cv.json files have no such key)
        setup["init"] = str(Path(init).resolve())
    info = read_cv(out_dir)
    if info is not None:
        _check_same_setup(out_dir, info, setup)
    else:
        _refuse_foreign_files(out_dir)
        info = {"setup": setup, "folds": {}}
    todo = _folds_to_run(out_dir, wanted, info["folds"], force)
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(todo):
        _log.info(f"fold {f} of {folds} ({i + 1} of {len(todo)} to run): training into {out_dir / f'fold{f}'}")
        fold_dir = out_dir / f"fold{f}"
        rec = _run_fold(cfgs[f], data_dir, fold_dir, device, tta, score_best, force, progress, figures, init)
        info["folds"][str(f)] = rec
        write_pooled(out_dir, info)
        unit = "patients" if rec["per_volume"] else "cases"
        _log.info(
            f"fold {f}: Dice {rec['dice']:.4f}, Jaccard {rec['jaccard']:.4f} ({rec['class']}, {rec['n_val']} held-out "
            f"{unit}, {SCORED}.pt, original resolution); trained in {rec['train_minutes']:.1f} min"
        )
    if not info["folds"]:
        raise MedsegError("no fold was run; fix: check --only")
    res = write_pooled(out_dir, info)
    _log_pooled(res)
    return res


def _log_pooled(res: CVResult) -> None:
    p = res.info["pooled"]
    k = res.info["setup"]["folds"]
    spread = f" ± {p['dice_std_over_folds']:.4f} (SD over folds)" if p["dice_std_over_folds"] is not None else ""
    part = "" if p["complete"] else f" (folds {' '.join(map(str, p['folds_done']))} of {k} so far)"
    _log.info(
        f"{k}-fold cross-validation{part}: mean Dice {p['dice']:.4f}{spread}, Jaccard {p['jaccard']:.4f}; "
        f"summary: {res.out_dir / 'summary.csv'}, per case: {res.out_dir / 'metrics.csv'}"
    )
    if "instances" in p:
        o = p["instances"]
        _log.info(
            f"objects over {o['cases']} held-out images: DSB 2018 score {o['dsb_mean']:.4f}, PQ {o['pq_mean']:.4f}, "
            f"AP50 {o['ap50_fold_mean']:.4f} and AP@[.50:.95] {o['ap_fold_mean']:.4f} (means of the folds)"
        )
