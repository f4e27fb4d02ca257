"""2D slices of one volume (LGG's TIFF slices) back into that volume.

A recipe whose samples are slices gives each one a ``volume_id`` and a ``slice_index``; evaluation scores a
volume, and the overlays draw one, by stacking the slices in slice order. Training, by contrast, reads each slice
alone. This module is the one place that ordering and stacking are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from medseg.errors import fail


def is_sliced(samples: list[dict]) -> bool:
    """Whether every sample is a slice of a named volume."""
    return bool(samples) and all("volume_id" in s and "slice_index" in s for s in samples)


def group_by_volume(samples: list[dict]) -> dict[str, list[dict]]:
    """``{volume_id: [slice samples in slice order]}``, volumes in the order they first appear."""
    out: dict[str, list[dict]] = {}
    for s in samples:
        out.setdefault(s.get("volume_id", s["group"]), []).append(s)
    for v in out.values():
        v.sort(key=lambda s: s["slice_index"])
    return out


def stack_slices(paths: Sequence, read: Callable[[object], np.ndarray]) -> np.ndarray:
    """Read each slice file (in the order given) and stack them on a new third axis: ``(H, W)`` slices give
    ``(H, W, Z)``, ``(H, W, C)`` slices ``(H, W, Z, C)``. Slices of different sizes are refused, naming the first."""
    arrays = [read(p) for p in paths]
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise fail(
            paths[0], f"slices of this patient differ in size {sorted(shapes)}", "re-export the slices at one size"
        )
    return np.stack(arrays, axis=2)
