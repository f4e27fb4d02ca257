"""Optimiser, learning-rate schedule and weight averaging (EMA) for training."""

from __future__ import annotations

import math

import torch

from medseg.config import Config
from medseg.errors import MedsegError


def build_optimizer(cfg: Config, params):
    """``train.optimizer`` over ``params``: AdamW, Adam, or SGD with nnU-Net's Nesterov momentum 0.99."""
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.99, nesterov=True, weight_decay=t.weight_decay)
    raise MedsegError(f"train.optimizer '{t.optimizer}' is unknown; fix: use adamw, adam or sgd")


def parameter_groups(cfg: Config, net: torch.nn.Module) -> list[dict]:
    """The network's parameters for the optimiser: one group, or with ``train.encoder_lr_scale`` the decoder and
    head at ``train.lr`` first, then the encoder at ``lr x scale`` (discriminative rates: a pretrained encoder
    moves less). The schedule scales both groups alike."""
    scale = cfg.train.encoder_lr_scale
    if scale == 1.0:
        return [{"params": list(net.parameters())}]
    from medseg.models.pretrained import find_encoder

    encoder = {id(p) for p in find_encoder(net).parameters()}
    rest = [p for p in net.parameters() if id(p) not in encoder]
    mine = [p for p in net.parameters() if id(p) in encoder]
    return [{"params": rest}, {"params": mine, "lr": cfg.train.lr * scale}]


def may_idle(cfg: Config, net: torch.nn.Module) -> bool:
    """Whether a training step may leave parameters without a gradient: a frozen encoder's, or the deeper blocks
    of an encoder below a shallower decoder. Any network with an encoder is taken to (it costs DDP a graph walk
    per step, against a hang)."""
    if cfg.train.freeze_encoder_epochs:
        return True
    from medseg.models.pretrained import find_encoder

    try:
        find_encoder(net)
    except MedsegError:
        return False
    return True


def freeze_encoder(net: torch.nn.Module, frozen: bool) -> None:
    """Stop (or restart) the encoder's weights learning: ``train.freeze_encoder_epochs`` trains the new decoder
    first, so its random start does not push large gradients into pretrained weights. Running norm statistics
    keep updating, as in fastai's and Keras' fine-tuning."""
    from medseg.models.pretrained import find_encoder

    for p in find_encoder(net).parameters():
        p.requires_grad_(not frozen)


def lr_lambda(cfg: Config, total_steps: int, steps_per_epoch: int):
    """The learning-rate factor at each training step: linear warm-up over ``train.warmup_epochs``, then
    ``train.scheduler`` over the remaining steps."""
    warm = cfg.train.warmup_epochs * steps_per_epoch
    kind = cfg.train.scheduler
    if kind not in ("cosine", "poly", "constant"):
        raise MedsegError(f"train.scheduler '{kind}' is unknown; fix: use cosine, poly or constant")

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        if kind == "cosine":
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "poly":
            return max(0.0, 1 - t) ** 0.9
        return 1.0

    return f


def build_schedule(cfg: Config, optimizer, steps_per_epoch: int):
    """Warm-up, then cosine (to 2% of ``train.lr``), poly or constant, stepped once per training step.

    A LambdaLR over :func:`lr_lambda` rather than torch's LinearLR/CosineAnnealingLR chained by SequentialLR: those
    update the rate multiplicatively from the previous step's value (their "chainable" form), which drifts from
    the closed form by float rounding, so a run's learning rates, and with them its weights, would change in
    the last bits; the closed form also keeps a resumed run's rates identical to an uninterrupted one's."""
    total_steps = cfg.train.epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(cfg, total_steps, steps_per_epoch))


def build_ema(net: torch.nn.Module, decay: float | None):
    """An exponential moving average of ``net``'s weights (PyTorch's ``AveragedModel``), or None.

    Small medical sets give a noisy last epoch; the average over the last ~1/(1-decay) steps is smoother.
    Buffers are averaged too, so a model with running statistics stays consistent.
    """
    if decay is None:
        return None
    if not 0.0 < float(decay) < 1.0:
        raise MedsegError(f"train.ema {decay} must be a decay between 0 and 1; fix: e.g. 0.99, or null to turn it off")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    ema.module.eval()
    return ema
