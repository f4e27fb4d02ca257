"""The Dice a 2D recipe could reach at a given input size if the network were perfect: the resize ceiling.

    python benchmarks/resize_ceiling.py --data lgg --data-dir ../shared/data/lgg --sizes 96 128 160 192
    python benchmarks/resize_ceiling.py --data ph2 --data-dir ../shared/data/ph2 --sizes 96x128 192x256 288x384

2D recipes train and predict at ``preprocess.spatial_size`` and resize the probabilities back to each image's own
size before thresholding (``medseg infer``). A perfect network at that size outputs the ground truth averaged over
each low-resolution pixel, so this script takes every ground-truth mask, resizes it down by area averaging (what
the pipeline does to images), resizes it back bilinearly and thresholds it at 0.5 (what ``medseg infer`` does to
probabilities), and scores the result against the original mask exactly as ``medseg evaluate`` would: per image,
or per patient with slices pooled when the recipe stacks them into volumes (LGG). A mean far below 1 means the
input size itself caps the score; a mean near 1 means a larger input cannot be what is missing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from _common import machine


def round_trip(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``mask`` (H, W) resized to ``size`` by area averaging, back to (H, W) bilinearly, thresholded at 0.5."""
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    small = F.interpolate(t, size=size, mode="area")
    back = F.interpolate(small, size=mask.shape, mode="bilinear", align_corners=False)
    return back[0, 0].numpy() > 0.5


def ceiling(samples: list[dict], size: tuple[int, int]) -> dict[str, float]:
    """Dice of the round trip per case (per volume when the samples carry a ``volume_id``)."""
    from medseg.evaluation.evaluate import read_label_map
    from medseg.evaluation.metrics import confusion
    from medseg.tasks import dice_from_counts

    counts: dict[str, np.ndarray] = {}
    for s in samples:
        gt, _spacing, _affine = read_label_map(Path(s["label"]), 2)
        gt = gt > 0
        key = s.get("volume_id", s["case_id"])
        counts[key] = counts.get(key, np.zeros(3)) + np.asarray(confusion(round_trip(gt, size), gt)[:3])
    return {k: dice_from_counts(*c) for k, c in counts.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="a 2D recipe: ph2, lgg or folder")
    ap.add_argument("--data-dir", required=True)
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["96", "128", "160", "192", "256"],
        help="input sizes: N for NxN, or HxW (PH2's default is 192x256)",
    )
    a = ap.parse_args(argv)

    from medseg.data import load_samples

    samples = load_samples(a.data, a.data_dir).samples
    print(f"{a.data}: {len(samples)} images; machine: {machine()}")
    print("| input size | mean Dice | lowest | cases |")
    print("|---|---|---|---|")
    for text in a.sizes:
        h, _, w = text.lower().partition("x")
        size = (int(h), int(w or h))
        d = ceiling(samples, size)
        v = np.array(list(d.values()))
        print(f"| {size[0]}x{size[1]} | {v.mean():.4f} | {v.min():.4f} ({min(d, key=d.get)}) | {len(v)} |")


if __name__ == "__main__":
    main()
