"""How an instance model's probabilities become objects: the foreground threshold, the seed threshold and the
smallest object kept, swept on each cross-validation fold's held-out images.

    python benchmarks/nuclei_postprocess.py --data-dir ../shared/data/nuclei --cv runs/nuclei-instances

Each fold's ``last.pt`` predicts its held-out images once (as ``medseg evaluate`` does: the checkpoint's own
preprocessing and test-time flips); every setting of the grid then turns the same probabilities into instance
maps, scored by the DSB 2018 score and COCO AP50 over the images. One JSON line per setting, best DSB score last.
A setting picked here is tuned on these folds: confirm it on folds it was not picked on.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import numpy as np
from _common import line

THRESHOLDS = (0.4, 0.5, 0.6)
SEEDS = (0.5, 0.6, 0.7, 0.8)
MIN_PIXELS = (0, 10, 25)


def held_out_probabilities(cv_dir: Path, data_dir: str, folds: list[int] | None):
    """``[(instance map, probabilities)]`` of every held-out image of the folds run (or of ``folds``)."""
    import torch

    from medseg.data import load_samples
    from medseg.data.nuclei import instance_map
    from medseg.inference.cases import Case
    from medseg.inference.checkpoints import load_models
    from medseg.inference.predictor import Predictor

    info = json.loads((cv_dir / "cv.json").read_text())
    samples = {s["case_id"]: s for s in load_samples("nuclei", data_dir).samples}
    out = []
    for fold in sorted(int(f) for f in info["folds"]):
        if folds is not None and fold not in folds:
            continue
        dev = torch.device("cpu")
        predictor = Predictor(load_models([str(cv_dir / f"fold{fold}" / "last.pt")], dev), dev)
        for cid in info["folds"][str(fold)]["held_out"]:
            s = samples[cid]
            probs = predictor.predict(Case(cid, [s["image"]], cid)).probs
            out.append((instance_map(s), probs.astype(np.float16)))
    return out


def score(cases, threshold: float, seed: float, min_pixels: int) -> dict:
    from medseg.evaluation.instance_cohort import InstanceCohort
    from medseg.objects import drop_small_objects, instances_from_probabilities, object_scores

    cohort = InstanceCohort("nucleus")
    for k, (truth, probs) in enumerate(cases):
        p = probs.astype(np.float32)
        pred = drop_small_objects(instances_from_probabilities(p, threshold, seed_threshold=seed), min_pixels)
        cohort.add(str(k), truth, pred, object_scores(pred, p))
    s = cohort.summary()
    return {k: s[k] for k in ("dsb_mean", "ap50", "ap", "pq_mean", "count_error_mean")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--cv", required=True, help="the medseg cv folder of an instance task")
    ap.add_argument("--folds", type=int, nargs="*", help="only these folds")
    ap.add_argument("--thresholds", type=float, nargs="+", default=list(THRESHOLDS))
    ap.add_argument("--seeds", type=float, nargs="+", default=list(SEEDS))
    ap.add_argument("--min-pixels", type=int, nargs="+", default=list(MIN_PIXELS))
    a = ap.parse_args(argv)
    cmd = "python benchmarks/nuclei_postprocess.py " + " ".join(sys.argv[1:] if argv is None else argv)
    cases = held_out_probabilities(Path(a.cv), a.data_dir, a.folds)
    results = []
    for t, seed, px in itertools.product(a.thresholds, a.seeds, a.min_pixels):
        if seed < t:
            continue  # a seed below the foreground threshold is the foreground itself
        results.append(((t, seed, px), score(cases, t, seed, px)))
    for (t, seed, px), r in sorted(results, key=lambda x: x[1]["dsb_mean"]):
        line(
            f"nuclei held-out DSB 2018 score, threshold {t}, seed {seed}, min {px} px",
            r["dsb_mean"],
            "",
            command=cmd,
            images=len(cases),
            **{k: round(float(v), 4) for k, v in r.items()},
        )


if __name__ == "__main__":
    main()
