"""Compare a lever with the default case by case, over the same cross-validation folds (the run folders that
ph2_cv.py / lgg_cv.py write, each with fold*/eval-last/metrics.csv).

    python benchmarks/cv_compare.py --base runs/lgg-s0 runs/lgg-s1 --lever runs/ds2-s0 runs/ds2-s1

Runs are paired in the order given (seed for seed: the first base with the first lever, ...). For every held-out case
(patient for LGG, image for PH2) the lever's score minus the default's is averaged over the pairs; the script prints
the mean of those differences with a 95% bootstrap interval over cases (cases resampled with replacement), how many
cases gain or lose more than ``--margin``, and the cases that moved most. With two or more base runs it also prints
the same statistics for the default against itself on another seed (second base run minus the first): that is what
a lever that does nothing looks like, the noise floor a lever has to clear.

One JSON line per figure, as the other benchmark scripts print, then a readable summary on stderr.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np


def case_scores(
    run: str | Path, metric: str = "dice", eval_dir: str = "eval-last", label: str | None = None
) -> dict[str, float]:
    """``{case_id: score}`` over every fold of one cross-validation run (one class: the first, or ``label``)."""
    run = Path(run)
    files = sorted(run.glob(f"fold*/{eval_dir}/metrics.csv"))
    if not files:
        raise SystemExit(
            f"error: {run}: no fold*/{eval_dir}/metrics.csv; fix: point at a folder that ph2_cv.py or "
            f"lgg_cv.py wrote (with --out), after its folds were evaluated"
        )
    scores: dict[str, float] = {}
    for f in files:
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        cls = label or (rows[0]["class"] if rows else None)
        for r in rows:
            if r["class"] != cls or r.get(metric, "") in ("", "nan"):
                continue
            if r["case_id"] in scores:
                raise SystemExit(
                    f"error: {f}: case {r['case_id']} is held out by two folds; fix: compare runs of one k-fold split"
                )
            scores[r["case_id"]] = float(r[metric])
    return scores


def paired(base: list[dict[str, float]], lever: list[dict[str, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Cases scored in every run, with each case's default score and its lever-minus-default difference, both averaged
    over the run pairs."""
    if len(base) != len(lever):
        raise SystemExit(
            f"error: {len(base)} base runs but {len(lever)} lever runs; fix: give one lever run per base "
            "run, in the same seed order"
        )
    cases = sorted(set.intersection(*(set(s) for s in base + lever)))
    if not cases:
        raise SystemExit("error: the runs share no held-out case; fix: compare runs of the same folds")
    b = np.array([[s[c] for c in cases] for s in base])
    d = np.array([[sl[c] - sb[c] for c in cases] for sb, sl in zip(base, lever)])
    return cases, b.mean(0), d.mean(0)


def bootstrap_ci(diff: np.ndarray, n: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile interval of the mean of ``diff`` over resampled cases, and the share of resamples above 0."""
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(n, len(diff)))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(lo), float(hi), float((means > 0).mean())


def summary(name: str, cases: list[str], base: np.ndarray, diff: np.ndarray, margin: float, n_boot: int) -> dict:
    lo, hi, p_up = bootstrap_ci(diff, n_boot)
    order = np.argsort(diff)
    return {
        "comparison": name,
        "cases": len(cases),
        "base_mean": round(float(base.mean()), 4),
        "lever_mean": round(float((base + diff).mean()), 4),
        "mean_diff": round(float(diff.mean()), 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "share_of_resamples_above_0": round(p_up, 3),
        "cases_up": int((diff > margin).sum()),
        "cases_down": int((diff < -margin).sum()),
        "margin": margin,
        "most_down": [[cases[i], round(float(diff[i]), 3)] for i in order[:3]],
        "most_up": [[cases[i], round(float(diff[i]), 3)] for i in order[::-1][:3]],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--base", nargs="+", required=True, help="cross-validation run folders of the default, one per seed"
    )
    ap.add_argument("--lever", nargs="+", required=True, help="run folders of the lever, in the same seed order")
    ap.add_argument("--metric", default="dice", help="a column of metrics.csv (default dice)")
    ap.add_argument("--label", default=None, help="the class to compare (default: the first in metrics.csv)")
    ap.add_argument("--eval-dir", default="eval-last", help="evaluation folder inside each fold (default eval-last)")
    ap.add_argument("--margin", type=float, default=0.05, help="a case counts as up or down beyond this (default 0.05)")
    ap.add_argument("--boot", type=int, default=10000, help="bootstrap resamples (default 10000)")
    args = ap.parse_args(argv)

    load = lambda runs: [case_scores(r, args.metric, args.eval_dir, args.label) for r in runs]
    base, lever = load(args.base), load(args.lever)
    out = [summary("lever - default", *paired(base, lever), args.margin, args.boot)]
    if len(base) >= 2:  # the default against itself on another seed: the noise floor
        out.append(summary("default, second seed - first seed", *paired(base[:1], base[1:2]), args.margin, args.boot))
    for rec in out:
        print(json.dumps({"metric": f"{args.metric}: {rec['comparison']}", **rec}))
        print(
            f"{rec['comparison']}: {rec['cases']} cases, {rec['base_mean']:.4f} -> {rec['lever_mean']:.4f} "
            f"({rec['mean_diff']:+.4f}, 95% CI {rec['ci95'][0]:+.4f} to {rec['ci95'][1]:+.4f}); "
            f"{rec['cases_up']} up and {rec['cases_down']} down by more than {rec['margin']}",
            file=sys.stderr,
        )
    return out


if __name__ == "__main__":
    main()
