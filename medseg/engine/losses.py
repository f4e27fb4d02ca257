"""Loss construction: Dice+BCE for binary tasks, Dice+CE for multi-class."""

from __future__ import annotations

from monai.losses import DeepSupervisionLoss, DiceCELoss, TverskyLoss
from torch import nn

from medseg.config import Config
from medseg.errors import MedsegError


def build_loss(cfg: Config) -> nn.Module:
    """Return a loss taking ``logits (B, K, ...)`` and ``label (B, 1, ...)`` class indices.

    Binary: one sigmoid channel, soft Dice + BCE-with-logits.
    Multi-class: softmax over K channels, soft Dice (background excluded unless
    ``loss.include_background``) + cross-entropy.
    ``loss.batch_dice`` pools the Dice terms over the batch (nnU-Net's "batch Dice"): a slice with an empty mask
    then no longer contributes a near-maximal Dice loss of its own, which matters when most slices are empty.
    ``loss.fn_weight`` other than 0.5 replaces the Dice term by MONAI's Tversky loss (Salehi et al. 2017), which
    weighs false negatives by ``fn_weight`` and false positives by ``1 - fn_weight``: above 0.5 it favours recall.
    With ``model.deep_supervision`` the network returns ``[full, 1/2, 1/4, ...]`` logits in training mode, and the
    loss is MONAI's ``DeepSupervisionLoss`` around the above: weights 1, 0.5, 0.25, labels nearest-downsampled.
    """
    lc = cfg.train.loss
    if not 0.0 < lc.fn_weight < 1.0:
        raise MedsegError(
            f"train.loss.fn_weight is {lc.fn_weight}; fix: use a value between 0 and 1 (0.5 = Dice, "
            "0.7 weighs missed foreground more than false alarms)"
        )
    act = (
        {"sigmoid": True}
        if cfg.binary
        else {"softmax": True, "to_onehot_y": True, "include_background": lc.include_background}
    )
    common = dict(smooth_nr=1e-5, smooth_dr=1e-5, batch=lc.batch_dice, **act)
    loss = DiceCELoss(lambda_dice=lc.dice_weight, lambda_ce=lc.ce_weight, **common)
    if lc.fn_weight != 0.5:
        # MONAI has no Tversky+CE pair; DiceCELoss calls its ``dice`` term and adds (B)CE itself, so swapping that
        # term keeps MONAI's target handling and weighting for both halves.
        loss.dice = TverskyLoss(alpha=1.0 - lc.fn_weight, beta=lc.fn_weight, **common)
    return DeepSupervisionLoss(loss, weight_mode="exp") if cfg.model.deep_supervision else loss
