"""Validation during training: the task's Dice per foreground class on the validation items, and the loss."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from medseg.config import Config
from medseg.data import IMAGE, LABEL
from medseg.inference.predictor import predict_logits
from medseg.tasks import dice_from_counts, task_for


def plain(x) -> torch.Tensor:
    """A tensor without MONAI's metadata (a MetaTensor carries its meta through every operation)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


@dataclass
class Validation:
    """One validation pass: mean Dice per foreground class, the whole-foreground Dice (all foreground classes as
    one; for a multi-class task the BraTS "whole tumour"), the mean loss (None without a loss function) and the
    example for the image panel."""

    dice: np.ndarray
    dice_whole: float
    loss: float | None
    example: dict | None


class _Tally:
    """Counts pooled per key (a volume's slices share one), the loss sum, and the item with the most foreground."""

    def __init__(self, task):
        self.task = task
        self.counts: dict = {}
        self.whole: dict = {}
        self.loss_sum, self.n_items = 0.0, 0
        self.example, self.best_fg = None, -1

    def add(self, key, img: torch.Tensor, lab: torch.Tensor, pred: torch.Tensor) -> None:
        p, g = pred.numpy(), lab.numpy()
        self.counts[key] = self.counts.get(key, 0) + self.task.class_counts(p, g)
        whole = self.task.whole_counts(p, g)
        if whole is not None:
            self.whole[key] = self.whole.get(key, 0) + whole
        fg = int((lab > 0).sum())
        if fg > self.best_fg:
            self.best_fg, self.example = fg, {"image": img.cpu().numpy(), "label": g[0], "pred": p[0]}

    def result(self) -> Validation:
        dice = np.mean([[dice_from_counts(*row) for row in c] for c in self.counts.values()], axis=0)
        # without whole-foreground counts (binary) the one foreground class is the whole foreground
        whole = float(np.mean([dice_from_counts(*c) for c in self.whole.values()])) if self.whole else float(dice[0])
        return Validation(dice, whole, self.loss_sum / self.n_items if self.n_items else None, self.example)


@torch.no_grad()
def validate(model, val_ds, cfg: Config, device: torch.device, loss_fn=None) -> Validation:
    """Score ``model`` on the validation items: see :class:`Validation`.

    Items that carry a ``volume_id`` (LGG slices) are pooled per volume first, so the score is per patient, the
    way ``medseg evaluate`` and Buda et al. score it, rather than per slice with empty slices counting as perfect.
    The loss is the training loss on the whole validation images, averaged over items.
    """
    model.eval()
    tally = _Tally(task_for(cfg))
    for group in _groups(val_ds, cfg):
        _score(model, group, cfg, device, loss_fn, tally)
    return tally.result()


def _groups(val_ds, cfg: Config):
    """``(index, item)`` lists that go through the model together: 2D items of one size a training batch at a time
    (one slice at a time spent most of its time in per-call overhead); 3D volumes one at a time, each through the
    sliding window."""
    per_call = max(1, cfg.train.batch_size) if cfg.data.spatial_dims == 2 else 1
    pending: list = []
    for i, item in enumerate(val_ds):
        if pending and (len(pending) == per_call or pending[0][1][IMAGE].shape != item[IMAGE].shape):
            yield pending
            pending = []
        pending.append((i, item))
    if pending:
        yield pending


def _score(model, group: list, cfg: Config, device: torch.device, loss_fn, tally: _Tally) -> None:
    imgs = torch.stack([plain(item[IMAGE]) for _i, item in group]).to(device)
    logits = predict_logits(model, imgs, cfg, device)
    if loss_fn is not None:
        labs = torch.stack([plain(item[LABEL]) for _i, item in group]).to(logits.device)
        tally.loss_sum += float(loss_fn(logits, labs)) * len(group)
        tally.n_items += len(group)
    preds = tally.task.logits_to_labels(logits).cpu()
    for (i, item), img, pred in zip(group, imgs, preds):
        key = item.get("volume_id", i) if isinstance(item, dict) else i
        tally.add(key, img, plain(item[LABEL]), pred)
