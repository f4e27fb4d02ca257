"""SegNet (Badrinarayanan, Kendall and Cipolla, TPAMI 2017): an encoder-decoder without skip connections whose
decoder upsamples with the max-pooling indices of the encoder, so boundaries return to where the encoder found them
while only the indices, not whole feature maps, are kept. ``model.dropout`` is the Bayesian SegNet's (Kendall et
al. 2017), after each decoder block."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from medseg.models.arguments import check_keywords, check_levels, check_norm
from medseg.models.supervision import check_supervised_levels


def _block(spatial_dims: int, widths: list[int], norm) -> nn.Sequential:
    """Convolutions 3x3 + norm + ReLU from ``widths[0]`` through each later width in turn (a VGG block)."""
    from monai.networks.blocks import Convolution

    return nn.Sequential(
        *(Convolution(spatial_dims, a, b, kernel_size=3, act="relu", norm=norm) for a, b in pairwise(widths))
    )


class SegNet(nn.Module):
    """Encoder levels of ``channels`` (top first), a max pool of 2 between each two, and a mirrored decoder.

    Encoder level ``i`` is ``convs`` convolutions to ``channels[i]``; decoder level ``i`` is ``convs`` convolutions
    from ``channels[i]`` ending at the width of the level above (``top`` for the top level), so that its output can
    be unpooled with the indices of that level's pool. The deepest level has no pool: its encoder and decoder blocks
    run back to back. ``forward`` returns raw logits from a 1x1 convolution; with ``supervised`` levels it returns
    ``[full, 1/2, 1/4, ...]`` in training mode, as :mod:`medseg.models.unet` does."""

    def __init__(self, spatial_dims, in_channels, out_channels, channels, convs, dropout, norm, top, supervised):
        super().__init__()
        pool, unpool, conv = {
            2: (nn.MaxPool2d, nn.MaxUnpool2d, nn.Conv2d),
            3: (nn.MaxPool3d, nn.MaxUnpool3d, nn.Conv3d),
        }[spatial_dims]
        channels = list(channels)
        above = [top] + channels[:-1]  # the width each decoder level hands up
        self.encoder = nn.ModuleList(
            _block(spatial_dims, [w0] + [w] * convs, norm) for w0, w in zip([in_channels] + channels, channels)
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(
                _block(spatial_dims, [w] * convs + [up], norm), *([nn.Dropout(dropout)] if dropout > 0 else [])
            )
            for w, up in zip(channels, above)
        )
        self.pools = nn.ModuleList(pool(2, 2, return_indices=True) for _ in channels[1:])
        self.unpools = nn.ModuleList(unpool(2, 2) for _ in channels[1:])
        self.out = conv(top, out_channels, kernel_size=1)
        self.heads = nn.ModuleList(conv(above[k], out_channels, kernel_size=1) for k in range(1, supervised + 1))

    def forward(self, x):
        saved = []
        for i, block in enumerate(self.encoder):
            x = block(x)
            if i < len(self.pools):
                size = x.shape[2:]  # unpooling to it restores odd sides, which pooling rounded down
                x, idx = self.pools[i](x)
                saved.append((idx, size))
        feats = []
        for i in reversed(range(len(self.decoder))):
            x = self.decoder[i](x)
            if i == 0:
                break
            feats.append(x)
            idx, size = saved[i - 1]
            if torch.jit.is_tracing():  # a traced size is a tensor, which max_unpool refuses: fixed to this input's
                size = [int(v) for v in size]
            x = self.unpools[i - 1](x, idx, output_size=size)
        out = self.out(x)
        if not self.training or not self.heads:
            return out
        feats.reverse()  # from the level below the top downwards: 1/2, 1/4, ...
        return [out] + [head(f) for head, f in zip(self.heads, feats)]


def build(
    spatial_dims,
    in_channels,
    out_channels,
    channels,
    strides,
    num_res_units=2,
    dropout=0.0,
    norm="batch",
    head=False,
    deep_supervision=0,
) -> nn.Module:
    """SegNet. ``num_res_units`` is the number of convolutions per block (SegNet's VGG blocks have 2 or 3; there
    are no residual units). ``strides`` must all be 2, one max pool per level below the top. ``head`` is the width
    of the top decoder block (an int), or ``channels[0]`` when false or true: SegNet always ends in a 1x1
    convolution. ``deep_supervision=n`` also reads out the n decoder levels below the top in training mode."""
    _validate(spatial_dims, channels, strides, num_res_units, dropout, norm, head, deep_supervision)
    return SegNet(
        spatial_dims,
        in_channels,
        out_channels,
        channels,
        int(num_res_units),
        float(dropout),
        norm,
        _top_width(head, channels),
        int(deep_supervision or 0),
    )


def check(kwargs: dict) -> None:
    """What :func:`build` would refuse, found without building: an unknown or missing argument, the levels and
    strides, the normalisation, the block depth, the dropout rate, the head and deep supervision's depth."""
    check_keywords(build, **kwargs)
    defaults = {"num_res_units": 2, "dropout": 0.0, "norm": "batch", "head": False, "deep_supervision": 0}
    args = {**defaults, **kwargs}
    _validate(*(args[k] for k in ("spatial_dims", "channels", "strides", *defaults)))


def _validate(spatial_dims, channels, strides, num_res_units, dropout, norm, head, deep_supervision) -> None:
    if spatial_dims not in (2, 3):
        raise ValueError(f"segnet is 2D or 3D, not spatial_dims {spatial_dims}")
    check_levels(channels, strides)
    if any(s != 2 for s in strides):
        fix = [2] * len(strides)
        raise ValueError(f"segnet max-pools by 2 between levels, so model.strides must all be 2; fix: use {fix}")
    check_norm(norm, spatial_dims)
    if int(num_res_units) < 1:
        raise ValueError("segnet needs at least one convolution per block; fix: set model.num_res_units to 2")
    if not 0 <= dropout < 1:
        raise ValueError(f"model.dropout {dropout} must be at least 0 and below 1")
    _top_width(head, channels)
    if deep_supervision:
        check_supervised_levels(int(deep_supervision), len(channels))


def _top_width(head, channels) -> int:
    if head is True or not head:
        return int(channels[0])
    if int(head) < 1:
        raise ValueError(f"model.head {head} must be true, false or a positive width")
    return int(head)
