"""MONAI's UNet, with an optional wider top and output convolution (``model.head``) and deep supervision
(``model.deep_supervision``)."""

from __future__ import annotations

import torch
from torch import nn

from medseg.models.arguments import check_keywords, check_levels, check_norm


class _WithHead(nn.Sequential):
    """A network that ends in ``width`` feature channels followed by a 1x1 convolution to the output channels."""

    def __init__(self, body: nn.Module, width: int, out_channels: int, spatial_dims: int):
        conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(width, out_channels, kernel_size=1)
        super().__init__(body, conv)


class _Tap(nn.Module):
    """Runs ``block`` and, in training mode, keeps its output for :class:`_DeepSupervised` to read."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.block = block
        self.kept: torch.Tensor | None = None

    def forward(self, x):
        y = self.block(x)
        self.kept = y if self.training else None
        return y


class _DeepSupervised(nn.Module):
    """A MONAI UNet whose decoder is also read out at the ``levels`` resolutions below the top (nnU-Net's deep
    supervision). Each of those decoder blocks gets its own 1x1 convolution to the output channels. In training mode
    ``forward`` returns ``[full, 1/2, 1/4, ...]`` logits, which :class:`monai.losses.DeepSupervisionLoss` scores
    against nearest-downsampled labels; in evaluation mode it returns the full-resolution logits only, so
    validation and inference see the same network as without it. (Taps are submodules, not hooks, so copies such
    as the weight average of ``train.ema`` keep their own.)"""

    def __init__(self, net: nn.Module, channels, levels: int, out_channels: int, spatial_dims: int):
        super().__init__()
        _check_supervised_levels(levels, channels)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.taps: list[_Tap] = []
        unet = net[0] if isinstance(net, _WithHead) else net
        block = unet.model  # MONAI builds Sequential(down, SkipConnection(next level), up) recursively
        for _ in range(levels):
            block = block[1].submodule
            block[2] = _Tap(block[2])
            self.taps.append(block[2])
        self.net = net
        self.heads = nn.ModuleList(conv(channels[k], out_channels, kernel_size=1) for k in range(levels))

    def forward(self, x):
        out = self.net(x)
        if not self.training:
            return out
        feats = [tap.kept for tap in self.taps]
        for tap in self.taps:
            tap.kept = None
        return [out] + [head(f) for head, f in zip(self.heads, feats)]


def build(
    spatial_dims,
    in_channels,
    out_channels,
    channels,
    strides,
    num_res_units=2,
    dropout=0.0,
    norm="instance",
    head=False,
    deep_supervision=0,
    **kw,
):
    """MONAI's UNet. Its top decoder block has only ``out_channels`` feature maps, normalised per image, which
    leaves a binary network one channel wide at full resolution; ``head=True`` keeps ``channels[0]`` maps at the top
    and adds a 1x1 convolution, which learns large, near-empty or near-full masks much faster.
    ``deep_supervision=n`` adds output convolutions on the n decoder levels below the top (:class:`_DeepSupervised`)."""
    from monai.networks.nets import UNet

    width = (channels[0] if head is True else int(head)) if head else out_channels
    unet = UNet(
        spatial_dims=spatial_dims,
        in_channels=in_channels,
        out_channels=width,
        channels=channels,
        strides=strides,
        num_res_units=num_res_units,
        dropout=dropout,
        norm=norm,
        **kw,
    )
    net = _WithHead(unet, width, out_channels, spatial_dims) if head else unet
    if deep_supervision:
        return _DeepSupervised(net, channels, int(deep_supervision), out_channels, spatial_dims)
    return net


def check(kwargs: dict) -> None:
    """What :func:`build` would refuse, found without building: the levels, the normalisation, deep supervision's
    depth and any argument MONAI's UNet does not take."""
    from monai.networks.nets import UNet

    check_levels(kwargs["channels"], kwargs["strides"])
    check_norm(kwargs.get("norm", "instance"), kwargs["spatial_dims"])
    levels = int(kwargs.get("deep_supervision") or 0)
    if levels:
        _check_supervised_levels(levels, kwargs["channels"])
    own = {"head", "deep_supervision"}
    check_keywords(UNet, **{k: v for k, v in kwargs.items() if k not in own})


def _check_supervised_levels(levels: int, channels) -> None:
    if not 1 <= levels <= len(channels) - 2:
        raise ValueError(f"deep_supervision must be between 1 and {len(channels) - 2} for {len(channels)} levels")
