"""PH2 peer: a plain MONAI-tutorial training loop on the same cross-validation folds as benchmarks/ph2_cv.py.

    python benchmarks/ph2_peer.py --data-dir ../shared/data/ph2 --only 0 --minutes 9
    python benchmarks/ph2_peer.py --data-dir ../shared/data/ph2 --only 0 --minutes 9 --loss dicece

The loop is written the way MONAI's 2D segmentation tutorials write it: LoadImaged(PILReader) ->
EnsureChannelFirstd -> Resized (256x192 in PILReader's width-first frame) -> ScaleIntensityd -> RandFlipd on both
axes (the tutorials' RandRotate90d would turn some images portrait and break batching), a `Dataset` decoded every
step, a `DataLoader` with 2 workers, `UNet(channels 16-256, strides 2, 2 residual units)`, `DiceLoss(sigmoid)`
(or, with `--loss dicece`, `DiceCELoss(sigmoid)` as in MONAI's newer tutorials), Adam 1e-3, batch 8, a `DiceMetric`
validation each epoch that keeps the best weights. It trains for a fixed
wall-clock budget (the issue quotes about 0.93 Dice in 9 minutes), then both its best (picked on the held-out fold,
the tutorial's way) and its final weights are scored per image at the original resolution (probabilities resized
back bilinearly, threshold 0.5), with the same metric code medseg uses. Only the fold assignment is medseg's.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time

from _common import binarise_peer_mask, line


def run_fold(data_dir: str, fold: int, folds: int, minutes: float, loss: str = "dice") -> dict:
    import numpy as np
    import torch
    import torch.nn.functional as F
    from monai.data import DataLoader, Dataset, decollate_batch
    from monai.losses import DiceCELoss, DiceLoss
    from monai.metrics import DiceMetric
    from monai.networks.nets import UNet
    from monai.transforms import (
        AsDiscrete,
        Compose,
        EnsureChannelFirstd,
        Lambdad,
        LoadImaged,
        RandFlipd,
        Resized,
        ScaleIntensityd,
    )
    from monai.utils import set_determinism

    from medseg.data import load_samples
    from medseg.data.base import recipe_or_default
    from medseg.data.splits import make_split, select
    from medseg.data.transforms import binarise_mask_2d
    from medseg.evaluation.cv import fold_config
    from medseg.evaluation.metrics import overlap_metrics
    from medseg.io import read_image_2d

    set_determinism(0)
    torch.set_num_threads(2)
    cfg = fold_config("ph2", folds, fold)  # the folds medseg cv trains
    samples = load_samples("ph2", data_dir).samples
    split = make_split(samples, cfg.data.split, recipe_or_default(cfg.data.recipe))
    tr, va = select(samples, split["train"]), select(samples, split["val"])
    size = (256, 192)  # PILReader's default array is (width, height): 765x572 -> 256x192 keeps the aspect
    keys = ["image", "label"]
    base = [
        LoadImaged(keys=keys, reader="PILReader"),
        EnsureChannelFirstd(keys=keys),
        Lambdad(keys="label", func=binarise_peer_mask),
        Resized(keys="image", spatial_size=size, mode="area"),
        Resized(keys="label", spatial_size=size, mode="nearest"),
        ScaleIntensityd(keys="image"),
    ]
    aug = [RandFlipd(keys=keys, prob=0.5, spatial_axis=0), RandFlipd(keys=keys, prob=0.5, spatial_axis=1)]
    as_items = lambda ss: [{"image": s["image"], "label": s["label"]} for s in ss]
    train_loader = DataLoader(
        Dataset(as_items(tr), Compose(base + aug)), batch_size=8, shuffle=True, num_workers=2, persistent_workers=True
    )
    val_loader = DataLoader(Dataset(as_items(va), Compose(base)), batch_size=1, num_workers=2, persistent_workers=True)
    model = UNet(
        spatial_dims=2,
        in_channels=3,
        out_channels=1,
        channels=(16, 32, 64, 128, 256),
        strides=(2, 2, 2, 2),
        num_res_units=2,
    )
    loss_fn = DiceCELoss(sigmoid=True) if loss == "dicece" else DiceLoss(sigmoid=True)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    metric = DiceMetric(include_background=True, reduction="mean")
    post = AsDiscrete(threshold=0.5)
    best, best_state, epochs, t0 = -1.0, None, 0, time.time()
    while time.time() - t0 < minutes * 60:
        model.train()
        for b in train_loader:
            opt.zero_grad()
            loss_fn(model(b["image"]), b["label"]).backward()
            opt.step()
        epochs += 1
        model.eval()
        with torch.no_grad():
            for b in val_loader:
                out = [post(torch.sigmoid(o)) for o in decollate_batch(model(b["image"]))]
                metric(y_pred=out, y=decollate_batch(b["label"]))
        d = float(metric.aggregate().item())
        metric.reset()
        if d > best:
            best, best_state = d, copy.deepcopy(model.state_dict())
    train_min = (time.time() - t0) / 60

    def score(state) -> tuple[float, float]:
        model.load_state_dict(state)
        model.eval()
        dice, jac = [], []
        with torch.no_grad():
            for s in va:
                raw = read_image_2d(s["image"])
                gt = binarise_mask_2d(read_image_2d(s["label"], kind="mask")) > 0
                x = Compose(base)({"image": s["image"], "label": s["label"]})["image"][None]
                prob = torch.sigmoid(model(torch.as_tensor(x)))
                # back to (width, height) at full size, then transposed into the (rows, columns) frame of the mask
                prob = (
                    F.interpolate(prob, size=(raw.shape[1], raw.shape[0]), mode="bilinear", align_corners=False)[0, 0]
                    .numpy()
                    .T
                )
                m = overlap_metrics(prob > 0.5, gt)
                dice.append(m["dice"])
                jac.append(m["jaccard"])
        return float(np.mean(dice)), float(np.mean(jac))

    last = score(model.state_dict())
    best_scores = score(best_state)
    return {
        "dice": last[0],
        "jaccard": last[1],
        "dice_best": best_scores[0],
        "jaccard_best": best_scores[1],
        "epochs": epochs,
        "train_minutes": round(train_min, 2),
    }


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default="../shared/data/ph2")
    ap.add_argument("--folds", type=int, default=5)
    ap.add_argument("--only", type=int, nargs="*")
    ap.add_argument("--minutes", type=float, default=9.0)
    ap.add_argument("--loss", choices=["dice", "dicece"], default="dice")
    a = ap.parse_args(argv)
    cmd = "python benchmarks/ph2_peer.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for fold in a.only if a.only is not None else range(a.folds):
        r = run_fold(a.data_dir, fold, a.folds, a.minutes, a.loss)
        line(
            f"ph2 peer (MONAI tutorial loop) fold {fold}/{a.folds} mean Dice, final weights, original resolution",
            round(r["dice"], 4),
            "",
            None,
            command=cmd,
            jaccard=round(r["jaccard"], 4),
            dice_best_on_heldout=round(r["dice_best"], 4),
            jaccard_best_on_heldout=round(r["jaccard_best"], 4),
            epochs=r["epochs"],
            train_minutes=r["train_minutes"],
            loss=a.loss,
        )


if __name__ == "__main__":
    main()
