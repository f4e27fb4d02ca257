"""Post-processing of label maps on the original grid, in physical units (MONAI's kernels)."""

from __future__ import annotations

import numpy as np
import torch


def postprocess(labels: np.ndarray, num_classes: int, spacing, keep_largest: bool = False, min_size: float = 0.0,
                fill_holes: bool = False) -> np.ndarray:
    """Clean a class map ``(H, W)`` or ``(X, Y, Z)``.

    Args:
        labels: integer class map.
        num_classes: classes including background.
        spacing: voxel size in mm per axis (so ``min_size`` is in mm^2 / mm^3).
        keep_largest: keep only the largest connected component of each class.
        min_size: drop components smaller than this many mm^2 (2D) or mm^3 (3D).
        fill_holes: fill enclosed holes of each class.
    """
    from monai.transforms import FillHoles, KeepLargestConnectedComponent, RemoveSmallObjects

    out = torch.as_tensor(np.asarray(labels, dtype=np.uint8))[None]
    fg = list(range(1, num_classes))
    if fill_holes:
        out = FillHoles(applied_labels=fg)(out)
    if min_size > 0:
        cleaned = torch.zeros_like(out)
        for c in fg:
            m = RemoveSmallObjects(min_size=float(min_size), connectivity=out.ndim - 1, by_measure=True,
                                   pixdim=[float(s) for s in spacing])((out == c))
            cleaned[torch.as_tensor(m).bool()] = c
        out = cleaned
    if keep_largest:
        out = KeepLargestConnectedComponent(applied_labels=fg, is_onehot=False, connectivity=out.ndim - 1)(out)
    return np.asarray(out[0], dtype=np.uint8)
