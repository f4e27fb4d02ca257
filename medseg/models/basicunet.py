"""MONAI's BasicUNet: a plain U-Net of five levels that downsamples four times by max pooling."""

from __future__ import annotations

from medseg.models.arguments import check_keywords, check_norm

_UNUSED = ("num_res_units", "strides")  # model keys every config carries that this network has no use for


def _arguments(kwargs: dict) -> dict:
    """BasicUNet's own names: ``features`` are the five levels' widths plus the top decoder's, which repeats the
    first level's when ``model.channels`` gives five."""
    args = {k: v for k, v in kwargs.items() if k not in _UNUSED and k != "channels"}
    channels = list(kwargs["channels"])
    args["features"] = channels + [channels[0]] if len(channels) == 5 else channels
    return args


def build(**kwargs):
    from monai.networks.nets import BasicUNet

    return BasicUNet(**_arguments(kwargs))


def check(kwargs: dict) -> None:
    from monai.networks.nets import BasicUNet
    from monai.utils import ensure_tuple_rep

    args = _arguments(kwargs)
    ensure_tuple_rep(args["features"], 6)  # BasicUNet's own test of the widths, and its words
    check_norm(args.get("norm", "instance"), args["spatial_dims"])
    check_keywords(BasicUNet, **args)
