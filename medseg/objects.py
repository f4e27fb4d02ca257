"""From a foreground to objects: touching objects split by a seeded watershed (scikit-image), and the classical
floor of instance segmentation, Otsu's threshold followed by that split, which needs no training.

:func:`split_touching` takes a foreground mask and, optionally, seeds (one connected blob per object, such as the
interiors a U-Net predicts); without seeds they are the peaks of the distance to the background, so two round
objects that touch at a neck become two. The watershed floods the negated distance from the seeds, within the
mask, so each pixel goes to the seed it is nearest along the object's ridge.

:func:`otsu_instances` is the floor a learned method has to beat: grey levels, Otsu's threshold, the minority side
of it taken as the objects (nuclei are bright on a dark fluorescence field and dark on a bright stained one), holes
filled, specks removed, then :func:`split_touching` with seeds one typical object radius apart. Each object's
confidence is its contrast: how far its mean grey level lies from the background's, in units of the image's
spread.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def split_touching(
    mask: np.ndarray,
    seeds: np.ndarray | None = None,
    min_distance: float | None = None,
    min_size: int = 0,
    elevation: np.ndarray | None = None,
) -> np.ndarray:
    """An instance map (uint16 or int32 when there are more than 65535 objects) of ``mask``: one object per seed
    (``seeds``: a boolean map or a label map; default the distance-transform peaks at least ``min_distance``
    pixels apart, by default :func:`typical_radius`). The watershed floods ``elevation`` (default the negated
    distance to the background) from the seeds; a blob of the mask no seed reaches is one object of its own.
    Objects under ``min_size`` pixels are dropped; the survivors are numbered 1..N."""
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    mask = np.asarray(mask, bool)
    if not mask.any():
        return np.zeros(mask.shape, np.uint16)
    blobs, _ = ndimage.label(mask)
    distance = ndimage.distance_transform_edt(mask) if seeds is None or elevation is None else None
    if seeds is None:
        apart = typical_radius(blobs, min_size) if min_distance is None else min_distance
        peaks = peak_local_max(distance, min_distance=max(1, round(apart)), labels=blobs, exclude_border=False)
        markers = _plateau_markers(distance, mask, peaks)
    else:
        s = np.asarray(seeds)
        markers = ndimage.label(s > 0)[0] if s.dtype == bool or s.max(initial=0) <= 1 else s.astype(np.int32)
        markers = np.where(mask, markers, 0)
    _seed_orphans(markers, blobs, mask)
    labels = watershed(-distance if elevation is None else elevation, markers, mask=mask)
    return _renumber(labels, min_size)


def _seed_orphans(markers: np.ndarray, blobs: np.ndarray, mask: np.ndarray) -> None:
    """Give every blob of ``mask`` without a marker one of its own, in place: a blob thinner than the seed rule
    (or one whose interior the network missed) is still an object."""
    unseeded = np.setdiff1d(np.unique(blobs[mask]), np.unique(blobs[markers > 0]))
    if unseeded.size:
        lut = np.zeros(int(blobs.max()) + 1, np.int32)
        lut[unseeded] = np.arange(1, unseeded.size + 1) + int(markers.max(initial=0))
        orphan = lut[blobs]
        markers[orphan > 0] = orphan[orphan > 0]


def instances_from_probabilities(
    probs: np.ndarray, threshold: float = 0.5, min_seed: int = 0, seed_threshold: float | None = None
) -> np.ndarray:
    """``(3, ...)`` background / interior / boundary probabilities -> an instance map (2D or 3D).

    The foreground is where the object probability (interior + boundary) exceeds ``threshold``; each connected
    region where the interior alone does (face connectivity, so seeds that touch only at a corner stay two) seeds
    one object (``seed_threshold``, default ``threshold``: higher splits more, lower merges more), and the
    watershed floods the negated interior probability from the seeds within the foreground: the boundary the
    network drew between touching objects is the ridge where floods meet."""
    probs = np.asarray(probs, np.float32)
    if probs.shape[0] != 3:
        raise ValueError(f"instance probabilities need 3 channels (background, interior, boundary), got {probs.shape}")
    foreground = probs[0] < 1.0 - threshold
    seeds, _ = ndimage.label((probs[1] > (threshold if seed_threshold is None else seed_threshold)) & foreground)
    if min_seed > 0:
        seeds = _renumber(seeds, min_seed).astype(np.int32)
    return split_touching(foreground, seeds=seeds, elevation=-probs[1])


def drop_small_objects(labels: np.ndarray, min_pixels: float) -> np.ndarray:
    """An instance map without its objects under ``min_pixels`` pixels (voxels), renumbered 1..N."""
    return _renumber(np.asarray(labels), int(np.ceil(min_pixels)) if min_pixels > 0 else 0)


def fill_object_holes(labels: np.ndarray) -> np.ndarray:
    """Background enclosed by the objects given to the object nearest to it (a hole inside one object is that
    object's; a gap enclosed by several goes to each one's nearest)."""
    from skimage.segmentation import expand_labels

    labels = np.asarray(labels)
    holes = ndimage.binary_fill_holes(labels > 0) & (labels == 0)
    if not holes.any():
        return labels
    grown = expand_labels(labels, distance=max(labels.shape))
    return np.where(holes, grown, labels).astype(labels.dtype)


def object_scores(labels: np.ndarray, probs: np.ndarray) -> dict[int, float]:
    """Each object's confidence: its mean object probability (1 - background probability, or the one sigmoid
    channel), the score detection AP ranks it by."""
    n = int(labels.max(initial=0))
    if not n:
        return {}
    fg = 1.0 - probs[0] if probs.shape[0] > 1 else probs[0]
    means = ndimage.mean(fg, labels, index=np.arange(1, n + 1))
    return {i + 1: round(float(m), 4) for i, m in enumerate(means)}


def _plateau_markers(distance: np.ndarray, mask: np.ndarray, peaks: np.ndarray) -> np.ndarray:
    """One marker per flat top of the distance map that holds a peak: a rod's ridge is a plateau on which the peak
    finder places a peak every ``min_distance`` pixels, and those must stay one object."""
    tops = (distance == ndimage.maximum_filter(distance, size=3)) & mask
    top_labels, _ = ndimage.label(tops, structure=np.ones((3, 3)))
    held = np.unique(top_labels[tuple(peaks.T)]) if len(peaks) else np.zeros(0, int)
    held = held[held > 0]
    lut = np.zeros(int(top_labels.max(initial=0)) + 1, np.int32)
    lut[held] = np.arange(1, len(held) + 1)
    return lut[top_labels]


def typical_radius(blobs: np.ndarray, min_size: int = 0) -> float:
    """The radius of a disc of the median blob's area (blobs under ``min_size`` pixels aside): peaks of the
    distance map closer than this belong to one object, whatever the magnification. Merged blobs of several
    objects are larger than the median as long as most objects stand alone."""
    areas = np.bincount(np.asarray(blobs).ravel())[1:]
    areas = areas[areas >= max(1, int(min_size))]
    return float(np.sqrt(np.median(areas) / np.pi)) if areas.size else 1.0


def _renumber(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Labels 1..N in the order of their values, objects under ``min_size`` pixels dropped."""
    ids, sizes = np.unique(labels[labels > 0], return_counts=True)
    keep = ids[sizes >= max(1, int(min_size))]
    lut = np.zeros(int(labels.max(initial=0)) + 1, np.int64)
    lut[keep] = np.arange(1, len(keep) + 1)
    out = lut[labels]
    return out.astype(np.uint16 if len(keep) <= 65535 else np.int32)


def grey(image: np.ndarray) -> np.ndarray:
    """``(H, W)`` float grey levels of an ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)`` image (channel mean)."""
    a = np.asarray(image, dtype=np.float64)
    if a.ndim == 2:
        return a
    if a.ndim == 3:
        return a.mean(axis=0) if a.shape[0] <= 4 and a.shape[-1] > 4 else a.mean(axis=-1)
    raise ValueError(f"an image of shape {a.shape} is not 2D")


def otsu_instances(image: np.ndarray, min_size: int = 10, min_distance: float | None = None) -> tuple[np.ndarray, dict]:
    """``(instance map, {label: confidence})`` of an image by Otsu's threshold and :func:`split_touching`."""
    from skimage.filters import threshold_otsu

    g = grey(image)
    if np.ptp(g) == 0:
        return np.zeros(g.shape, np.uint16), {}
    t = threshold_otsu(g)
    bright = g > t
    objects = bright if bright.mean() <= 0.5 else ~bright  # the minority side holds the objects
    objects = ndimage.binary_fill_holes(objects)
    labels = split_touching(objects, min_distance=min_distance, min_size=min_size)
    n = int(labels.max(initial=0))
    if not n:
        return labels, {}
    means = ndimage.mean(g, labels, index=np.arange(1, n + 1))
    background = float(g[labels == 0].mean()) if (labels == 0).any() else float(t)
    spread = float(g.std()) or 1.0
    return labels, {i + 1: float(abs(m - background) / spread) for i, m in enumerate(means)}
