"""Checks of a config against the model, loss and schedule it builds, before any data are read."""

import math

import torch

from medseg.config import Config
from medseg.errors import MedsegError
from medseg.models import build_model, model_spec, size_divisor


def check_config(cfg: Config) -> None:
    from medseg.engine.losses import build_loss
    from medseg.engine.train import _lr_lambda, build_ema, build_optimizer, positive_weights

    spec = model_spec(cfg)
    div = size_divisor(spec)
    for name, size in (
        ("preprocess.spatial_size", cfg.preprocess.spatial_size),
        ("train.patch_size", cfg.train.patch_size),
        ("infer.roi_size", cfg.infer.roi_size),
    ):
        if size and any(int(s) % div for s in size):
            fixed = [int(math.ceil(int(s) / div) * div) for s in size]
            raise MedsegError(
                f"{name} {list(size)} must be a multiple of {div} (the model's total stride); fix: use {fixed}"
            )
    if cfg.data.spatial_dims not in (2, 3):
        raise MedsegError(f"data.spatial_dims must be 2 or 3, not {cfg.data.spatial_dims}")
    if cfg.data.context_slices < 0 or (cfg.data.context_slices and cfg.data.spatial_dims != 2):
        raise MedsegError(
            f"data.context_slices {cfg.data.context_slices} applies to 2D slices only and must be >= 0; "
            "fix: 0 (no context), or 1-2 for slices of a volume (e.g. lgg)"
        )
    for name, rng, top in (
        ("augment.blur_sigma", cfg.augment.blur_sigma, None),
        ("augment.lowres_zoom", cfg.augment.lowres_zoom, 1.0),
    ):
        ok = isinstance(rng, (list, tuple)) and len(rng) == 2 and all(isinstance(v, (int, float)) for v in rng)
        if not ok or not 0 < rng[0] <= rng[1] or (top is not None and rng[1] > top):
            raise MedsegError(
                f"{name} {rng} must be [low, high] with 0 < low <= high{' <= 1' if top else ''}; fix: e.g. {[0.5, 1.0]}"
            )
    if len(cfg.model.strides) != len(cfg.model.channels) - 1 and cfg.model.name in ("unet", "attention_unet"):
        raise MedsegError(
            "model.strides must have one entry fewer than model.channels; fix: e.g. channels [16,32,64], strides [2,2]"
        )
    # Build what training builds from the config alone, before any data is read or cached: the model on PyTorch's
    # meta device (shapes only: no memory, no weight initialisation, so no seeded random number is drawn and seeded
    # runs train bit-identically), its optimiser, the schedule, weight averaging, the loss and the sampling weights.
    try:
        with torch.device("meta"):
            net = build_model(spec)
    except (RuntimeError, NotImplementedError):  # a registered model that computes with tensor values while being built
        net = torch.nn.Linear(1, 1, device="meta")  # the real build, after the data work, will judge it
    build_optimizer(cfg, net.parameters())
    build_ema(net, cfg.train.ema)
    _lr_lambda(cfg, 1, 1)
    build_loss(cfg)
    positive_weights([True, False], cfg.train.pos_slice_fraction)
