"""PH2 from boxes: what a model trained on bounding boxes of the lesions scores against the true lesion masks.

    python benchmarks/ph2_boxes.py --data-dir ../shared/data/ph2 --fold 0                       # filled boxes
    python benchmarks/ph2_boxes.py --data-dir ../shared/data/ph2 --fold 0 --shapes box ellipse  # both shapes

Each lesion mask's bounding box is written to ``OUT/ph2_boxes.csv`` (``image,x1,y1,x2,y2``). configs/ph2.yaml is
then trained on fold ``--fold`` of ``--folds`` (the split ``medseg cv ph2`` and benchmarks/ph2_cv.py use) with
``data.options.boxes=OUT/ph2_boxes.csv`` and ``data.options.box_shape=SHAPE``, so every training and validation
label is the box mask, and the fold's held-out predictions are scored against the TRUE masks (the plain config's
labels, ``OUT/SHAPE/fold<k>/eval-true/``). Beside it: the Dice of the box masks themselves against the true masks on
the same held-out images (an upper bound on what the box labels say), and the trained model's Dice against the boxes
(``eval-last/``, what ``medseg cv`` would report). The mask-trained figure for the same fold is
``python benchmarks/ph2_cv.py --only K``. One JSON line per shape; all of it in ``OUT/ph2_boxes.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from _common import line


def mask_box(label: str) -> list[int] | None:
    """``[x1, y1, x2, y2]`` of a mask's foreground (``x2``, ``y2`` one past the last pixel); None when empty."""
    from medseg.data.transforms import binarise_mask_2d
    from medseg.io import read_image_2d

    fg = binarise_mask_2d(read_image_2d(label, kind="mask")) > 0
    if not fg.any():
        return None
    rows, cols = np.flatnonzero(fg.any(axis=1)), np.flatnonzero(fg.any(axis=0))
    return [int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1]


def write_box_csv(samples: list[dict], data_dir: Path, path: Path) -> int:
    """One row per lesion mask's bounding box, the image named by its path in the data directory."""
    rows = ["image,x1,y1,x2,y2"]
    for s in samples:
        box = mask_box(s["label"])
        if box is not None:
            rows.append(",".join([Path(s["image"]).relative_to(data_dir).as_posix(), *map(str, box)]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(rows) + "\n")
    return len(rows) - 1


def overlap(pairs: list[tuple[str, str]]) -> dict[str, float]:
    """Mean Dice and Jaccard of ``(mask, truth)`` file pairs, per image, as medseg evaluate scores them."""
    from medseg.evaluation.masks import read_label_map
    from medseg.evaluation.metrics import overlap_metrics

    scores = [overlap_metrics(read_label_map(Path(a), 2)[0] > 0, read_label_map(Path(b), 2)[0] > 0) for a, b in pairs]
    return {k: float(np.mean([s[k] for s in scores])) for k in ("dice", "jaccard")}


def held_out(samples: list[dict], cfg) -> list[dict]:
    """The fold's validation cases, drawn as ``medseg train`` draws them."""
    from medseg.data.base import recipe_or_default
    from medseg.data.splits import make_split, select

    return select(samples, make_split(samples, cfg.data.split, recipe_or_default(cfg.data.recipe))["val"])


def score_against_truth(fold_dir: Path, truth: dict[str, str], labels: list[str]) -> dict[str, float]:
    """The fold's held-out predictions (``eval-last/predictions``) scored against the true masks by
    ``medseg evaluate``'s folder mode, into ``eval-true/``."""
    from medseg.evaluation.evaluate import evaluate_folders

    gt_dir = fold_dir / "true-masks"
    gt_dir.mkdir(exist_ok=True)
    cases = json.loads((fold_dir / "eval-last" / "eval.json").read_text())["cases"]
    for case in cases:
        link = gt_dir / f"{case}{Path(truth[case]).suffix}"
        link.unlink(missing_ok=True)
        link.symlink_to(Path(truth[case]).resolve())
    ev = evaluate_folders(
        fold_dir / "eval-last" / "predictions", gt_dir, fold_dir / "eval-true", labels, force=True, progress=False
    )
    s = ev.summary[ev.summary["class"] == labels[1]].set_index("metric")["mean"]
    return {"dice": float(s["dice"]), "jaccard": float(s["jaccard"]), "n": len(cases)}


def run_shape(a, shape: str, box_csv: Path, truth_val: list[dict], plain_cfg) -> dict:
    """Box-vs-truth on the held-out images, then one fold trained on the boxes and scored against the truth."""
    from medseg.data import load_samples
    from medseg.evaluation.cv import cross_validate, fold_config

    box_options = [f"data.options.boxes={box_csv.resolve()}", f"data.options.box_shape={shape}"]
    cfg = fold_config("ph2", a.folds, a.fold, [*a.overrides, *box_options])
    boxed = load_samples("ph2", a.data_dir, {**cfg.data.options, "channels": cfg.data.channels}).samples
    boxed_val = held_out(boxed, cfg)
    if [s["case_id"] for s in boxed_val] != [s["case_id"] for s in truth_val]:
        raise SystemExit("the box labels changed the fold's held-out cases: the comparison would not be fair")
    boxes_vs_truth = overlap([(b["label"], t["label"]) for b, t in zip(boxed_val, truth_val)])
    out = Path(a.out) / shape
    cv = cross_validate(
        "ph2",
        a.data_dir,
        out,
        folds=a.folds,
        only=[a.fold],
        overrides=[*a.overrides, *box_options],
        device=a.device,
        score_best=False,
        force=True,
        progress=False,
    ).info["folds"][str(a.fold)]
    truth = {s["case_id"]: s["label"] for s in truth_val}
    trained = score_against_truth(out / f"fold{a.fold}", truth, list(plain_cfg.data.labels))
    return {
        "shape": shape,
        "fold": a.fold,
        "folds": a.folds,
        "n_val": trained["n"],
        "box_trained_vs_true": {"dice": trained["dice"], "jaccard": trained["jaccard"]},
        "boxes_vs_true": boxes_vs_truth,
        "box_trained_vs_boxes": {"dice": cv["dice"], "jaccard": cv["jaccard"]},
        "train_minutes": cv["train_minutes"],
        "out": str(out),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/ph2")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--shapes", nargs="+", choices=["box", "ellipse"], default=["box"])
    ap.add_argument("--out", default="runs/ph2-boxes")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)

    from medseg.data import load_samples
    from medseg.evaluation.cv import fold_config

    cmd = "python benchmarks/ph2_boxes.py " + " ".join(sys.argv[1:] if argv is None else argv)
    data_dir = Path(a.data_dir)
    plain_cfg = fold_config("ph2", a.folds, a.fold, a.overrides)
    plain = load_samples("ph2", data_dir, {**plain_cfg.data.options, "channels": plain_cfg.data.channels}).samples
    box_csv = Path(a.out) / "ph2_boxes.csv"
    n_boxes = write_box_csv(plain, data_dir, box_csv)
    truth_val = held_out(plain, plain_cfg)
    results = []
    for shape in a.shapes:
        r = run_shape(a, shape, box_csv, truth_val, plain_cfg)
        results.append(r)
        line(
            f"ph2 fold {a.fold}/{a.folds} mean Dice vs true masks, trained on {shape} labels "
            f"({r['n_val']} val images, original resolution)",
            round(r["box_trained_vs_true"]["dice"], 4),
            "",
            None,
            command=cmd,
            jaccard=round(r["box_trained_vs_true"]["jaccard"], 4),
            boxes_vs_true_dice=round(r["boxes_vs_true"]["dice"], 4),
            boxes_vs_true_jaccard=round(r["boxes_vs_true"]["jaccard"], 4),
            trained_vs_boxes_dice=round(r["box_trained_vs_boxes"]["dice"], 4),
            train_minutes=round(r["train_minutes"], 1),
        )
    record = {"command": cmd, "box_csv": str(box_csv), "n_boxes": n_boxes, "overrides": a.overrides, "runs": results}
    (Path(a.out) / "ph2_boxes.json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
