"""Intensity normalisation from ``preprocess.intensity``: per image, per volume, fixed range or none."""

from __future__ import annotations

import functools

import numpy as np
import torch
from monai.transforms import MapTransform, NormalizeIntensityd, ScaleIntensityd, ScaleIntensityRanged, Transform

from medseg.config import Config
from medseg.data.keys import IMAGE
from medseg.data.loading import adapt_channels_2d, check_finite
from medseg.errors import MedsegError, fail
from medseg.io import read_image_2d, volume_slices


class CheckRanged(Transform):
    """Stop with the file's name when an image lies far outside the fixed intensity range (a 16-bit file fed to an
    8-bit recipe would otherwise be mapped to values in the hundreds and segmented as noise, silently)."""

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def __call__(self, data):
        img = data[IMAGE]
        lo, hi = float(img.min()), float(img.max())
        span = self.hi - self.lo
        if hi > self.hi + span or lo < self.lo - span:
            meta = getattr(img, "meta", None) or {}
            where = (data.get("image_meta") or {}).get("path") or meta.get("filename_or_obj") or "an input image"
            raise fail(
                where,
                f"has intensities {lo:g} to {hi:g}, far outside preprocess.intensity_range "
                f"[{self.lo:g}, {self.hi:g}] (a 16-bit image for an 8-bit recipe?)",
                "set preprocess.intensity_range to the data's range, or use preprocess.intensity: zscore",
            )
        return data


@functools.lru_cache(maxsize=64)
def _volume_stats(
    slices: tuple[tuple[str, float, int], ...],
    n_channels: int,
    lower: float,
    upper: float,
    select: tuple[int, ...] | None = None,
) -> np.ndarray:
    """``(C, 4)`` clip-low, clip-high, mean and std per channel over all slices of one volume (cached: the key holds
    each file's path, modification time and size, so an edited slice is read again)."""
    per_channel: list[list[np.ndarray]] = [[] for _ in range(n_channels)]
    for path, _mtime, _size in slices:
        raw = read_image_2d(path, kind="image")
        check_finite(raw, path)
        img = adapt_channels_2d(raw, n_channels, path, list(select) if select is not None else None)
        for c in range(n_channels):
            per_channel[c].append(img[c].ravel())
    return np.array([_clipped_stats(np.concatenate(parts), lower, upper) for parts in per_channel])


def _clipped_stats(values: np.ndarray, lower: float, upper: float) -> tuple[float, float, float, float]:
    """Percentile clip bounds, then mean and std of the clipped values."""
    v = np.asarray(values, dtype=np.float32)
    lo, hi = np.percentile(v, [lower, upper])
    v = np.clip(v, lo, hi)
    return float(lo), float(hi), float(v.mean()), max(float(v.std()), 1e-6)


class NormalizeByVolumed(MapTransform):
    """z-score every channel of a 2D slice with the statistics of the whole volume it was cut from (Buda et al.
    2019 on LGG): clip to the volume's ``lower``/``upper`` percentiles, subtract its mean, divide by its std.

    The volume is the slices beside the file that differ only in their number (:func:`medseg.io.volume_slices`),
    found again at inference, so training, evaluation and ``medseg infer`` of one slice normalise alike. Unlike
    a per-slice z-score, a slice with little tissue (the skull base, the vertex) keeps its place on the volume's
    intensity scale instead of being stretched. A 3D image is its own volume. 2.5D inputs reuse the centre
    slice's statistics for the neighbours' channels."""

    def __init__(
        self, n_channels: int, lower: float = 10.0, upper: float = 99.0, keys=(IMAGE,), select: list[int] | None = None
    ):
        super().__init__(keys)
        self.n_channels, self.lower, self.upper = n_channels, float(lower), float(upper)
        self.select = tuple(select) if select is not None else None

    def _stats_3d(self, img) -> np.ndarray:
        arr = np.asarray(img.detach().cpu() if isinstance(img, torch.Tensor) else img, dtype=np.float32)
        return np.array([_clipped_stats(arr[c], self.lower, self.upper) for c in range(arr.shape[0])])

    def __call__(self, data):
        d = dict(data)
        img = d[IMAGE]
        meta = d.get("image_meta")
        if img.ndim == 3 and meta and meta.get("path"):
            files = volume_slices(meta["path"])
            key = tuple((str(f), f.stat().st_mtime, f.stat().st_size) for f in files)
            stats = _volume_stats(key, self.n_channels, self.lower, self.upper, self.select)
            stats = np.tile(stats, (img.shape[0] // self.n_channels, 1))
            d["image_meta"] = {**meta, "volume_slices": len(files)}
        else:
            stats = self._stats_3d(img)
        shape = (-1,) + (1,) * (img.ndim - 1)
        lo, hi, mean, std = (torch.as_tensor(stats[:, i], dtype=torch.float32).reshape(shape) for i in range(4))
        x = img if isinstance(img, torch.Tensor) else torch.as_tensor(img)
        d[IMAGE] = (torch.maximum(torch.minimum(x.float(), hi), lo) - mean) / std
        return d


def intensity_transforms(cfg: Config) -> list:
    """The transforms that normalise intensities as ``cfg.preprocess`` says; refuses a bad range or name."""
    p = cfg.preprocess
    if p.intensity == "zscore":
        return [NormalizeIntensityd(keys=IMAGE, nonzero=p.nonzero, channel_wise=p.channel_wise)]
    if p.intensity == "scale":
        return [ScaleIntensityd(keys=IMAGE, channel_wise=p.channel_wise)]
    if p.intensity == "fixed":  # one mapping for every image: absolute brightness survives normalisation
        lo, hi = (float(v) for v in p.intensity_range)
        if not hi > lo:
            raise MedsegError(
                f"preprocess.intensity_range {p.intensity_range} must be [low, high] with high > low; "
                "fix: e.g. [0, 255] for 8-bit images"
            )
        return [
            CheckRanged(lo, hi),
            ScaleIntensityRanged(keys=IMAGE, a_min=lo, a_max=hi, b_min=-1.0, b_max=1.0, clip=False),
        ]
    if p.intensity == "volume":  # per-volume statistics (2D slices of one scan normalised alike)
        lo, hi = (float(v) for v in p.volume_percentiles)
        if not 0 <= lo < hi <= 100:
            raise MedsegError(
                f"preprocess.volume_percentiles {p.volume_percentiles} must be [low, high] with "
                "0 <= low < high <= 100; fix: e.g. [10, 99]"
            )
        return [NormalizeByVolumed(len(cfg.data.channels), lo, hi, select=cfg.channel_select)]
    if p.intensity == "imagenet":
        return imagenet_transforms(p.intensity_range, len(cfg.data.channels), cfg.in_channels // len(cfg.data.channels))
    if p.intensity == "none":
        return []
    raise MedsegError(
        f"preprocess.intensity '{p.intensity}' is unknown; fix: use zscore, volume, scale, fixed, imagenet or none"
    )


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # RGB, of images scaled to [0, 1]


def imagenet_statistics(n_channels: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """ImageNet's per-channel mean and std in RGB order for 3 channels; for other counts (grey, MRI sequences), the
    mean of the three channels' statistics on every channel."""
    if n_channels == 3:
        return IMAGENET_MEAN, IMAGENET_STD
    return (0.449,) * n_channels, (0.226,) * n_channels


def imagenet_transforms(intensity_range, n_channels: int, slices: int = 1) -> list:
    """What an ImageNet-trained encoder was fed: ``intensity_range`` (8-bit by default) scaled to [0, 1], then each
    channel less ImageNet's mean and over its std, in RGB order. Other channel counts (grey, MRI sequences) get the
    mean of the three channels' statistics. In 2.5D the ``slices`` (centre, then neighbours) each bring their
    ``n_channels``, and each slice gets the same statistics."""
    lo, hi = (float(v) for v in intensity_range)
    mean, std = imagenet_statistics(n_channels)
    mean, std = mean * slices, std * slices
    return [
        CheckRanged(lo, hi),
        ScaleIntensityRanged(keys=IMAGE, a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=False),
        NormalizeIntensityd(keys=IMAGE, subtrahend=list(mean), divisor=list(std), channel_wise=True),
    ]
