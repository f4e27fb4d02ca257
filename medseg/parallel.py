"""The facts of a multi-process run that training and batch inference share: this process's rank, the backend,
and how the processes find each other (``torchrun``'s environment, or a local port for ``--nproc``)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import torch

from medseg.runtime import asked_threads, resolve_device, usable_cpus


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a run: its rank, the number of processes, and its GPU on this machine."""

    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = DistInfo(0, 1, 0)


def backend(device: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def under_torchrun() -> bool:
    """Whether ``torchrun`` (or another launcher that sets ``WORLD_SIZE``) started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def join_launched_group(device: str) -> tuple[DistInfo, bool]:
    """Join the process group of a ``torchrun`` launch (once); returns this process's place and whether this call
    created the group (and so should destroy it)."""
    import torch.distributed as dist

    created = not dist.is_initialized()
    if created:
        dist.init_process_group(backend(device))
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))), created


def free_port() -> int:
    """A TCP port free on this machine, for the processes ``--nproc`` spawns to meet on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_threads(world: int) -> int:
    """CPU threads for one of ``world`` processes on this machine: ``OMP_NUM_THREADS`` when set (it is already one
    process's count), else the cores shared evenly, so that the processes do not fight over them."""
    asked = asked_threads()
    return asked if asked is not None else max(1, usable_cpus() // max(1, world))


def rank_device(device: str, info: DistInfo) -> torch.device:
    """This process's device: with several processes on GPUs, each its own GPU (by its rank on this machine)."""
    dev = resolve_device(device)
    if dev.type == "cuda" and info.world > 1:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    return dev
