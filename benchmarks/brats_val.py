"""BraTS (3D, multi-class): train configs/brats.yaml on the recipe's own training folder, score its validation folder.

    python benchmarks/brats_val.py --data-dir ../shared/data/brats
    python benchmarks/brats_val.py --data-dir ../shared/data/brats --set train.epochs=80

Prints one line per class (mean Dice over the validation cases, at each case's original grid), one for the whole
tumour (every tumour label merged: ``all_foreground``), the training wall time and the peak host memory of the
process, which must stay well inside the 24 GB of the CPU machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import line, peak_rss_mb


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/brats")
    ap.add_argument("--out", default="runs/bench-brats")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)

    from medseg.config import load_config
    from medseg.engine.train import train
    from medseg.evaluation.evaluate import evaluate_model

    cmd = "python benchmarks/brats_val.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cfg = load_config("brats", a.overrides)
    t0 = time.time()
    tr = train(cfg, a.data_dir, Path(a.out), force=True, progress=False)
    minutes = (time.time() - t0) / 60
    for ck in ("last", "best"):
        ev = evaluate_model(
            Path(a.out) / f"{ck}.pt",
            "brats",
            a.data_dir,
            Path(a.out) / f"eval-{ck}",
            split="val",
            force=True,
            progress=False,
        )
        s = ev.summary
        dice = s[s["metric"] == "dice"]
        for _, r in dice.iterrows():
            name = "whole tumour (all labels > 0)" if r["class"] == "all_foreground" else r["class"]
            line(
                f"brats {ck}.pt validation Dice, {name}",
                round(float(r["mean"]), 4),
                "",
                None,
                command=cmd,
                n_cases=int(r["n"]),
                n_undefined=int(r["n_undefined"]),
                per_case=[round(float(v), 4) for v in ev.metrics[ev.metrics["class"] == r["class"]]["dice"]],
            )
    line(
        "brats training wall time",
        round(minutes, 1),
        "min",
        None,
        command=cmd,
        epochs=tr.epochs_run,
        best_epoch=tr.best_epoch,
    )
    line("brats peak host memory (train + evaluate)", round(peak_rss_mb()), "MB", None, command=cmd)


if __name__ == "__main__":
    main()
