"""Checkpoints: atomic writes, safe loads, and everything inference needs.

A checkpoint is a plain dict of tensors and Python primitives, so it loads
with ``torch.load(..., weights_only=True)`` (no pickled code runs):

``format``, ``format_version``, ``medseg_version``, ``created``, ``model``
(registry name + constructor kwargs), ``state_dict``, ``config`` (the resolved
config as a dict), ``labels``, ``channels``, ``roi_size``, ``split``, ``data``,
``epoch``, ``best_metric``, ``best_epoch``, ``world_size``, ``val_metrics`` and,
in ``last.pt`` for resuming, ``optimizer``, ``scheduler``, ``scaler``, ``rng``,
``history`` (and ``train_state_dict``, ``ema_updates`` with ``train.ema``).

Checkpoints written by earlier versions may also hold ``preprocess``, ``infer``
and ``intensity_stats``; they load as before, and only ``preprocess.spacing``
is still checked (``config`` holds the same settings).
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from medseg import __version__
from medseg.config import Config, config_from_dict
from medseg.errors import MedsegError, fail
from medseg.io import atomic_write

FORMAT = "medseg-checkpoint"
FORMAT_VERSION = 1
# what only ``last.pt`` keeps, to resume a run: never in ``best.pt``, never exported
RESUME_ONLY = ("optimizer", "scheduler", "scaler", "rng", "train_state_dict", "ema_updates", "history")


def save_checkpoint(payload: dict, path: str | Path) -> Path:
    """Write ``payload`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **payload,
    }

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
        raise fail(
            path,
            f"is not a readable medseg checkpoint ({type(exc).__name__})",
            "pass a best.pt/last.pt written by medseg train; files with pickled code are refused",
        ) from None
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
    return {
        "python": random.getstate(),
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].copy()),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    torch.set_rng_state(state["torch"])


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def describe(ckpt: dict) -> str:
    return (
        f"{ckpt['model']['name']} {ckpt['model']['kwargs'].get('spatial_dims')}D, labels {ckpt['labels']}, "
        f"epoch {ckpt.get('epoch')}, best val {ckpt.get('best_metric')}"
    )


def require_keys(ckpt: dict, path) -> None:
    for key in ("model", "state_dict", "config", "labels", "channels"):
        if key not in ckpt:
            raise MedsegError(f"{path}: checkpoint lacks '{key}'; fix: re-train with this medseg version")


REPAIR = "re-train, or restore the file from the run folder or a backup"


def validate_checkpoint(ckpt: dict, path) -> Config:
    """Refuse a checkpoint whose config contradicts its own network, or whose weights are not finite; return its
    config, built and checked once here.

    A tampered or damaged checkpoint otherwise loads and runs: labels that need more output channels than the
    network has give a RuntimeError (or, in 2D, silently the wrong classes), a zero or negative spacing skips
    resampling, and a NaN weight gives an empty mask. Each check names the checkpoint key that is wrong."""
    from medseg.models import size_divisor

    require_keys(ckpt, path)
    _check_spacing(ckpt, path)  # before the config is built: its own check would suggest --set, not a repair
    try:
        cfg = config_from_dict(settings_training_used(ckpt["config"]), source=str(path))
    except MedsegError as exc:  # the config's own checks; the fix is a repair here, not an override
        problem = str(exc).split("; fix:")[0].removeprefix(f"{path}: ")
        raise _refuse(
            path, problem if problem.startswith("config key") else f"key 'config' is invalid: {problem}"
        ) from None
    kw = ckpt["model"].get("kwargs", {})
    _check_labels(ckpt, cfg, kw, path)
    _check_channels(ckpt, cfg, kw, path)
    _check_sizes(ckpt, cfg, size_divisor(ckpt["model"]), path)
    _check_finite_weights(ckpt["state_dict"], path)
    return cfg


def settings_training_used(config: dict) -> dict:
    """The checkpoint's config less what its training ignored: before 2D training drew patches, a 2D config could
    carry a 3D ``train.patch_size`` (copied from a volume config) that nothing read; today it would be refused."""
    data, train = config.get("data") or {}, config.get("train") or {}
    patch = train.get("patch_size")
    if data.get("spatial_dims", 2) == 2 and isinstance(patch, list) and len(patch) == 3:
        return {**config, "train": {**train, "patch_size": None}}
    return config


def network_of(ckpt: dict, path):
    """The network a (validated) checkpoint describes, with its weights, in evaluation mode; weights that do not
    fit the saved model spec are one line naming the checkpoint."""
    from medseg.models import build_model

    net = build_model(ckpt["model"])
    try:
        net.load_state_dict(ckpt["state_dict"])
    except RuntimeError as exc:
        raise fail(
            path, f"weights do not fit the saved model ({str(exc).splitlines()[0]})", "re-export the checkpoint"
        ) from None
    return net.eval()


def _refuse(path, problem: str):
    return fail(path, f"checkpoint {problem}", REPAIR)


def _check_labels(ckpt: dict, cfg, kw: dict, path) -> None:
    labels = list(ckpt["labels"])
    if labels != list(cfg.data.labels):
        raise _refuse(path, f"key 'labels' {labels} differs from 'config.data.labels' {list(cfg.data.labels)}")
    if len(labels) < 2:
        raise _refuse(path, f"key 'labels' {labels} has fewer than 2 classes")
    if kw.get("out_channels") != cfg.out_channels:
        need = "1 output channel (binary)" if cfg.binary else f"{cfg.out_channels} output channels"
        raise _refuse(
            path,
            f"key 'labels' has {len(labels)} classes, which need {need}, but the network has "
            f"{kw.get('out_channels')} (model.kwargs.out_channels)",
        )


def _check_channels(ckpt: dict, cfg, kw: dict, path) -> None:
    dims = cfg.data.spatial_dims
    if dims not in (2, 3) or kw.get("spatial_dims") != dims:
        raise _refuse(
            path,
            f"key 'config.data.spatial_dims' is {dims} but the network is "
            f"{kw.get('spatial_dims')}D (model.kwargs.spatial_dims)",
        )
    if list(ckpt["channels"]) != list(cfg.data.channels):
        raise _refuse(
            path,
            f"key 'channels' {list(ckpt['channels'])} differs from 'config.data.channels' {list(cfg.data.channels)}",
        )
    if kw.get("in_channels") != cfg.in_channels:
        ctx = cfg.data.context_slices if dims == 2 else 0
        per = f" x {2 * ctx + 1} slices (data.context_slices {ctx})" if ctx else ""
        raise _refuse(
            path,
            f"key 'config.data.channels' {list(cfg.data.channels)}{per} gives {cfg.in_channels} "
            f"input channel(s) but the network takes {kw.get('in_channels')} (model.kwargs.in_channels)",
        )


def _check_sizes(ckpt: dict, cfg, div: int, path) -> None:
    dims = cfg.data.spatial_dims
    sizes = [("roi_size", ckpt.get("roi_size")), ("config.infer.roi_size", cfg.infer.roi_size)]
    for key, size in sizes:
        if size is None:
            continue
        if not _n_positive(size, dims, whole=True):
            raise _refuse(path, f"key '{key}' {size} is not {dims} positive whole numbers")
        if any(s % div for s in size):
            raise _refuse(path, f"key '{key}' {list(size)} is not a multiple of {div} (the network's total stride)")


def _n_positive(values, n: int, whole: bool) -> bool:
    """Whether ``values`` is a list of ``n`` finite numbers above 0 (whole numbers only with ``whole``)."""
    kinds = (int,) if whole else (int, float)
    return (
        isinstance(values, (list, tuple))
        and len(values) == n
        and all(isinstance(v, kinds) and not isinstance(v, bool) and np.isfinite(v) and v > 0 for v in values)
    )


def _check_spacing(ckpt: dict, path) -> None:
    """A zero or negative voxel size makes MONAI skip resampling without a word: refuse it."""
    conf = ckpt["config"] if isinstance(ckpt["config"], dict) else {}
    if (conf.get("data") or {}).get("spatial_dims") != 3:  # 2D pipelines do not resample
        return
    spacings = [("config.preprocess.spacing", (conf.get("preprocess") or {}).get("spacing"))]
    if isinstance(ckpt.get("preprocess"), dict):
        spacings.append(("preprocess.spacing", ckpt["preprocess"].get("spacing")))
    for key, sp in spacings:
        if sp is None:
            continue
        if not _n_positive(sp, 3, whole=False):
            raise _refuse(path, f"key '{key}' {sp} is not 3 positive voxel sizes in mm")


def _check_finite_weights(state_dict: dict, path) -> None:
    for key, t in state_dict.items():
        if torch.is_tensor(t) and t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise _refuse(path, f"key 'state_dict.{key}' holds {bad} non-finite value(s) (NaN or Inf)")
