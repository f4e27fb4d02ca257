"""Compare a lever with the default case by case, over the same cross-validation folds (the run folders that
``medseg cv``, ph2_cv.py or lgg_cv.py write, each with fold*/eval-last/metrics.csv).

    python benchmarks/cv_compare.py --base runs/lgg-s0 runs/lgg-s1 --lever runs/ds2-s0 runs/ds2-s1

Runs are paired in the order given (seed for seed: the first base with the first lever, ...). For every held-out case
(patient for LGG, image for PH2) the lever's score minus the default's is averaged over the pairs; the script prints
the mean of those differences with a 95% bootstrap interval over cases (cases resampled with replacement), how many
cases gain or lose more than ``--margin``, and the cases that moved most. With two or more base runs it also prints
the same statistics for the default against itself on another seed (second base run minus the first): that is what
a lever that does nothing looks like, the noise floor a lever has to clear. One pair of runs is ``medseg compare``.

One JSON line per figure, as the other benchmark scripts print, then a readable summary on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys


def main(argv: list[str] | None = None) -> list[dict]:
    from medseg.errors import MedsegError
    from medseg.evaluation.compare import compare_runs, describe

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

    try:
        out = compare_runs(
            args.base, args.lever, args.metric, args.label, args.eval_dir, margin=args.margin, n_boot=args.boot
        )
    except MedsegError as exc:
        raise SystemExit(f"error: {exc}") from None
    for rec in out:
        print(json.dumps({"metric": f"{args.metric}: {rec['comparison']}", **rec}))
        print(describe(rec), file=sys.stderr)
    return out


if __name__ == "__main__":
    main()
