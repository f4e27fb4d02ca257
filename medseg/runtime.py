"""Where and in what precision medseg computes: the device, CPU threads and the autocast dtype."""

import functools
import os

import torch

from medseg.errors import MedsegError


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MedsegError("--device cuda was asked for but no CUDA GPU is visible; fix: use --device cpu or auto")
    if device not in ("cpu",) and not device.startswith("cuda"):
        raise MedsegError(f"unknown device '{device}'; fix: use auto, cpu or cuda")
    return torch.device(device)


def usable_cpus() -> int:
    """The cores this process may use: the CPUs it is pinned to (a container's or ``taskset``'s share, which
    ``os.cpu_count`` ignores), else every core."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def asked_threads() -> int | None:
    """The compute threads the user (or ``torchrun``, which sets 1 per rank) asked of this one process through
    ``OMP_NUM_THREADS``; None when unset or not a count, which OpenMP ignores too."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    try:
        n = int(asked)
    except ValueError:
        return None
    return n if n > 0 else None


def configure_cpu_threads(num_workers: int = 0) -> None:
    """Use ``OMP_NUM_THREADS`` threads when it is set; else every usable core, less those loader workers need."""
    n = asked_threads()
    if n is None:
        cores = usable_cpus()
        n = max(1, cores - num_workers) if num_workers else cores
    torch.set_num_threads(n)


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AVX512-BF16 or AMX). Without it, oneDNN emulates bfloat16 and a
    training step is over ten times slower than in float32 (BENCHMARKS.md), so mixed precision stays off there."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)


def amp_dtype(device: torch.device, enabled: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``train.amp`` on ``device``: float16 on CUDA, bfloat16 on a CPU with native bfloat16,
    None (full float32) elsewhere or when ``enabled`` is False."""
    if not enabled:
        return None
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


def precision_name(dtype: torch.dtype | None) -> str:
    """What :func:`amp_dtype` returned, for logs and benchmark lines: ``bfloat16``, ``float16`` or ``float32``."""
    return str(dtype or torch.float32).removeprefix("torch.")
