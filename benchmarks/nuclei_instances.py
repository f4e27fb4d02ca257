"""The classical floor of instance segmentation on nuclei: Otsu's threshold and a distance-transform watershed,
no training, scored object by object over every image.

    python benchmarks/nuclei_instances.py --data-dir ../shared/data/nuclei

Prints one JSON line per score: the Data Science Bowl 2018 score, COCO AP50 and AP@[.50:.95], AR@100, panoptic
quality and the mean count error, over all images (a method that learns nothing has no folds to hold out; every
image is unseen). ``--every K`` scores every K-th image, for a quick look.
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
    a = ap.parse_args(argv)

    import pandas as pd

    from medseg.data import load_samples
    from medseg.data.nuclei import instance_map
    from medseg.evaluation.detection import CaseObjects, encode, evaluate_detections
    from medseg.evaluation.instances import instance_scores
    from medseg.inference.instances import otsu_instances
    from medseg.io import read_image_2d

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


if __name__ == "__main__":
    main()
