"""Deep supervision for any decoder: taps that keep chosen blocks' outputs in training, and 1x1 output convolutions
that score them (nnU-Net's deep supervision)."""

from __future__ import annotations

import torch
from torch import nn


class Tap(nn.Module):
    """Runs ``block`` and, in training mode, keeps its output for :class:`DeepSupervised` to read. A tap is a
    submodule, not a hook, so copies such as the weight average of ``train.ema`` keep their own."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.kept: torch.Tensor | None = None

    def forward(self, *args, **kwargs):
        y = self.block(*args, **kwargs)
        self.kept = y if self.training else None
        return y


class DeepSupervised(nn.Module):
    """``net`` whose ``taps`` (decoder blocks at 1/2, 1/4, ... of the input resolution, in that order, of
    ``widths`` feature maps) each get a 1x1 convolution to the output channels. In training mode ``forward``
    returns ``[full, 1/2, 1/4, ...]`` logits, which :class:`monai.losses.DeepSupervisionLoss` scores against
    nearest-downsampled labels; in evaluation mode only the full-resolution logits, so validation and inference see
    the same network as without it."""

    def __init__(self, net: nn.Module, taps: list[Tap], widths: list[int], out_channels: int, spatial_dims: int):
        super().__init__()
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.net = net
        self.taps = taps  # a plain list: the taps are registered once, inside ``net``
        self.heads = nn.ModuleList(conv(w, out_channels, kernel_size=1) for w in widths)

    def forward(self, x):
        out = self.net(x)
        if not self.training:
            return out
        feats = [tap.kept for tap in self.taps]
        for tap in self.taps:
            tap.kept = None
        return [out] + [head(f) for head, f in zip(self.heads, feats)]


def check_supervised_levels(levels: int, n_levels: int) -> None:
    """Deep supervision reads at most the levels between the top and the bottom of an ``n_levels`` network."""
    if not 1 <= levels <= n_levels - 2:
        raise ValueError(f"deep_supervision must be between 1 and {n_levels - 2} for {n_levels} levels")
