"""The model registry: each family's builder, total stride and argument check, by name.

A family is registered with :func:`register_model` in :mod:`medseg.models` (or by a user's own code). Its builder
takes the constructor arguments of :func:`medseg.models.model_spec` as keywords and returns an ``nn.Module``; its
stride and check read the same arguments, so a config is judged before any network is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn

from medseg.errors import MedsegError


def strides_product(kwargs: dict) -> int:
    """The total stride of an encoder that downsamples by each of ``strides`` in turn (one halving per level
    below the top when no strides are given)."""
    div = 1
    for s in kwargs.get("strides") or [2] * (len(kwargs.get("channels", [])) - 1):
        div *= int(s)
    return max(div, 1)


def accepts_anything(kwargs: dict) -> None:
    """The check of a family that leaves every argument to its builder."""


@dataclass(frozen=True)
class ModelFamily:
    """One kind of network: ``build(**kwargs)`` makes it; ``stride(kwargs)`` is what every input side must be a
    multiple of; ``check(kwargs)`` raises ValueError or TypeError for arguments ``build`` would refuse;
    ``defaults`` are arguments a spec records when the config leaves them out (the encoder), so a checkpoint
    names them; ``trains`` is how ``medseg train`` makes one: ``gradient`` steps, or a ``search`` over a classical
    method's parameters (:mod:`medseg.engine.fitting`)."""

    name: str
    build: Callable[..., nn.Module]
    stride: Callable[[dict], int] = strides_product
    check: Callable[[dict], None] = accepts_anything
    defaults: dict = field(default_factory=dict)
    trains: str = "gradient"


_FAMILIES: dict[str, ModelFamily] = {}


def register_model(
    name: str,
    builder: Callable[..., nn.Module],
    stride_fn: Callable[[dict], int] | None = None,
    check_fn: Callable[[dict], None] | None = None,
    defaults: dict | None = None,
    trains: str = "gradient",
) -> ModelFamily:
    """Make ``model.name: NAME`` build networks with ``builder`` (a later registration of a name replaces it)."""
    if trains not in ("gradient", "search"):
        raise ValueError(f"trains must be 'gradient' or 'search', not {trains!r}")
    family = ModelFamily(
        name, builder, stride_fn or strides_product, check_fn or accepts_anything, dict(defaults or {}), trains
    )
    _FAMILIES[name] = family
    return family


def unregister_model(name: str) -> None:
    """Forget a family (a plug-in's or a test's); unknown names are ignored."""
    _FAMILIES.pop(name, None)


def list_models() -> list[str]:
    return sorted(_FAMILIES)


def model_family(name: str) -> ModelFamily:
    if name not in _FAMILIES:
        raise MedsegError(f"unknown model '{name}'; fix: set model.name to one of {list_models()}")
    return _FAMILIES[name]


def known_family(name: str) -> ModelFamily | None:
    """The family of that name, or None (a checkpoint of a family registered elsewhere)."""
    return _FAMILIES.get(name)
