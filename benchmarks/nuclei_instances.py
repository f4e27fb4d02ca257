"""Nuclei as objects: the classical floor (Otsu's threshold and a distance-transform watershed, no training) and
the learned routes, scored object by object: the U-Net (background / interior / boundary, then a seeded watershed)
and Mask R-CNN (``--route maskrcnn`` from scratch on a ResNet-18, ``--route maskrcnn-lite0`` on the ImageNet
EfficientNet-Lite0).

    python benchmarks/nuclei_instances.py --data-dir ../shared/data/nuclei                       # the floor
    python benchmarks/nuclei_instances.py --data-dir ../shared/data/nuclei --route unet --only 0   # fold 0

Prints one JSON line per score: the Data Science Bowl 2018 score, COCO AP50 and AP@[.50:.95], AR@100 (the floor),
panoptic quality and the mean count error. The floor learns nothing, so every image is unseen and all are scored
(``--every K`` scores every K-th, for a quick look). A learned route is ``medseg cv`` of the nuclei config with
``data.task=instances`` and the route's settings (plus ``--set`` overrides) into ``OUT/``: each fold's held-out
images are scored by its model, per-image means are pooled over the folds run and AP is the folds' mean.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _common import line


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--every", type=int, default=1, help="score every K-th image only")
    ap.add_argument("--route", choices=["otsu", *ROUTES], default="otsu")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*", help="a learned route: run only these folds")
    ap.add_argument("--out", default="runs/nuclei-instances")
    ap.add_argument("--config", default="nuclei")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)
    if a.route != "otsu":
        return learned_route(
            a, "python benchmarks/nuclei_instances.py " + " ".join(sys.argv[1:] if argv is None else argv)
        )

    import pandas as pd

    from medseg.data import load_samples
    from medseg.data.nuclei import instance_map
    from medseg.evaluation.detection import CaseObjects, encode, evaluate_detections
    from medseg.evaluation.instances import instance_scores
    from medseg.io import read_image_2d
    from medseg.objects import otsu_instances

    cmd = "python benchmarks/nuclei_instances.py " + " ".join(sys.argv[1:] if argv is None else argv)
    samples = load_samples("nuclei", a.data_dir).samples[:: a.every]
    t0 = time.time()
    scores, cases = [], []
    for s in samples:
        truth = instance_map(s)
        pred, confidence = otsu_instances(read_image_2d(s["image"]))
        scores.append(instance_scores(truth, pred))
        cases.append(encode(CaseObjects(truth, pred, confidence)))
    seconds = time.time() - t0
    per_image = pd.DataFrame(scores)
    coco = evaluate_detections(cases, ["nucleus"])
    common = {"command": cmd, "images": len(samples), "method": "otsu + distance-transform watershed"}
    line("nuclei DSB 2018 score, mean over images", round(float(per_image["dsb"].mean()), 4), "", **common)
    line("nuclei COCO AP50", round(coco.ap(0, 0.5), 4), "", **common)
    line("nuclei COCO AP@[.50:.95]", round(coco.ap(0), 4), "", **common)
    line("nuclei COCO AR@100", round(float(np.nanmean(coco.ar100[:, 0])), 4), "", **common)
    line("nuclei panoptic quality, mean over images", round(float(per_image["pq"].mean()), 4), "", **common)
    line("nuclei count error per image, mean (signed)", round(float(per_image["count_error"].mean()), 2), "", **common)
    line(
        "nuclei count error per image, mean absolute",
        round(float(per_image["count_error"].abs().mean()), 2),
        "",
        **common,
    )
    line("seconds for the whole set (segmentation and scoring)", round(seconds, 1), "s", **common)


ROUTES = {
    "unet": ("U-Net (background/interior/boundary) + seeded watershed", []),
    # a detector from scratch wants a tenth of the U-Net's learning rate (at 2e-3 its box loss diverged)
    "maskrcnn": (
        "Mask R-CNN, ResNet-18 FPN from scratch",
        ["model.name=maskrcnn", "model.deep_supervision=0", "train.lr=0.0003"],
    ),
    # the backbone from the ImageNet file medseg[pretrained] installs, in its normalisation, with the narrower
    # pyramid and fewer sampled regions that make a CPU step 2.6x shorter (docs/instances.md)
    "maskrcnn-lite0": (
        "Mask R-CNN, EfficientNet-Lite0 FPN from ImageNet",
        [
            "model.name=maskrcnn",
            "model.deep_supervision=0",
            "model.encoder=efficientnet-lite0",
            "model.pretrained=imagenet",
            "preprocess.intensity=imagenet",
            "model.extra={fpn_width: 128, box_batch_size: 128}",
            "train.lr=0.0003",
        ],
    ),
}


def learned_route(a, cmd: str) -> None:
    from medseg.evaluation.cv import cross_validate

    method, route = ROUTES[a.route]
    overrides = ["data.task=instances", *route, *a.overrides]
    info = None
    for fold in a.only if a.only is not None else range(a.folds):
        info = cross_validate(
            a.config, a.data_dir, a.out, folds=a.folds, only=[fold], overrides=overrides, progress=False, force=True
        ).info
        r = info["folds"][str(fold)]
        minutes = r["train_minutes"]
        _instance_lines(f"fold {fold}/{a.folds}", r["instances"], cmd, method, overrides, train_minutes=minutes)
    p = info["pooled"]
    minutes = p["train_minutes_per_fold"]
    _instance_lines(f"{len(p['folds_done'])}-fold", p["instances"], cmd, method, overrides, train_minutes=minutes)


def _instance_lines(where: str, r: dict, cmd: str, method: str, overrides: list[str], **extra) -> None:
    common = {"command": cmd, "method": method}
    common.update(overrides=overrides, images=r["cases"], **extra)
    ap = lambda k: r.get(k, r.get(f"{k}_fold_mean"))
    line(f"nuclei {where} DSB 2018 score, mean over held-out images", r["dsb_mean"], "", **common)
    line(f"nuclei {where} COCO AP50", round(ap("ap50"), 4), "", **common)
    line(f"nuclei {where} COCO AP@[.50:.95]", round(ap("ap"), 4), "", **common)
    line(f"nuclei {where} panoptic quality, mean over images", r["pq_mean"], "", **common)
    line(f"nuclei {where} count error per image, mean absolute", r["count_error_abs_mean"], "", **common)


if __name__ == "__main__":
    main()
