"""The training loss: the task's own (Dice+BCE for binary tasks, Dice+CE for multi-class; see medseg.tasks)."""

from __future__ import annotations

from torch import nn

from medseg.config import Config
from medseg.tasks import task_for


def build_loss(cfg: Config) -> nn.Module:
    """A loss taking ``logits (B, K, ...)`` and ``label (B, 1, ...)`` class indices: :meth:`medseg.tasks.Task.loss`."""
    return task_for(cfg).loss()
