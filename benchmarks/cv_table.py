"""Print a Markdown table of a cross-validation run's per-fold results (the cv.json that ``medseg cv``, ph2_cv.py and
lgg_cv.py write).

python benchmarks/cv_table.py runs/cv-ph2/cv.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _num(value, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)  # best.pt is not scored with --skip-best-pt


def table(path: str) -> str:
    res = json.loads(Path(path).read_text())
    res = res.get("folds", res)  # a cv.json from before the pooled summary held the folds at its top level
    folds = sorted(res, key=int)
    rows = [
        "| fold | Dice (last.pt) | Jaccard (last.pt) | Dice (best.pt, picked on this fold) | training (min) |",
        "|---|---|---|---|---|",
    ]
    for f in folds:
        r = res[f]
        rows.append(
            f"| {f} | {r['dice']:.4f} | {r['jaccard']:.4f} | {_num(r.get('dice_best_pt'), '.4f')} | "
            f"{r['train_minutes']:.1f} |"
        )

    def mean(k):
        vals = [res[f].get(k) for f in folds]
        return None if None in vals else sum(vals) / len(vals)

    rows.append(
        f"| **mean** | **{mean('dice'):.4f}** | **{mean('jaccard'):.4f}** | {_num(mean('dice_best_pt'), '.4f')} | "
        f"{mean('train_minutes'):.1f} |"
    )
    return "\n".join(rows)


if __name__ == "__main__":
    print(table(sys.argv[1]))
