"""Where a training process computes and in what precision: its device, CPU threads, autocast and loss scaling."""

from __future__ import annotations

from contextlib import AbstractContextManager

import torch

from medseg.parallel import DistInfo, rank_device, rank_threads
from medseg.runtime import amp_dtype, configure_cpu_threads, precision_name


def training_device(device: str, info: DistInfo, num_workers: int) -> torch.device:
    """The device of this process: each rank of a multi-GPU run its own GPU; on the CPU, the threads it may use
    (all cores but the loader workers', shared evenly between ranks)."""
    dev = rank_device(device, info)
    if dev.type == "cpu":
        configure_cpu_threads(num_workers)
        if info.world > 1:
            torch.set_num_threads(rank_threads(info.world))
    return dev


class Precision:
    """Mixed precision for ``train.amp``: the autocast dtype of the device (see :func:`medseg.runtime.amp_dtype`)
    and, for float16 only, a gradient scaler (bfloat16 has float32's range and needs none)."""

    def __init__(self, device: torch.device, enabled: bool):
        self.device = device
        self.dtype = amp_dtype(device, enabled)
        self.scaled = self.dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.scaled)

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(device_type=self.device.type, dtype=self.dtype, enabled=self.dtype is not None)

    def describe(self) -> str | None:
        """The log line announcing mixed precision, or None in full float32."""
        if self.dtype is None:
            return None
        return f"mixed precision: {precision_name(self.dtype)} on {self.device.type} (train.amp: false turns it off)"

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaled else {}

    def load_state_dict(self, state: dict | None) -> None:
        if state:
            self.scaler.load_state_dict(state)
