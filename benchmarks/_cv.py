"""k-fold cross-validation for ph2_cv.py and lgg_cv.py: ``medseg cv`` with the benchmarks' flags and JSON lines.

Each fold is trained and scored by :func:`medseg.evaluation.cv.cross_validate` (the folds ``medseg cv`` makes, its
output folder layout, cv.json and the pooled summary.csv); this script prints one JSON line per fold and one for the
mean over the folds recorded so far, as every benchmark script does.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from _common import line


def _round(value, digits: int = 4):
    return None if value is None else round(value, digits)


def run_cv(recipe: str, default_data: str, argv=None) -> None:
    ap = argparse.ArgumentParser(description=f"{recipe} k-fold cross-validation with the default config")
    ap.add_argument("--data-dir", default=default_data)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*", help="run only these folds")
    ap.add_argument("--out", default=f"runs/cv-{recipe}")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--tta", action="store_true", help="flip TTA even when the config turns it off")
    ap.add_argument("--skip-best-pt", action="store_true", help="score last.pt only (saves one evaluation per fold)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)

    from medseg.evaluation.cv import cross_validate, read_cv

    cmd = f"python benchmarks/{recipe}_cv.py " + " ".join(sys.argv[1:] if argv is None else argv)
    info = None
    for fold in a.only if a.only is not None else range(a.folds):
        # force: a benchmark run retrains the folds it names; the folds it does not name are kept in cv.json
        info = cross_validate(
            recipe,
            a.data_dir,
            a.out,
            folds=a.folds,
            only=[fold],
            overrides=a.overrides,
            device=a.device,
            tta=True if a.tta else None,  # None: the config's own infer.tta
            score_best=not a.skip_best_pt,
            force=True,
            progress=False,
        ).info
        r = info["folds"][str(fold)]
        unit = "patients" if r["per_volume"] else "images"
        line(
            f"{recipe} fold {fold}/{a.folds} mean Dice ({r['n_val']} val {unit}, original resolution)",
            round(r["dice"], 4),
            "",
            None,
            command=cmd,
            jaccard=round(r["jaccard"], 4),
            dice_best_pt=_round(r["dice_best_pt"]),
            train_minutes=round(r["train_minutes"], 1),
        )
    info = info or read_cv(Path(a.out))
    if info and info["folds"]:
        p = info["pooled"]
        line(
            f"{recipe} {len(p['folds_done'])}-fold CV mean Dice",
            round(p["dice"], 4),
            "",
            None,
            command=cmd,
            jaccard=round(p["jaccard"], 4),
            dice_best_pt=_round(p["dice_best_pt"]),
            train_minutes_per_fold=round(p["train_minutes_per_fold"], 1),
        )
