"""MONAI's SegResNet: a residual encoder with a light decoder (Myronenko 2018); ``model.channels[0]`` is its
first level's width."""

from __future__ import annotations

from medseg.models.arguments import check_keywords

_UNUSED = ("num_res_units", "norm", "strides", "channels", "dropout")  # replaced by SegResNet's own names below


def _arguments(kwargs: dict) -> dict:
    args = {k: v for k, v in kwargs.items() if k not in _UNUSED}
    return {**args, "init_filters": kwargs["channels"][0], "dropout_prob": kwargs.get("dropout") or None}


def build(**kwargs):
    from monai.networks.nets import SegResNet

    return SegResNet(**_arguments(kwargs))


def check(kwargs: dict) -> None:
    from monai.networks.nets import SegResNet

    check_keywords(SegResNet, **_arguments(kwargs))
