"""Distributed training's facts and steps inside one process: its rank, the wrapped model, the data share.

Launching the processes (``--nproc`` or ``torchrun``) is :mod:`medseg.engine.launch`.
"""

from __future__ import annotations

import logging

import torch

from medseg.log import ROOT
from medseg.parallel import DistInfo


def silence_other_ranks(info: DistInfo) -> None:
    """Only rank 0 speaks: the other ranks' log lines would repeat its own (their errors are still raised)."""
    if not info.main:
        logging.getLogger(ROOT).setLevel(logging.CRITICAL + 1)


def wrap_model(
    net: torch.nn.Module, dev: torch.device, info: DistInfo, idle_parameters: bool = False
) -> torch.nn.Module:
    """``net`` itself in one process; DistributedDataParallel around it in several. ``idle_parameters``: some
    parameters may get no gradient in a step (a frozen encoder, a timm encoder's blocks below a shallow decoder),
    which DDP must be told of, or it waits for their gradients forever."""
    if info.world == 1:
        return net
    from torch.nn.parallel import DistributedDataParallel

    devices = [dev] if dev.type == "cuda" else None
    return DistributedDataParallel(net, device_ids=devices, find_unused_parameters=idle_parameters)


def share_of(train_samples: list, val_samples: list, seed: int, info: DistInfo) -> tuple[list, list]:
    """This rank's training samples (each rank caches and trains on its own share) and validation samples
    (all of them on rank 0, which alone validates)."""
    if info.world == 1:
        return train_samples, val_samples
    from monai.data import partition_dataset

    share = partition_dataset(train_samples, num_partitions=info.world, shuffle=True, seed=seed, even_divisible=True)
    return share[info.rank], val_samples if info.main else []


def barrier(info: DistInfo) -> None:
    """Wait for every rank (after rank 0 wrote the epoch's checkpoints)."""
    if info.world > 1:
        import torch.distributed as dist

        dist.barrier()
