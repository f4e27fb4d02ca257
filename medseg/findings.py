"""Findings in physical units: per class volume (mL) or area (mm^2), lesions, centroids, boxes."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .io import Geometry


def _world(geom: Geometry, ijk: np.ndarray) -> list[float]:
    """Voxel index (2D: row, col) -> physical coordinates (3D: RAS mm; 2D: mm from the top-left)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    if geom.ndim == 2:
        return [round(float(v), 2) for v in ijk * np.asarray(geom.spacing)]
    return [round(float(v), 2) for v in (geom.affine @ np.append(ijk, 1.0))[:3]]


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def _centroid(comp: np.ndarray, box: tuple[slice, ...], label: int) -> np.ndarray:
    """Centre of mass of component ``label`` from its box's axis profiles (far quicker than
    ``ndimage.center_of_mass`` over the whole label map, and only for the lesions reported)."""
    m = comp[box] == label
    total = m.sum(dtype=np.int64)
    centre = []
    for axis in range(m.ndim):
        profile = m.sum(axis=tuple(a for a in range(m.ndim) if a != axis), dtype=np.int64)
        centre.append(box[axis].start + float((profile * np.arange(profile.size)).sum()) / total)
    return np.array(centre)


def component_sizes(comp: np.ndarray, n: int, chunk: int = 1 << 24) -> np.ndarray:
    """Voxel count of components 1..n. ``np.bincount`` of the whole int32 label image would first copy it to int64
    (630 MB more for a 512x512x300 box); counting chunk by chunk keeps the extra memory to one chunk."""
    sizes = np.zeros(n + 1, dtype=np.int64)
    if n:
        flat = comp.reshape(-1)
        for start in range(0, flat.size, chunk):
            sizes += np.bincount(flat[start:start + chunk], minlength=n + 1)
    return sizes[1:]


def lesion_findings(labels: np.ndarray, geom: Geometry, label_names: list[str], max_lesions: int = 50) -> dict:
    """Per foreground class: total size, lesion count and per-lesion size, centroid and bounding box.

    Sizes are mL for volumes and mm^2 for 2D images; coordinates are RAS mm for
    volumes and (row, column) mm for 2D. Lesions are connected components with
    full connectivity (26 in 3D, 8 in 2D), largest first.
    """
    ndim = labels.ndim
    unit_size = float(np.prod(geom.spacing))  # mm^3 or mm^2 per voxel
    to_unit = (lambda n: n * unit_size / 1000.0) if ndim == 3 else (lambda n: n * unit_size)
    unit = "ml" if ndim == 3 else "mm2"
    out = {}
    structure = ndimage.generate_binary_structure(ndim, ndim)
    for c, name in enumerate(label_names):
        if c == 0:
            continue
        full = labels == c
        total = int(full.sum())
        # label the class's bounding box only: lesions are usually a small part of a scan
        box = _bbox(full) if total else tuple(slice(0, 1) for _ in range(ndim))
        offset = np.array([b.start for b in box], dtype=np.float64)
        mask = full[box]
        comp, n = ndimage.label(mask, structure=structure)
        sizes = component_sizes(comp, n)
        order = np.argsort(-sizes, kind="stable")[:max_lesions]
        slices = ndimage.find_objects(comp)
        lesions = []
        for rank, idx in enumerate(order):
            sl = slices[idx]
            lo = np.array([s.start for s in sl], dtype=np.float64) + offset
            hi = np.array([s.stop - 1 for s in sl], dtype=np.float64) + offset
            corners = np.array(np.meshgrid(*[[a, b] for a, b in zip(lo, hi)], indexing="ij")).reshape(ndim, -1).T
            world = np.array([_world(geom, c_) for c_ in corners])
            centroid = _centroid(comp, sl, idx + 1) + offset
            lesions.append({"id": rank + 1, f"size_{unit}": round(to_unit(int(sizes[idx])), 4), "voxels": int(sizes[idx]),
                            "centroid_mm": _world(geom, centroid),
                            "centroid_voxel": [round(float(v), 1) for v in centroid],
                            "bbox_mm": {"min": world.min(axis=0).round(2).tolist(), "max": world.max(axis=0).round(2).tolist()},
                            "bbox_voxel": {"min": lo.astype(int).tolist(), "max": hi.astype(int).tolist()}})
        out[name] = {f"total_{unit}": round(to_unit(total), 4), "voxels": total, "n_lesions": int(n),
                     f"largest_{unit}": lesions[0][f"size_{unit}"] if lesions else 0.0, "lesions": lesions}
    return {"unit": unit, "coordinates": "RAS mm" if ndim == 3 else "row/column mm from the top-left pixel",
            "classes": out}
