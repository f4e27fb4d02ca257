"""k-fold cross-validation driver shared by ph2_cv.py and lgg_cv.py."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import line


def run_cv(recipe: str, default_data: str, argv=None) -> None:
    ap = argparse.ArgumentParser(description=f"{recipe} k-fold cross-validation with the default config")
    ap.add_argument("--data-dir", default=default_data)
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*", help="run only these folds")
    ap.add_argument("--out", default=f"runs/cv-{recipe}")
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--skip-best-pt", action="store_true", help="score last.pt only (saves one evaluation per fold)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)

    from medseg.config import load_config
    from medseg.engine.train import train
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.inference.options import InferenceOptions

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "cv.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    cmd = f"python benchmarks/{recipe}_cv.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for fold in a.only if a.only is not None else range(a.folds):
        cfg = load_config(recipe, a.overrides + [f"data.split.folds={a.folds}", f"data.split.fold={fold}"])
        t0 = time.time()
        tr = train(cfg, a.data_dir, out / f"fold{fold}", force=True, progress=False, log=lambda *_: None)
        train_min = (time.time() - t0) / 60
        # Headline: the final weights (last.pt). best.pt was picked by Dice on this very fold, so scoring it here
        # would leak the held-out cases into model selection; it is reported beside, for reference.
        scores, t0 = {}, time.time()
        for ck in ("last",) if a.skip_best_pt else ("last", "best"):
            ev = evaluate_model(
                out / f"fold{fold}" / f"{ck}.pt",
                recipe,
                a.data_dir,
                out / f"fold{fold}" / f"eval-{ck}",
                split="val",
                options=InferenceOptions(tta=a.tta),
                force=True,
                progress=False,
                log=lambda *_: None,
            )
            s = ev.summary
            scores[ck] = {
                m: float(s[(s["class"] == cfg.data.labels[1]) & (s["metric"] == m)]["mean"].iloc[0])
                for m in ("dice", "jaccard")
            }
        eval_min = (time.time() - t0) / 60
        scores.setdefault("best", {"dice": None, "jaccard": None})
        results[str(fold)] = {
            "dice": scores["last"]["dice"],
            "jaccard": scores["last"]["jaccard"],
            "dice_best_pt": scores["best"]["dice"],
            "jaccard_best_pt": scores["best"]["jaccard"],
            "train_minutes": round(train_min, 2),
            "eval_minutes": round(eval_min, 2),
            "best_val_dice_training_grid": tr.best_metric,
            "best_epoch": tr.best_epoch,
            "n_val": ev.info["n_cases"],
            "per_volume": ev.info.get("per_volume", False),
            "overrides": a.overrides,
            "tta": bool(a.tta or cfg.infer.tta),
        }
        results_path.write_text(json.dumps(results, indent=1))
        unit = "patients" if ev.info.get("per_volume") else "images"
        line(
            f"{recipe} fold {fold}/{a.folds} mean Dice ({ev.info['n_cases']} val {unit}, original resolution)",
            round(scores["last"]["dice"], 4),
            "",
            None,
            command=cmd,
            jaccard=round(scores["last"]["jaccard"], 4),
            dice_best_pt=scores["best"]["dice"] and round(scores["best"]["dice"], 4),
            train_minutes=round(train_min, 1),
        )
    done = [results[k] for k in sorted(results, key=int)]
    if done:
        mean = lambda k: sum(r[k] for r in done) / len(done)
        line(
            f"{recipe} {len(done)}-fold CV mean Dice",
            round(mean("dice"), 4),
            "",
            None,
            command=cmd,
            jaccard=round(mean("jaccard"), 4),
            dice_best_pt=None if any(r["dice_best_pt"] is None for r in done) else round(mean("dice_best_pt"), 4),
            train_minutes_per_fold=round(mean("train_minutes"), 1),
        )
