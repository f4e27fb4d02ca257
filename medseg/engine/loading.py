"""The training data: a recipe's cases, the split, the (cached) datasets, and the loader with its sampler."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from medseg.config import Config
from medseg.data import IMAGE, LABEL, load_samples
from medseg.data.base import recipe_or_default
from medseg.data.splits import make_split, select
from medseg.data.transforms import train_transforms, val_transforms
from medseg.engine.distributed import share_of
from medseg.engine.run_folder import write_run_start
from medseg.errors import MedsegError
from medseg.log import get_logger
from medseg.parallel import DistInfo
from medseg.runtime import usable_cpus

log = get_logger(__name__)


@dataclass
class TrainingData:
    """What a run trains and validates on: this rank's datasets, the split, and the run-wide sample counts."""

    train_ds: object
    val_ds: object
    train_samples: list
    val_samples: list
    split: dict
    n_train: int  # training samples of the whole run (all ranks)
    started: float  # when building the datasets began (time.time()): the run's duration counts from here


def load_training_data(
    cfg: Config, data_dir, run_dir: Path, resume: bool, info: DistInfo, augmented: bool = True
) -> TrainingData:
    """Read the recipe's cases, split them (a resumed run keeps its split.json), and build the datasets
    (``augmented=False``: no augmented training dataset, ``train_ds`` is None; a parameter search reads its images
    itself)."""
    result = load_samples(cfg.data.recipe, data_dir, {**cfg.data.options, "channels": cfg.data.channels})
    for w in result.warnings[:10]:
        log.warning(w)
    if len(result.warnings) > 10:
        log.warning(f"... and {len(result.warnings) - 10} more")
    split = _split(cfg, result.samples, run_dir, resume, info)
    train_samples, val_samples = select(result.samples, split["train"]), select(result.samples, split["val"])
    n_train = len(train_samples)
    train_samples, val_samples = share_of(train_samples, val_samples, cfg.train.seed, info)
    if not val_samples:
        log.warning("no validation cases; the best checkpoint will track the training loss instead")
    log.info(
        f"{cfg.name}: {n_train} training and {len(val_samples)} validation samples ({split['method']}) -> {run_dir}"
    )
    t0 = time.time()
    train_ds, val_ds = _datasets(cfg, train_samples if augmented else [], val_samples)
    train_ds = train_ds if augmented else None
    _check_batchable(cfg, train_ds, train_samples)
    log.info(f"data ready in {time.time() - t0:.1f}s")
    return TrainingData(train_ds, val_ds, train_samples, val_samples, split, n_train, t0)


def _check_batchable(cfg: Config, train_ds, samples: list) -> None:
    """2D images go into a batch as they are when neither ``preprocess.spatial_size`` nor ``train.patch_size`` is
    set, so they must share one size (and be square if a quarter turn may swap their sides), unless each batch holds
    one. Checked on the cache (``train.cache``, the default), before the first batch would fail inside the loader's
    thread with PyTorch's stacking error; without a cache that error is what the user sees."""
    if cfg.data.spatial_dims != 2 or cfg.preprocess.spatial_size or cfg.train.patch_size or cfg.train.batch_size < 2:
        return
    sizes: dict[tuple, object] = {}
    for item, sample in zip(getattr(train_ds, "_cache", None) or [], samples):
        sizes.setdefault(tuple(int(v) for v in item[IMAGE].shape[1:]), sample[IMAGE])
    turned = cfg.augment.rot90_prob > 0 and any(h != w for h, w in sizes)
    if len(sizes) < 2 and not turned:
        return
    shown = ", ".join(f"{h}x{w} ({Path(str(f)).name})" for (h, w), f in list(sizes.items())[:3])
    why = "differ in size" if len(sizes) > 1 else "are not square and augment.rot90_prob turns them"
    raise MedsegError(
        f"the training images {why}: {shown}, and neither preprocess.spatial_size nor train.patch_size is set; "
        "fix: set preprocess.spatial_size (e.g. [256, 256]) to resize them, or train.patch_size to train on patches "
        "at their own resolution"
    )


def _split(cfg: Config, samples: list, run_dir: Path, resume: bool, info: DistInfo) -> dict:
    if resume and (run_dir / "split.json").is_file():
        return json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    split = make_split(samples, cfg.data.split, recipe_or_default(cfg.data.recipe))  # the recipe's groups and strata
    if info.main:
        write_run_start(run_dir, split, cfg)
    return split


def _datasets(cfg: Config, train_samples: list, val_samples: list):
    from monai.data import Dataset

    from medseg.data.cache import CaseCache  # stops its loading threads when a case fails

    if not cfg.train.cache:
        return Dataset(train_samples, train_transforms(cfg)), (
            Dataset(val_samples, val_transforms(cfg)) if val_samples else []
        )
    # MONAI's own bar is unnamed ("Loading dataset") and redraws with carriage returns: one line instead
    log.info(f"caching {len(train_samples)} training and {len(val_samples)} validation samples...")
    kw = {"cache_rate": 1.0, "num_workers": min(4, usable_cpus()), "progress": False}
    train_ds = CaseCache(train_samples, train_transforms(cfg), **kw)
    return train_ds, CaseCache(val_samples, val_transforms(cfg), **kw) if val_samples else []


def training_loader(cfg: Config, data: TrainingData, batch: int, generator):
    """The loader of this rank's training batches, oversampling slices with foreground where the config asks."""
    weights = None
    if cfg.data.spatial_dims == 2 and cfg.train.pos_slice_fraction is not None:
        flags = _has_foreground(data.train_ds, data.train_samples, cfg.num_classes, cfg.value_classes)
        weights = positive_weights(flags, cfg.train.pos_slice_fraction)
        log.info(
            f"{sum(flags)} of {len(flags)} training samples have foreground; drawn as "
            f"{cfg.train.pos_slice_fraction:.0%} of each epoch"
            if weights
            else "positive-slice oversampling not needed"
        )
    return make_loader(data.train_ds, batch, cfg.train.num_workers, generator, weights)


def make_loader(ds, batch: int, num_workers: int, generator, weights=None):
    """Shuffled batches, or with ``weights`` batches drawn with replacement in proportion to them (one epoch is
    still ``len(ds)`` samples). With no worker processes, a background thread prefetches the next batch
    (augmentation overlaps the training step: MONAI's ThreadDataLoader); with workers, a multi-process DataLoader."""
    from monai.data import DataLoader, ThreadDataLoader
    from torch.utils.data import WeightedRandomSampler

    common = {"batch_size": batch, "drop_last": len(ds) > batch, "generator": generator}
    if weights is not None:
        common["sampler"] = WeightedRandomSampler(weights, len(ds), replacement=True, generator=generator)
    else:
        common["shuffle"] = True
    if num_workers == 0:
        return ThreadDataLoader(ds, buffer_size=2, num_workers=0, **common)
    return DataLoader(ds, num_workers=num_workers, persistent_workers=True, **common)


def positive_weights(has_fg: list[bool], pos_fraction: float | None) -> list[float] | None:
    """Sampling weights that make ``pos_fraction`` of the drawn samples ones with foreground (None: no reweighting,
    also when every or no sample has foreground)."""
    if pos_fraction is None:
        return None
    if not 0 < pos_fraction < 1:
        raise MedsegError(f"train.pos_slice_fraction must be between 0 and 1, not {pos_fraction}; fix: e.g. 0.5")
    n_pos = sum(has_fg)
    n_neg = len(has_fg) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    return [pos_fraction / n_pos if f else (1 - pos_fraction) / n_neg for f in has_fg]


def _has_foreground(ds, samples: list[dict], num_classes: int = 2, values: dict | None = None) -> list[bool]:
    """Whether each training sample's mask has foreground: from the cache when there is one, else by reading it
    (through ``data.label_values`` when the config has them, so a value dropped into background is not foreground)."""
    cache = getattr(ds, "_cache", None)
    if cache and len(cache) == len(samples) and all(isinstance(c, dict) and LABEL in c for c in cache):
        return [bool(torch.as_tensor(c[LABEL]).any()) for c in cache]
    from medseg.data.transforms import mask_classes_2d
    from medseg.io import read_image_2d

    return [
        bool(mask_classes_2d(read_image_2d(s[LABEL], kind="mask"), num_classes, s[LABEL], values).any())
        for s in samples
    ]
