"""Checkpoints: atomic writes, safe loads, and everything inference needs.

A checkpoint is a plain dict of tensors and Python primitives, so it loads
with ``torch.load(..., weights_only=True)`` (no pickled code runs):

``format``, ``format_version``, ``medseg_version``, ``created``, ``model``
(registry name + constructor kwargs), ``state_dict``, ``config`` (the resolved
config as a dict), ``labels``, ``channels``, ``preprocess``,
``intensity_stats``, ``epoch``, ``best_metric``, ``best_epoch``,
``val_metrics`` and, for resuming, ``optimizer``, ``scheduler``, ``scaler``,
``rng``.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from . import __version__
from .errors import MedsegError, fail
from .io import atomic_write

FORMAT = "medseg-checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "medseg_version": __version__,
               "created": datetime.now(timezone.utc).isoformat(timespec="seconds"), **payload}
    def write(tmp):  # through a Python file: a full disk then raises OSError(ENOSPC), not torch's opaque RuntimeError
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)

    atomic_write(path, write)  # temp file: .NAME.<random>.tmp.pt
    return path


def load_checkpoint(path: str | Path, map_location="cpu") -> dict:
    """Load a medseg checkpoint safely (``weights_only=True``) and check that it is one."""
    path = Path(path)
    if not path.is_file():
        raise fail(path, "checkpoint not found", "pass --model path/to/best.pt (written by medseg train)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or unsafe pickles all land here
        raise fail(path, f"is not a readable medseg checkpoint ({type(exc).__name__})",
                   "pass a best.pt/last.pt written by medseg train; files with pickled code are refused") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise fail(path, "is not a medseg checkpoint", "pass a best.pt/last.pt written by medseg train")
    if int(ckpt.get("format_version", 0)) > FORMAT_VERSION:
        raise fail(path, f"was written by a newer medseg ({ckpt.get('medseg_version')})", "upgrade medseg")
    return ckpt


def file_hash(path: str | Path, n: int = 12) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:n]


def rng_state() -> dict:
    """RNG states of Python, NumPy and torch as weights_only-safe data."""
    np_state = np.random.get_state()
    return {"python": random.getstate(), "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), int(np_state[2]),
                                                   int(np_state[3]), float(np_state[4])],
            "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def describe(ckpt: dict) -> str:
    return (f"{ckpt['model']['name']} {ckpt['model']['kwargs'].get('spatial_dims')}D, labels {ckpt['labels']}, "
            f"epoch {ckpt.get('epoch')}, best val {ckpt.get('best_metric')}")


def require_keys(ckpt: dict, path) -> None:
    for key in ("model", "state_dict", "config", "labels", "channels"):
        if key not in ckpt:
            raise MedsegError(f"{path}: checkpoint lacks '{key}'; fix: re-train with this medseg version")

