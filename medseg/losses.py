"""Loss construction: Dice+BCE for binary tasks, Dice+CE for multi-class."""

from __future__ import annotations

import torch.nn as nn
from monai.losses import DeepSupervisionLoss, DiceCELoss

from .config import Config


def build_loss(cfg: Config) -> nn.Module:
    """Return a loss taking ``logits (B, K, ...)`` and ``label (B, 1, ...)`` class indices.

    Binary: one sigmoid channel, soft Dice + BCE-with-logits.
    Multi-class: softmax over K channels, soft Dice (background excluded unless
    ``loss.include_background``) + cross-entropy.
    ``loss.batch_dice`` pools the Dice terms over the batch (nnU-Net's "batch Dice"): a slice with an empty mask
    then no longer contributes a near-maximal Dice loss of its own, which matters when most slices are empty.
    With ``model.deep_supervision`` the network returns ``[full, 1/2, 1/4, ...]`` logits in training mode, and the
    loss is MONAI's ``DeepSupervisionLoss`` around the above: weights 1, 0.5, 0.25, labels nearest-downsampled.
    """
    lc = cfg.train.loss
    if cfg.binary:
        loss = DiceCELoss(sigmoid=True, lambda_dice=lc.dice_weight, lambda_ce=lc.ce_weight, smooth_nr=1e-5,
                          smooth_dr=1e-5, batch=lc.batch_dice)
    else:
        loss = DiceCELoss(softmax=True, to_onehot_y=True, include_background=lc.include_background,
                          lambda_dice=lc.dice_weight, lambda_ce=lc.ce_weight, smooth_nr=1e-5, smooth_dr=1e-5,
                          batch=lc.batch_dice)
    return DeepSupervisionLoss(loss, weight_mode="exp") if cfg.model.deep_supervision else loss
