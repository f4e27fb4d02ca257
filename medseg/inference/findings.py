"""Findings per class: volume (mL) or area (mm^2; px^2 when a 2D image's pixel spacing is unknown), lesions with
their size, maximum diameter, centroid and bounding box. Units and rounding are described in docs/units.md."""

from __future__ import annotations

import itertools

import numpy as np
from scipy import ndimage

from medseg.io import Geometry
from medseg.postprocess import component_sizes

UNIT_LABELS = {"ml": "mL", "mm2": "mm²", "px2": "px²"}


def spacing_known(geom: Geometry) -> bool:
    """Whether ``geom``'s spacing was measured: volumes carry theirs; 2D images only when it was configured."""
    return bool(geom.meta.get("spacing_known", geom.ndim == 3))


def significant(x: float, digits: int = 3) -> float:
    """``x`` to ``digits`` significant figures: a size is not known to the last of six digits."""
    return float(f"{float(x):.{digits}g}")


def format_size(v) -> str:
    """A size as printed: pixel counts and whole numbers without decimals or exponent (143258, 143000), others to
    3 significant figures (0.0643, 12.4); 'n/a' for a missing or undefined one."""
    if v is None or not np.isfinite(float(v)):
        return "n/a"
    x = significant(v) if not float(v).is_integer() else float(v)
    return str(int(x)) if x.is_integer() else f"{x:g}"


def max_diameter(mask: np.ndarray, spacing) -> float:
    """The largest distance between two points of a lesion, the lesion being the union of its pixel squares (voxel
    boxes) scaled by ``spacing``: so the largest distance between two of its pixel corners (a 10x4 block measures
    sqrt(10^2 + 4^2), one pixel sqrt(2)). Only the hull's vertices can be farthest apart, and the hull of the pixel
    boxes is the hull of the boundary pixels' centres grown by one box (a Minkowski sum), so its vertices are corners
    of the pixels at the centres' hull vertices: the hull is taken of centres, not of eight times as many corners."""
    mask = np.asarray(mask, bool)
    if not mask.any():
        return 0.0
    centres = np.argwhere(mask & ~ndimage.binary_erosion(mask)).astype(np.float64)
    if len(centres) > mask.ndim + 1:
        from scipy.spatial import ConvexHull, QhullError

        try:
            centres = centres[ConvexHull(centres).vertices]
        except QhullError:  # flat (one slice, one row): every boundary pixel stays a candidate
            pass
    offsets = np.array(list(itertools.product([-0.5, 0.5], repeat=mask.ndim)))
    corners = (centres[:, None, :] + offsets[None]).reshape(-1, mask.ndim) * np.asarray(spacing, np.float64)
    best = 0.0
    for start in range(0, len(corners), 1024):  # chunked, so a large hull never needs an N x N matrix at once
        d = ((corners[start : start + 1024, None, :] - corners[None, :, :]) ** 2).sum(axis=-1)
        best = max(best, float(d.max()))
    return float(np.sqrt(best))


def _world(geom: Geometry, ijk: np.ndarray, known: bool = True) -> list[float]:
    """Voxel index (2D: row, col) -> coordinates (3D: RAS mm; 2D: mm from the top-left, px when not ``known``)."""
    ijk = np.asarray(ijk, dtype=np.float64)
    if geom.ndim == 2:
        return [round(float(v), 2) for v in ijk * (np.asarray(geom.spacing) if known else 1.0)]
    return [round(float(v), 2) for v in (geom.affine @ np.append(ijk, 1.0))[:3]]


def _bbox(mask: np.ndarray) -> tuple[slice, ...]:
    """The smallest box holding every True voxel of a non-empty mask."""
    box = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    return tuple(box)


def lesion_findings(labels: np.ndarray, geom: Geometry, label_names: list[str], max_lesions: int = 50) -> dict:
    """Per foreground class: total size, lesion count and per lesion size, maximum diameter, centroid and box.

    Sizes are mL for volumes and mm^2 for 2D images, or pixel counts (px^2) for 2D images of unknown pixel
    spacing; lengths and coordinates are mm (volumes: RAS mm; 2D: row, column from the top-left), px when the
    spacing is unknown. Lesions are connected components with full connectivity (26 in 3D, 8 in 2D), largest first.
    """
    u = _Units.of(geom)
    out = {}
    for c, name in enumerate(label_names):
        if c == 0:
            continue
        out[name] = _class_findings(labels == c, geom, u.spacing, u.unit, u.length, u.known, max_lesions)
    return {**u.header(), "classes": out}


class _Units:
    """How a case's sizes are given: mL (volumes), mm² (2D of known spacing) or px², lengths in mm or px."""

    def __init__(self, ndim: int, known: bool, spacing):
        self.ndim, self.known = ndim, known
        self.spacing = tuple(float(s) for s in spacing) if known else (1.0,) * ndim
        self.unit = "ml" if ndim == 3 else ("mm2" if known else "px2")
        self.length = "mm" if known else "px"

    @classmethod
    def of(cls, geom: Geometry) -> _Units:
        return cls(geom.ndim, spacing_known(geom), geom.spacing)

    def header(self) -> dict:
        coordinates = "RAS mm" if self.ndim == 3 else f"row/column {self.length} from the top-left pixel"
        return {
            "unit": self.unit,
            "unit_label": UNIT_LABELS[self.unit],
            "length_unit": self.length,
            "spacing_known": self.known,
            "coordinates": coordinates,
        }


def instance_findings(
    instances: np.ndarray, scores: dict[int, float], geom: Geometry, label_names: list[str], max_lesions: int = 50
) -> dict:
    """The findings of an instance map: the class entry of :func:`lesion_findings` (its ``lesions`` the largest
    ``max_lesions`` objects), and ``objects``, every object in id order: its id is its value in the map, with its
    class, size, maximum diameter, centroid, box and ``score`` (mean object probability)."""
    from skimage.measure import regionprops

    u = _Units.of(geom)
    name = label_names[1]
    origin = np.zeros(instances.ndim)
    objects = []
    for p in regionprops(np.asarray(instances, np.int32), spacing=u.spacing):
        entry = _lesion(int(p.label), p, origin, geom, u.spacing, u.unit, u.length, u.known)
        objects.append({"id": entry.pop("id"), "class": name, **entry, "score": scores.get(int(p.label))})
    largest = sorted(objects, key=lambda o: (-o["voxels"], o["id"]))[:max_lesions]
    total = int(np.count_nonzero(instances))
    size = f"size_{u.unit}"
    summary = {
        f"total_{u.unit}": _size(total, total * float(np.prod(u.spacing)), u.unit),
        "voxels": total,
        "n_lesions": len(objects),
        f"largest_{u.unit}": largest[0][size] if largest else _size(0, 0.0, u.unit),
        "lesions": largest,
    }
    return {**u.header(), "classes": {name: summary}, "objects": objects}


def _class_findings(full: np.ndarray, geom: Geometry, spacing, unit: str, length: str, known: bool, most: int) -> dict:
    """One class's findings: its lesions are ``skimage.measure.regionprops`` of the connected components."""
    from skimage.measure import regionprops

    total = int(full.sum())
    # label the class's bounding box only: lesions are usually a small part of a scan
    box = _bbox(full) if total else tuple(slice(0, 1) for _ in range(full.ndim))
    offset = np.array([b.start for b in box], dtype=np.float64)
    # scipy's labelling into int32 (skimage's gives int64 and needs several such buffers: gigabytes for a large,
    # noisy mask); full connectivity (26 in 3D, 8 in 2D), numbered in scan order as skimage numbers them
    comp = np.empty(full[box].shape, dtype=np.int32)
    n = ndimage.label(full[box], ndimage.generate_binary_structure(full.ndim, full.ndim), output=comp)
    order = np.argsort(-component_sizes(comp, n), kind="stable")[:most]  # largest first, ties by position
    if n > most:  # a noisy mask has thousands of specks: describe only the lesions reported
        comp[~np.isin(comp, order + 1)] = 0
    props = {p.label: p for p in regionprops(comp, spacing=spacing)}
    found = [
        _lesion(rank + 1, props[i + 1], offset, geom, spacing, unit, length, known) for rank, i in enumerate(order)
    ]
    return {
        f"total_{unit}": _size(total, total * float(np.prod(spacing)), unit),
        "voxels": total,
        "n_lesions": int(n),
        f"largest_{unit}": found[0][f"size_{unit}"] if found else _size(0, 0.0, unit),
        "lesions": found,
    }


def _size(voxels: int, area: float, unit: str):
    """A size in ``unit``: mL and mm² to 3 significant figures, pixel counts whole."""
    return {"ml": lambda: significant(area / 1000.0), "mm2": lambda: significant(area), "px2": lambda: voxels}[unit]()


def _lesion(rank: int, p, offset: np.ndarray, geom: Geometry, spacing, unit: str, length: str, known: bool) -> dict:
    """One lesion's entry of the findings (``p``: its regionprops, in the class box that starts at ``offset``)."""
    ndim = len(offset)
    lo = np.array(p.bbox[:ndim], dtype=np.float64) + offset
    hi = np.array(p.bbox[ndim:], dtype=np.float64) - 1 + offset
    corners = np.array(np.meshgrid(*[[a, b] for a, b in zip(lo, hi)], indexing="ij")).reshape(ndim, -1).T
    world = np.array([_world(geom, c, known) for c in corners])
    # the centre of mass in voxel indices, mapped to the world by _world: regionprops' centroid is the index scaled
    # by the spacing, and a volume's world coordinates need its affine, which may rotate the axes
    # (from the lesion's own box: regionprops' centroid lists every voxel's index, gigabytes for a large lesion)
    centroid = np.asarray(ndimage.center_of_mass(p.image), dtype=np.float64) + p.bbox[:ndim] + offset
    return {
        "id": rank,
        f"size_{unit}": _size(int(p.num_pixels), float(p.area), unit),
        "voxels": int(p.num_pixels),
        # own code: regionprops' feret_diameter_max runs through the pixel-edge midpoints (marching squares), so a
        # single pixel measures 1 instead of the pixel-corner sqrt(2) docs/units.md defines
        f"max_diameter_{length}": round(max_diameter(p.image, spacing), 1),
        f"centroid_{length}": _world(geom, centroid, known),
        "centroid_voxel": [round(float(v), 1) for v in centroid],
        f"bbox_{length}": {"min": world.min(axis=0).round(2).tolist(), "max": world.max(axis=0).round(2).tolist()},
        "bbox_voxel": {"min": lo.astype(int).tolist(), "max": hi.astype(int).tolist()},
    }
