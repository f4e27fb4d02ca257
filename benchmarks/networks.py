"""One shipped config, several networks: cross-validated Dice, Jaccard and minutes per fold for each.

    python benchmarks/networks.py ph2 --data-dir ../shared/data/ph2 --only 0                     # every network, fold 0
    python benchmarks/networks.py humanseg --data-dir ../shared/data/humanseg --nets unet lite0-imagenet
    python benchmarks/networks.py ph2 --data-dir ../shared/data/ph2 --only 0 --train-images 20    # low data
    python benchmarks/networks.py ph2 --data-dir ../shared/data/ph2 --nets classical               # every classical method

Each network is the config plus the overrides of :data:`NETWORKS`, trained and scored by ``medseg cv`` (its folds,
its held-out scoring at each image's original resolution) into ``OUT/NET[-nN]/``. ``--train-images N`` keeps N
training images per fold (``data.split.max_train_groups``; the held-out images stay the same), for learning curves.
Every network trains for the config's ``train.epochs`` unless ``--set train.epochs=N`` says otherwise (the U-Net
from scratch had 80 on PH2 and 100 on humanseg; the Lite0 U-Nets from ImageNet ship with 50 and 60). One JSON line
per network and fold, and one per network over the folds recorded so far.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from _common import line

from medseg.models.classical import METHODS as CLASSICAL

# Each network names every key it depends on, so that a row means the same whichever network a config ships.
SCRATCH = ["model.pretrained=null", "preprocess.intensity=zscore"]
IMAGENET = ["model.pretrained=imagenet", "preprocess.intensity=imagenet"]
ENCODER_UNET = ["model.name=encoder_unet", "model.encoder=efficientnet-lite0"]
NETWORKS = {
    "shipped": [],  # the config as shipped
    "unet": ["model.name=unet", *SCRATCH],
    "segnet": ["model.name=segnet", *SCRATCH],
    "fcn": ["model.name=fcn", "model.encoder=efficientnet-lite0", "model.deep_supervision=0", *SCRATCH],
    "lite0-scratch": [*ENCODER_UNET, *SCRATCH],
    "lite0-imagenet": [*ENCODER_UNET, *IMAGENET],
    "lite0-imagenet-frozen": [*ENCODER_UNET, *IMAGENET, "train.freeze_encoder_epochs=5"],
}
# the classical methods, fitted by a parameter search (their "training minutes" are the fit)
NETWORKS.update({name: [f"model.name={name}"] for name in CLASSICAL})


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("config", help="a shipped config (ph2, humanseg, ...) or a YAML path")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument(
        "--nets",
        nargs="+",
        choices=sorted([*NETWORKS, "classical"]),
        default=[n for n in NETWORKS if n not in CLASSICAL],
    )
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*", help="run only these folds")
    ap.add_argument("--train-images", type=int, default=0, help="keep this many training images per fold")
    ap.add_argument("--out", default=None, help="default runs/networks-CONFIG")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--init", default=None, help="every fold starts from this medseg checkpoint (fine-tuning)")
    ap.add_argument("--tag", default="", help="appended to each network's folder name (e.g. the --init source)")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    a = ap.parse_args(argv)

    from medseg.evaluation.cv import cross_validate

    cmd = "python benchmarks/networks.py " + " ".join(sys.argv[1:] if argv is None else argv)
    name = Path(a.config).stem
    nets = [m for n in a.nets for m in (CLASSICAL if n == "classical" else [n])]  # "classical": every method
    started, table = time.perf_counter(), []
    root = Path(a.out or f"runs/networks-{name}")
    subset = [f"data.split.max_train_groups={a.train_images}"] if a.train_images else []
    for net in nets:
        out = root / ((f"{net}-n{a.train_images}" if a.train_images else net) + a.tag)
        overrides = [*NETWORKS[net], *subset, *a.overrides]
        info = None
        for fold in a.only if a.only is not None else range(a.folds):
            kw = {"folds": a.folds, "only": [fold], "overrides": overrides, "device": a.device, "progress": False}
            kw["init"] = a.init
            info = cross_validate(a.config, a.data_dir, out, force=True, **kw).info
            r = info["folds"][str(fold)]
            line(
                f"{name} fold {fold}/{a.folds} mean Dice, {net}"
                + (f", {a.train_images} training images" if a.train_images else ""),
                round(r["dice"], 4),
                "",
                None,
                command=cmd,
                network=net,
                overrides=overrides,
                init=a.init,
                jaccard=round(r["jaccard"], 4),
                n_val=r["n_val"],
                train_minutes=round(r["train_minutes"], 1),
            )
        if info and info["folds"]:
            p = info["pooled"]
            line(
                f"{name} {len(p['folds_done'])}-fold CV mean Dice, {net}",
                round(p["dice"], 4),
                "",
                None,
                command=cmd,
                network=net,
                jaccard=round(p["jaccard"], 4),
                train_minutes_per_fold=round(p["train_minutes_per_fold"], 1),
            )
            table.append(f"| {net} | {p['dice']:.4f} | {p['jaccard']:.4f} | {p['train_minutes_per_fold']:.2f} |")
    print(f"\n| {name}, {a.folds}-fold | Dice | Jaccard | training (min per fold) |\n|---|---|---|---|")
    print("\n".join(table))
    print(f"\nall of it: {(time.perf_counter() - started) / 60:.1f} min of wall time")


if __name__ == "__main__":
    main()
