"""MONAI dictionary-transform pipelines built from the config.

Each pipeline has a deterministic part (load, validate, reorient, resample,
normalise, resize) that :class:`monai.data.CacheDataset` computes once, and a
random part (augmentation, patch sampling) run every step on plain tensors:
MetaTensor bookkeeping is dropped after the cached part because it is slow in
hot loops.

Shapes: 2D samples are ``image (C, H, W)`` float32 and ``label (1, H, W)``
float32 class indices; 3D samples ``(C, X, Y, Z)`` and ``(1, X, Y, Z)``.
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    FgBgToIndicesd,
    MapTransform,
    NormalizeIntensityd,
    Orientationd,
    RandAdjustContrastd,
    RandAffined,
    RandCropByPosNegLabeld,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandRotate90d,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    Resized,
    ScaleIntensityd,
    ScaleIntensityRanged,
    SelectItemsd,
    Spacingd,
    SpatialPadd,
    Transform,
)

from medseg.config import Config
from medseg.data.base import IMAGE, LABEL
from medseg.errors import MedsegError, fail, find_user_error
from medseg.io import exif_orientation, read_image_2d, read_volume, slice_neighbours, volume_slices

# ----------------------------------------------------------------------------
# image / label adaptation shared by training and inference
# ----------------------------------------------------------------------------


def channel_plan(stored: int, wanted: int) -> str:
    """What :func:`adapt_channels_2d` does with ``stored`` channels for a model of ``wanted``: ``"keep"``,
    ``"drop_alpha"`` (RGBA to RGB), ``"grey"`` (RGB or RGBA to luminance), ``"repeat"`` (grey copied) or ``"refuse"``."""
    if stored == 4 and wanted in (1, 3):
        return "drop_alpha" if wanted == 3 else "grey"
    if stored == wanted:
        return "keep"
    if stored == 1:
        return "repeat"
    return "grey" if wanted == 1 and stored == 3 else "refuse"


def adapt_channels_2d(
    img: np.ndarray, n_channels: int, path, select: list[int] | None = None, stored: list[str] | None = None
) -> np.ndarray:
    """``(H, W[, C])`` image -> ``(n_channels, H, W)`` float32 (grey is repeated, alpha dropped). With ``select``
    (indices into the ``stored`` channel names, :attr:`Config.channel_select`) those channels are taken instead."""
    arr = img[..., None] if img.ndim == 2 else img
    c = arr.shape[-1]
    if select is not None:
        if stored and c != len(stored):
            raise fail(
                path,
                f"image has {c} channel{'s' if c > 1 else ''} but data.stored_channels names "
                f"{len(stored)} ({', '.join(stored)})",
                "give images with those channels or correct data.stored_channels",
            )
        arr, c = arr[..., list(select)], len(select)
    plan = channel_plan(c, n_channels)
    if plan == "refuse":
        raise fail(
            path,
            f"image has {c} channels but the model expects {n_channels}",
            "convert the image or use a config/checkpoint with matching data.channels",
        )
    if c == 4 and plan != "keep":
        arr = arr[..., :3]
    if plan == "repeat":
        out = np.repeat(arr, n_channels, axis=-1)
    elif plan == "grey":
        out = (arr.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
    else:
        out = arr
    return np.ascontiguousarray(np.moveaxis(out.astype(np.float32), -1, 0))


def binarise_mask_2d(mask: np.ndarray) -> np.ndarray:
    """Any 2D mask (1-bit, 0/1, 0/255, 0/any value, 3-channel, palette indices, lossy JPEG) -> ``(H, W)`` uint8 0/1.

    A mask with one foreground value, or only small label values (palette indices up to 16), is foreground wherever
    it is not 0. A mask with a range of values (JPEG noise, anti-aliased edges) is foreground above half its maximum.
    """
    m = mask.max(axis=-1) if mask.ndim == 3 else mask
    if m.dtype == bool or not m.size:
        return m.astype(np.uint8)
    top = float(m.max())
    if top <= 0:
        return np.zeros(m.shape, np.uint8)
    if len(np.unique(m)) <= 2 or (np.issubdtype(m.dtype, np.integer) and top <= 16):
        return (m > 0).astype(np.uint8)
    return (m > top / 2).astype(np.uint8)


def labels_to_classes(label: np.ndarray, num_classes: int, path) -> np.ndarray:
    """Check and convert a label map to integer classes ``0..num_classes-1`` (binary: anything > 0 is 1)."""
    if not np.isfinite(label).all():
        raise fail(path, "label map contains NaN or infinite values", "repair the label file")
    if num_classes == 2:
        fg_values = np.unique(label[label != 0])
        if fg_values.size > 1:
            shown = [int(v) if float(v).is_integer() else float(v) for v in fg_values[:6]]
            raise fail(
                path,
                f"label values {shown} are outside the configured classes (one foreground class)",
                "list every class in data.labels (or --labels), or merge the values into one",
            )
        return (label != 0).astype(np.uint8)
    rounded = np.rint(label)
    if np.abs(rounded - label).max(initial=0) > 1e-3:
        raise fail(path, "label map has non-integer values", "save labels as integers (nearest-neighbour resampling)")
    values = np.unique(rounded).astype(int)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise fail(
            path,
            f"label values {bad.tolist()} are outside the configured classes 0..{num_classes - 1}",
            "fix the label map or list every class in data.labels",
        )
    return rounded.astype(np.uint8)


def _check_finite(arr: np.ndarray, path) -> None:
    if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
        n = int((~np.isfinite(arr)).sum())
        raise fail(path, f"contains {n} NaN/infinite voxels", "replace them (e.g. with 0) or exclude the case")


def _channel_stats(img: np.ndarray, axis) -> list[list[float]]:
    return [img.mean(axis=axis).tolist(), img.std(axis=axis).tolist()]


class _LoadPaird(MapTransform):
    """Base of the loaders: knows the expected channel count and number of classes."""

    def __init__(
        self, n_channels: int, num_classes: int, keys=(IMAGE, LABEL), allow_missing_keys=True, describe: bool = False
    ):
        super().__init__(keys, allow_missing_keys)
        self.n_channels = n_channels
        self.num_classes = num_classes
        self.describe = describe  # also report what is on disk (channels, label values): `medseg datasets check`

    @staticmethod
    def _raw_values(lab: np.ndarray) -> list:
        uniq = np.unique(np.asarray(lab))[:50]
        return [int(v) if float(v).is_integer() else float(v) for v in uniq]


class LoadImage2Dd(_LoadPaird):
    """Load a 2D image and optional mask with :func:`medseg.io.read_image_2d` and validate them.

    Writes ``image (C, H, W)`` float32, ``label (1, H, W)`` uint8 classes and
    ``image_meta`` (original size, path, raw per-channel mean/std).
    """

    def __init__(
        self,
        n_channels: int,
        num_classes: int,
        keys=(IMAGE, LABEL),
        allow_missing_keys=True,
        context: int = 0,
        describe: bool = False,
        select: list[int] | None = None,
        stored: list[str] | None = None,
    ):
        super().__init__(n_channels, num_classes, keys, allow_missing_keys, describe)
        self.context, self.select, self.stored = context, select, stored

    def _read(self, path, upright: bool = True) -> tuple[np.ndarray, int]:
        raw = read_image_2d(path, kind="image", upright=upright)
        _check_finite(raw, path)
        return (
            adapt_channels_2d(raw, self.n_channels, path, self.select, self.stored),
            1 if raw.ndim == 2 else raw.shape[2],
        )

    def _stored_pair(self, path, lpath, orientation: int):
        """Image and mask as stored (EXIF orientation ignored), when only that way their sizes agree: a mask made
        from the raw pixel array of a photo that viewers show turned."""
        if self.context or (orientation == 1 and exif_orientation(lpath) == 1):
            return None
        img, raw_channels = self._read(path, upright=False)
        mask = read_image_2d(lpath, kind="mask", upright=False)
        return (img, raw_channels, mask) if mask.shape[:2] == img.shape[1:] else None

    def __call__(self, data):
        d = dict(data)
        path = d[IMAGE]
        img, raw_channels = self._read(path)
        lpath = d.get(LABEL)
        mask = read_image_2d(lpath, kind="mask") if lpath is not None else None
        if mask is not None:
            _check_finite(mask, lpath)  # a NaN would make a float mask all background, without a word
        orientation = exif_orientation(path)
        exif = "upright" if orientation != 1 else "none"  # every item has the keys: batches collate
        if mask is not None and mask.shape[:2] != img.shape[1:]:
            stored = self._stored_pair(path, lpath, orientation)
            if stored is not None:
                (img, raw_channels, mask), exif = stored, "as_stored"
        found = 0
        if self.context:  # 2.5D: the neighbouring slices become extra channels, centre first
            paths, found = slice_neighbours(path, self.context)
            parts = [img]
            for q in paths[1:]:
                nb = img if Path(q) == Path(path) else self._read(q)[0]
                if nb.shape != img.shape:
                    raise fail(
                        q,
                        f"neighbouring slice is {nb.shape[1]}x{nb.shape[2]} but {Path(path).name} is "
                        f"{img.shape[1]}x{img.shape[2]}",
                        "re-export the volume's slices at one size",
                    )
                parts.append(nb)
            img = np.concatenate(parts, axis=0)
        d[IMAGE] = img
        d["image_meta"] = {
            "path": str(path),
            "original_size": list(img.shape[1:]),
            "stats": _channel_stats(img, (1, 2)),
            **({"context_found": found} if self.context else {}),
            **({"channels_on_disk": raw_channels} if self.describe else {}),
            "exif": exif,
            "exif_orientation": orientation,
        }
        if mask is not None:
            if self.describe:
                d["label_meta"] = {"values_on_disk": self._raw_values(mask)}
            if mask.shape[:2] != img.shape[1:]:
                raise fail(
                    lpath,
                    f"mask is {mask.shape[0]}x{mask.shape[1]} but its image {Path(path).name} is "
                    f"{img.shape[1]}x{img.shape[2]}",
                    "re-export the mask at the image's size or remove the case",
                )
            if self.num_classes == 2:
                lab = binarise_mask_2d(mask)
            else:
                lab = labels_to_classes(mask if mask.ndim == 2 else mask[..., 0], self.num_classes, lpath)
            d[LABEL] = lab[None]
        return d


class LoadVolumed(_LoadPaird):
    """Load a (multi-modal) volume and its label map as MetaTensors with RAS affines.

    ``image`` may be one path (3D or 4D with modalities last) or a list of 3D
    paths, one per channel; all must share one grid.
    """

    def __call__(self, data):
        d = dict(data)
        paths = d[IMAGE] if isinstance(d[IMAGE], (list, tuple)) else [d[IMAGE]]
        chans, geom0 = [], None
        for p in paths:
            arr, geom = read_volume(p)
            _check_finite(arr, p)
            if geom0 is None:
                geom0 = geom
            elif geom.shape != geom0.shape or not np.allclose(geom.affine, geom0.affine, atol=1e-3):
                raise fail(
                    p,
                    f"grid {geom.shape} differs from {Path(paths[0]).name} {geom0.shape}",
                    "resample all modalities of a case onto one grid",
                )
            chans.extend([arr[..., i] for i in range(arr.shape[3])] if arr.ndim == 4 else [arr])
        if len(chans) != self.n_channels:
            raise fail(
                paths[0],
                f"has {len(chans)} modalities but {self.n_channels} are expected",
                "give one file per configured channel (data.channels) or a 4D file with that many",
            )
        img = np.stack([c.astype(np.float32) for c in chans])
        meta = {
            "original_affine": torch.as_tensor(geom0.affine),
            "spatial_shape": np.array(geom0.shape),
            "filename_or_obj": str(paths[0]),
        }
        d[IMAGE] = MetaTensor(torch.from_numpy(img), affine=torch.as_tensor(geom0.affine), meta=dict(meta))
        d["image_meta"] = {
            "path": str(paths[0]),
            "original_size": list(geom0.shape),
            "geometry": geom0,
            "spacing": [float(s) for s in geom0.spacing],
            "stats": _channel_stats(img, (1, 2, 3)),
            **({"channels_on_disk": len(chans)} if self.describe else {}),
        }
        if LABEL in d and d[LABEL] is not None:
            lp = d[LABEL]
            lab, lgeom = read_volume(lp)
            if lab.ndim == 4 and lab.shape[3] == 1:
                lab = lab[..., 0]
            if self.describe:
                d["label_meta"] = {"values_on_disk": self._raw_values(lab)}
            if lgeom.shape != geom0.shape:
                raise fail(
                    lp,
                    f"label grid {lgeom.shape} differs from image {Path(paths[0]).name} {geom0.shape}",
                    "resample the label map onto the image grid (nearest neighbour)",
                )
            if not np.allclose(lgeom.affine, geom0.affine, atol=1e-2):
                raise fail(
                    lp,
                    "label geometry (origin/direction/spacing) differs from its image",
                    "copy the image geometry into the label file",
                )
            lab = labels_to_classes(np.asarray(lab, dtype=np.float32), self.num_classes, lp)
            d[LABEL] = MetaTensor(torch.from_numpy(lab[None]), affine=torch.as_tensor(geom0.affine), meta=dict(meta))
        return d


def _nonzero(x):
    return x != 0


class CropNonzerod(MapTransform):
    """Crop ``keys`` to the box of voxels that are non-zero in any image channel (plus ``margin``), before
    intensity normalisation, so "zero" means the scanner's or skull-stripping's own background.

    Applied in training, validation and inference alike; ``d["crop_box"]`` keeps the start index and the
    uncropped shape, so inference pads its prediction back (background outside the box) before resampling to the
    input grid. An image with no non-zero voxel is left whole.
    """

    def __init__(self, keys, source_key: str = "image", margin: int = 4):
        super().__init__(keys)
        self.source_key = source_key
        self.crop = CropForegroundd(
            keys=keys, source_key=source_key, select_fn=_nonzero, allow_smaller=True, margin=margin
        )

    def __call__(self, data):
        d = dict(data)
        full = [int(v) for v in d[self.source_key].shape[1:]]
        out = self.crop(d)  # one pass over the volume: the box comes back with the crop
        start, end = out.pop("foreground_start_coord"), out.pop("foreground_end_coord")
        if any(int(e) <= int(s) for s, e in zip(start, end)):  # no non-zero voxel: MONAI's box is empty
            d["crop_box"] = {"start": [0] * len(full), "full_shape": full}
            return d
        out["crop_box"] = {"start": [int(v) for v in start], "full_shape": full}
        return out


class Guarded(Transform):
    """Run a deterministic pipeline; turn any failure into a one-line MedsegError naming the case files."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, data):
        try:
            return self.transform(data)
        except MedsegError:
            raise
        except Exception as exc:  # noqa: BLE001 - report which file failed
            found = find_user_error(exc)
            if found is not None:
                raise found from None
            cause = exc.__cause__ or exc
            where = data.get(IMAGE) if isinstance(data, dict) else data
            where = where[0] if isinstance(where, (list, tuple)) else where
            msg = " ".join(str(cause).split())[:200]
            label = data.get(LABEL) if isinstance(data, dict) and isinstance(data.get(LABEL), (str, Path)) else None
            with_label = f" with its label {Path(label).name}" if label else ""  # either file may be the bad one
            raise fail(
                where,
                f"failed in preprocessing{with_label} ({type(cause).__name__}: {msg})",
                "check that the image and its label are complete and readable",
            ) from None


# ----------------------------------------------------------------------------
# pipelines
# ----------------------------------------------------------------------------


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
        _check_finite(raw, path)
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


def _intensity(cfg: Config):
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
    if p.intensity == "none":
        return []
    raise MedsegError(f"preprocess.intensity '{p.intensity}' is unknown; fix: use zscore, volume, scale, fixed or none")


def deterministic_transforms(cfg: Config, with_label: bool = True, for_training: bool = True) -> Compose:
    """Load -> validate -> (2D: resize; 3D: orient, resample) -> normalise -> (3D: crop) -> plain tensors."""
    keys = [IMAGE, LABEL] if with_label else [IMAGE]
    n_ch, k = len(cfg.data.channels), cfg.num_classes
    p = cfg.preprocess
    if cfg.data.spatial_dims == 2:
        ts = [
            LoadImage2Dd(
                n_ch,
                k,
                keys=keys,
                context=cfg.data.context_slices,
                select=cfg.channel_select,
                stored=cfg.data.stored_channels,
            )
        ]
        if p.spatial_size:
            ts.append(Resized(keys=IMAGE, spatial_size=p.spatial_size, mode="area"))
            if with_label:
                ts.append(Resized(keys=LABEL, spatial_size=p.spatial_size, mode="nearest"))
        ts += _intensity(cfg)
    else:
        ts = [LoadVolumed(n_ch, k, keys=keys)]
        if p.orientation:
            # labels as MONAI defaults them today; left out, MONAI warns on every 3D command that the default changes
            ts.append(Orientationd(keys=keys, axcodes=p.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        if p.spacing:
            ts.append(Spacingd(keys=keys, pixdim=p.spacing, mode=("bilinear", "nearest")[: len(keys)]))
        if p.crop_foreground:  # same box in training, validation and inference (inference pads back)
            ts.append(CropNonzerod(keys=keys, source_key=IMAGE, margin=4))
        ts += _intensity(cfg)
        if for_training and with_label and cfg.train.patch_size:
            ts.append(SpatialPadd(keys=keys, spatial_size=cfg.train.patch_size))
            ts.append(
                FgBgToIndicesd(keys=LABEL, fg_postfix="_fg", bg_postfix="_bg", image_key=IMAGE, image_threshold=-1e9)
            )
    if for_training:
        ts.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
    return Compose(ts)


def random_transforms(cfg: Config) -> Compose:
    """Augmentation (and, in 3D, foreground-aware patch sampling) from ``cfg.augment``."""
    a, dims = cfg.augment, cfg.data.spatial_dims
    keys = [IMAGE, LABEL]
    ts = []
    if dims == 3 and cfg.train.patch_size:
        pos = cfg.train.pos_fraction
        ts.append(
            RandCropByPosNegLabeld(
                keys=keys,
                label_key=LABEL,
                spatial_size=cfg.train.patch_size,
                pos=pos,
                neg=1 - pos,
                num_samples=cfg.train.samples_per_volume,
                fg_indices_key=f"{LABEL}_fg",
                bg_indices_key=f"{LABEL}_bg",
            )
        )
    if a.flip_prob > 0:
        ts += [RandFlipd(keys=keys, prob=a.flip_prob, spatial_axis=ax) for ax in range(dims)]
    if a.rot90_prob > 0:
        ts.append(RandRotate90d(keys=keys, prob=a.rot90_prob, spatial_axes=(0, 1)))
    if a.affine_prob > 0:
        rot = math.radians(a.rotate_deg)
        ts.append(
            RandAffined(
                keys=keys,
                prob=a.affine_prob,
                rotate_range=[rot] if dims == 2 else [rot, rot, rot],
                scale_range=[a.scale_range] * dims,
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
            )
        )
    if a.intensity_prob > 0:
        ts.append(RandScaleIntensityd(keys=IMAGE, factors=a.intensity_scale, prob=a.intensity_prob, channel_wise=True))
        ts.append(RandShiftIntensityd(keys=IMAGE, offsets=a.intensity_shift, prob=a.intensity_prob, channel_wise=True))
    if a.contrast_prob > 0:
        ts.append(RandAdjustContrastd(keys=IMAGE, prob=a.contrast_prob, gamma=(0.7, 1.5)))
    if a.noise_prob > 0:
        ts.append(RandGaussianNoised(keys=IMAGE, prob=a.noise_prob, std=a.noise_std))
    if a.blur_prob > 0:
        sigma = tuple(float(v) for v in a.blur_sigma)
        ts.append(RandGaussianSmoothd(keys=IMAGE, prob=a.blur_prob, sigma_x=sigma, sigma_y=sigma, sigma_z=sigma))
    if a.lowres_prob > 0:
        # nnU-Net's "simulate low resolution": nearest-neighbour down, linear back up, image only
        ts.append(
            RandSimulateLowResolutiond(
                keys=IMAGE,
                prob=a.lowres_prob,
                downsample_mode="nearest",
                upsample_mode="bilinear" if dims == 2 else "trilinear",
                zoom_range=tuple(float(v) for v in a.lowres_zoom),
            )
        )
    return Compose(ts)


def train_transforms(cfg: Config) -> Compose:
    """Cached deterministic part (guarded) followed by the random part."""
    return Compose(
        [Guarded(deterministic_transforms(cfg)), *random_transforms(cfg).transforms, SelectItemsd(keys=[IMAGE, LABEL])]
    )


def val_transforms(cfg: Config) -> Compose:
    """Deterministic part only; items keep ``image_meta`` (validation reads only image and label)."""
    return Compose([Guarded(deterministic_transforms(cfg))])
