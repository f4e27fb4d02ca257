"""Print a Markdown table of a cross-validation run's per-fold results (the cv.json that ph2_cv.py/lgg_cv.py write).

    python benchmarks/cv_table.py runs/cv-ph2/cv.json
"""

from __future__ import annotations

import json
import sys


def table(path: str) -> str:
    res = json.loads(open(path).read())
    folds = sorted(res, key=int)
    rows = ["| fold | Dice (last.pt) | Jaccard (last.pt) | Dice (best.pt, picked on this fold) | training (min) |",
            "|---|---|---|---|---|"]
    for f in folds:
        r = res[f]
        rows.append(f"| {f} | {r['dice']:.4f} | {r['jaccard']:.4f} | {r['dice_best_pt']:.4f} | {r['train_minutes']:.1f} |")
    mean = lambda k: sum(res[f][k] for f in folds) / len(folds)  # noqa: E731
    rows.append(f"| **mean** | **{mean('dice'):.4f}** | **{mean('jaccard'):.4f}** | {mean('dice_best_pt'):.4f} | "
                f"{mean('train_minutes'):.1f} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(sys.argv[1]))
