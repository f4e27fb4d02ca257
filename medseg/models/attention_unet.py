"""MONAI's AttentionUnet: a U-Net whose skip connections pass through attention gates."""

from __future__ import annotations

from medseg.models.arguments import check_keywords, check_levels

_UNUSED = ("num_res_units", "norm")  # model keys every config carries that this network has no use for


def _arguments(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _UNUSED}


def build(**kwargs):
    from monai.networks.nets import AttentionUnet

    return AttentionUnet(**_arguments(kwargs))


def check(kwargs: dict) -> None:
    from monai.networks.nets import AttentionUnet

    check_levels(kwargs["channels"], kwargs["strides"])
    check_keywords(AttentionUnet, **_arguments(kwargs))
