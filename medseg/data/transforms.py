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

import math
from pathlib import Path

import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    EnsureTyped,
    FgBgToIndicesd,
    MapTransform,
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
    SelectItemsd,
    Spacingd,
    SpatialPadd,
    Transform,
)

from medseg.config import Config
from medseg.data.intensity import CheckRanged, NormalizeByVolumed, intensity_transforms
from medseg.data.keys import IMAGE, LABEL
from medseg.data.loading import (
    LoadImage2Dd,
    LoadVolumed,
    adapt_channels_2d,
    binarise_mask_2d,
    channel_plan,
    labels_to_classes,
    mask_classes_2d,
)
from medseg.errors import MedsegError, fail, find_user_error

__all__ = [  # the loaders and intensity steps live in their own modules; their names are importable from here too
    "CheckRanged",
    "CropNonzerod",
    "Guarded",
    "LoadImage2Dd",
    "LoadVolumed",
    "NormalizeByVolumed",
    "adapt_channels_2d",
    "binarise_mask_2d",
    "channel_plan",
    "deterministic_transforms",
    "labels_to_classes",
    "mask_classes_2d",
    "random_transforms",
    "train_transforms",
    "val_transforms",
]


def _nonzero(x):
    return x != 0


class SpacingByChanneld(MapTransform):
    """MONAI's ``Spacingd``, one channel at a time: it samples in float64, and a float64 copy of a whole
    two-modality 512x512x300 input (1.3 GB) was the peak of a whole ``medseg infer``. Channels are resampled
    independently either way, so the values are MONAI's own, bit for bit."""

    def __init__(self, keys, pixdim, mode):
        super().__init__(keys)
        self.spacing = {k: Spacingd(keys=[k], pixdim=pixdim, mode=m) for k, m in zip(self.keys, mode)}

    def __call__(self, data):
        d = dict(data)
        for key in self.key_iterator(d):
            img, spacing = d[key], self.spacing[key]
            if img.shape[0] == 1:
                d[key] = spacing({key: img})[key]
                continue
            parts = [spacing({key: img[c : c + 1]})[key] for c in range(img.shape[0])]
            d[key] = torch.cat(parts)
        return d


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


def deterministic_transforms(
    cfg: Config, with_label: bool = True, for_training: bool = True, patches: bool = True
) -> Compose:
    """Load -> validate -> (2D: resize; 3D: orient, resample) -> normalise -> (3D: crop) -> plain tensors.

    ``patches``: with ``train.patch_size``, pad each case to a patch and index its foreground for the draws. The
    training cases only: validation scores whole images, unpadded, with sliding windows."""
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
                instances=cfg.instances,
                values=cfg.value_classes,
            )
        ]
        if p.spatial_size:
            ts.append(Resized(keys=IMAGE, spatial_size=p.spatial_size, mode="area"))
            if with_label:
                ts.append(Resized(keys=LABEL, spatial_size=p.spatial_size, mode="nearest"))
        ts += intensity_transforms(cfg)
        if for_training and with_label and patches and cfg.train.patch_size:
            ts += patch_sources(cfg)
    else:
        ts = [LoadVolumed(n_ch, k, keys=keys, instances=cfg.instances, values=cfg.value_classes)]
        if p.orientation:
            # labels as MONAI defaults them today; left out, MONAI warns on every 3D command that the default changes
            ts.append(Orientationd(keys=keys, axcodes=p.orientation, labels=(("L", "R"), ("P", "A"), ("I", "S"))))
        if p.spacing:
            ts.append(SpacingByChanneld(keys=keys, pixdim=p.spacing, mode=("bilinear", "nearest")[: len(keys)]))
        if p.crop_foreground:  # same box in training, validation and inference (inference pads back)
            ts.append(CropNonzerod(keys=keys, source_key=IMAGE, margin=4))
        ts += intensity_transforms(cfg)
        if for_training and with_label and patches and cfg.train.patch_size:
            ts += patch_sources(cfg)
    if for_training:
        ts.append(EnsureTyped(keys=keys, dtype=torch.float32, track_meta=False))
    return Compose(ts)


def patch_sources(cfg: Config) -> list:
    """Before patches are drawn (and cached with the case): every image padded to at least a patch, and where its
    foreground and background lie, so each draw picks a centre without searching the label again."""
    return [
        SpatialPadd(keys=[IMAGE, LABEL], spatial_size=cfg.train.patch_size),
        FgBgToIndicesd(keys=LABEL, fg_postfix="_fg", bg_postfix="_bg", image_key=IMAGE, image_threshold=-1e9),
    ]


def flip_axes(cfg: Config) -> list[int]:
    """The spatial axes random flips and test-time flips use: ``augment.flip_axes``, else every axis (a photo of
    people has an up and a down; a microscope slide has none)."""
    axes, dims = cfg.augment.flip_axes, cfg.data.spatial_dims
    if axes is not None and max(axes) >= dims:
        raise MedsegError(
            f"augment.flip_axes {list(axes)} names an axis a {dims}D image lacks; fix: use axes from 0 to {dims - 1}"
        )
    return list(range(dims)) if axes is None else list(axes)


def random_transforms(cfg: Config) -> Compose:
    """Foreground-aware patch sampling (with ``train.patch_size``), then augmentation from ``cfg.augment``."""
    a, dims = cfg.augment, cfg.data.spatial_dims
    keys = [IMAGE, LABEL]
    ts = []
    if cfg.train.patch_size:
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
        ts += [RandFlipd(keys=keys, prob=a.flip_prob, spatial_axis=ax) for ax in flip_axes(cfg)]
    if a.rot90_prob > 0:
        ts.append(RandRotate90d(keys=keys, prob=a.rot90_prob, spatial_axes=(0, 1)))
    if a.affine_prob > 0:
        ts.append(random_affine(cfg, keys))
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


def random_affine(cfg: Config, keys: list[str]) -> RandAffined:
    """Rotation and scaling, plus shift and shear when the config asks for them (the Keras U-Net's augmentation)."""
    a, dims = cfg.augment, cfg.data.spatial_dims
    rot = math.radians(a.rotate_deg)
    extra = {}
    # a range of 0 still draws a random number: pass shift and shear only when set, so that configs without them
    # draw (and augment) exactly as before
    if a.shift_range:
        size = cfg.train.patch_size or cfg.preprocess.spatial_size  # what the network sees; rules.py requires one
        extra["translate_range"] = [a.shift_range * s for s in size]
    if a.shear_range:
        extra["shear_range"] = [a.shear_range] * (2 if dims == 2 else 6)  # one factor per axis pair
    return RandAffined(
        keys=keys,
        prob=a.affine_prob,
        rotate_range=[rot] if dims == 2 else [rot, rot, rot],
        scale_range=[a.scale_range] * dims,
        mode=("bilinear", "nearest"),
        padding_mode=a.affine_padding,
        **extra,
    )


def train_transforms(cfg: Config) -> Compose:
    """Cached deterministic part (guarded) followed by the random part."""
    return Compose(
        [Guarded(deterministic_transforms(cfg)), *random_transforms(cfg).transforms, SelectItemsd(keys=[IMAGE, LABEL])]
    )


def val_transforms(cfg: Config) -> Compose:
    """Deterministic part only; items keep ``image_meta`` (validation reads only image and label)."""
    return Compose([Guarded(deterministic_transforms(cfg, patches=False))])
