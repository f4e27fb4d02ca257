"""MONAI's UNet, with an optional wider top and output convolution (``model.head``) and deep supervision
(``model.deep_supervision``)."""

from __future__ import annotations

from torch import nn

from medseg.models.arguments import check_keywords, check_levels, check_norm
from medseg.models.supervision import DeepSupervised, Tap, check_supervised_levels


class _WithHead(nn.Sequential):
    """A network that ends in ``width`` feature channels followed by a 1x1 convolution to the output channels."""

    def __init__(self, body: nn.Module, width: int, out_channels: int, spatial_dims: int):
        conv = (nn.Conv2d if spatial_dims == 2 else nn.Conv3d)(width, out_channels, kernel_size=1)
        super().__init__(body, conv)


def _deep_supervised(net: nn.Module, channels, levels: int, out_channels: int, spatial_dims: int) -> DeepSupervised:
    """A MONAI UNet whose decoder is also read out at the ``levels`` resolutions below the top (nnU-Net's deep
    supervision): each of those decoder blocks is tapped and gets its own 1x1 output convolution."""
    check_supervised_levels(levels, len(channels))
    taps: list[Tap] = []
    unet = net[0] if isinstance(net, _WithHead) else net
    block = unet.model  # MONAI builds Sequential(down, SkipConnection(next level), up) recursively
    for _ in range(levels):
        block = block[1].submodule
        block[2] = Tap(block[2])
        taps.append(block[2])
    return DeepSupervised(net, taps, [channels[k] for k in range(levels)], out_channels, spatial_dims)


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
    ``deep_supervision=n`` adds output convolutions on the n decoder levels below the top (:func:`_deep_supervised`)."""
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
        return _deep_supervised(net, channels, int(deep_supervision), out_channels, spatial_dims)
    return net


def check(kwargs: dict) -> None:
    """What :func:`build` would refuse, found without building: the levels, the normalisation, deep supervision's
    depth and any argument MONAI's UNet does not take."""
    from monai.networks.nets import UNet

    check_levels(kwargs["channels"], kwargs["strides"])
    check_norm(kwargs.get("norm", "instance"), kwargs["spatial_dims"])
    levels = int(kwargs.get("deep_supervision") or 0)
    if levels:
        check_supervised_levels(levels, len(kwargs["channels"]))
    own = {"head", "deep_supervision"}
    check_keywords(UNet, **{k: v for k, v in kwargs.items() if k not in own})
