"""Checks of constructor arguments that families share, made without building a network."""

from __future__ import annotations

import inspect

from medseg.errors import MedsegError


def check_keywords(cls, **kwargs) -> None:
    """TypeError when ``cls(**kwargs)`` would fail for an unknown or missing argument (e.g. a typo in
    ``model.extra``), found from its signature alone."""
    try:
        inspect.signature(cls).bind(**kwargs)
    except TypeError as exc:
        raise TypeError(f"{cls.__name__}.__init__() {exc}") from None


def check_norm(norm, spatial_dims: int) -> None:
    """ValueError, in MONAI's words, when MONAI has no normalisation layer of that name."""
    from monai.networks.layers.factories import Norm
    from monai.networks.layers.utils import split_args

    Norm[split_args(norm)[0], spatial_dims]


def check_levels(channels, strides) -> None:
    """An encoder-decoder with one stride between each two levels of ``channels``."""
    if len(strides) != len(channels) - 1:
        raise MedsegError(
            "model.strides must have one entry fewer than model.channels; fix: e.g. channels [16,32,64], strides [2,2]"
        )
    if len(channels) < 2:
        raise ValueError("the length of `channels` should be no less than 2.")
