"""Post-processing of label maps on the original grid, in physical units (MONAI's kernels)."""

from __future__ import annotations

import numpy as np
import torch


def postprocess(
    labels: np.ndarray,
    num_classes: int,
    spacing,
    keep_largest: bool = False,
    min_size: float = 0.0,
    fill_holes: bool = False,
) -> np.ndarray:
    """Clean a class map ``(H, W)`` or ``(X, Y, Z)``.

    Args:
        labels: integer class map.
        num_classes: classes including background.
        spacing: voxel size in mm per axis (so ``min_size`` is in mm^2 / mm^3).
        keep_largest: keep only the largest connected component of each class.
        min_size: drop components smaller than this many mm^2 (2D) or mm^3 (3D).
        fill_holes: fill enclosed holes of each class.
    """
    from monai.transforms import FillHoles, KeepLargestConnectedComponent

    out = torch.as_tensor(np.asarray(labels, dtype=np.uint8))[None]
    fg = list(range(1, num_classes))
    if fill_holes:
        out = FillHoles(applied_labels=fg)(out)
    if min_size > 0:
        cleaned = torch.zeros_like(out)
        for c in fg:
            cleaned[torch.as_tensor(_drop_small((out[0] == c).numpy(), min_size, spacing))[None]] = c
        out = cleaned
    if keep_largest:
        out = KeepLargestConnectedComponent(applied_labels=fg, is_onehot=False, connectivity=out.ndim - 1)(out)
    return np.asarray(out[0], dtype=np.uint8)


def _drop_small(mask: np.ndarray, min_size: float, spacing) -> np.ndarray:
    """``mask`` without its components (full connectivity) whose area or volume is below ``min_size`` mm^2 / mm^3.

    Not MONAI's ``RemoveSmallObjects``: on scikit-image 0.26 it warns on every call and also drops components of
    exactly ``min_size`` (scikit-image changed what its deprecated argument means), so the result depended on the
    installed version. Here a component of exactly ``min_size`` is kept, whatever the version."""
    from scipy import ndimage

    comp, n = ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))
    size = np.concatenate([[0.0], component_sizes(comp, n) * float(np.prod([float(s) for s in spacing]))])
    keep = size >= float(min_size) * (1 - 1e-9)
    keep[0] = False
    return keep[comp]


def component_sizes(comp: np.ndarray, n: int, chunk: int = 1 << 24) -> np.ndarray:
    """Voxel count of components 1..n. ``np.bincount`` of the whole int32 label image would first copy it to int64
    (630 MB more for a 512x512x300 box); counting chunk by chunk keeps the extra memory to one chunk."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    if n:
        flat = comp.reshape(-1)
        for start in range(0, flat.size, chunk):
            sizes += np.bincount(flat[start : start + chunk], minlength=n + 1)
    return sizes[1:]
