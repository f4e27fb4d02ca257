"""The checkpoints a training run writes each epoch, and restoring a run from its ``last.pt``.

``best.pt`` holds what inference needs (the model, its config, labels, channels, window size, split and data
facts, the epoch's validation Dice); ``last.pt`` adds what a resume needs (optimiser, schedule, loss scaler, random
states, history and, with ``train.ema``, the raw weights). With ``train.ema`` the averaged weights are the model
(validated, inferred with); the raw ones resume.
"""

from __future__ import annotations

from pathlib import Path

from medseg.checkpoint import RESUME_ONLY, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from medseg.engine.run_folder import CHECKPOINTS, write_history
from medseg.errors import fail, os_reason

STAMPS = ("format", "format_version", "medseg_version", "created")  # save_checkpoint writes these afresh


def run_facts(cfg, spec: dict, roi: list[int], data, data_dir) -> dict:
    """What every checkpoint of the run carries, whatever the epoch."""
    return {
        "model": spec,
        "config": cfg.to_dict(),
        "labels": list(cfg.data.labels),
        "channels": list(cfg.data.channels),
        "roi_size": roi,
        "split": {k: data.split[k] for k in ("train", "val", "test")},
        "data": {
            "recipe": cfg.data.recipe,
            "data_dir": str(data_dir),
            "n_train": data.n_train,
            "n_val": len(data.val_samples),
            "split_method": data.split["method"],
        },
    }


def save_untrained(cfg, path: str | Path, seed: int = 0) -> Path:
    """A checkpoint of ``cfg``'s network with random weights (seeded): what speed, memory and export checks run,
    where the weights do not matter."""
    import torch

    from medseg.inference.predictor import roi_size
    from medseg.models import build_model, model_spec

    torch.manual_seed(seed)
    spec = model_spec(cfg)
    payload = {
        "model": spec,
        "state_dict": build_model(spec).state_dict(),
        "config": cfg.to_dict(),
        "labels": list(cfg.data.labels),
        "channels": list(cfg.data.channels),
        "roi_size": roi_size(cfg),
        "epoch": 0,
        "best_metric": 0.0,
    }
    return save_checkpoint(payload, path)


def resume_state(optimizer, scheduler, precision, history: list[dict], net, ema) -> dict:
    """The part of ``last.pt`` only a resume reads."""
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": precision.state_dict(),
        "rng": rng_state(),
        "history": history,
    }
    if ema is not None:
        state.update(train_state_dict=net.state_dict(), ema_updates=int(ema.n_averaged))
    return state


def save_epoch(run_dir: Path, payload: dict, improved: bool, resume: dict, history: list[dict]) -> None:
    """best.pt (when the epoch improved), then last.pt, then history.csv: a kill between any two leaves last.pt
    the truth a resume restarts from, and history.csv is rewritten from it then."""
    if improved:
        save_or_explain(payload, run_dir / "best.pt")
    save_or_explain({**payload, **resume}, run_dir / "last.pt")
    write_history(run_dir / "history.csv", history)


def best_from_last(run_dir: Path) -> None:
    """A run that never improved on its start (no epoch validated) still gets a best.pt: its last model."""
    if (run_dir / "best.pt").exists() or not (run_dir / "last.pt").exists():
        return
    ck = load_checkpoint(run_dir / "last.pt")
    save_or_explain({k: v for k, v in ck.items() if k not in RESUME_ONLY + STAMPS}, run_dir / "best.pt")


def restore(path: Path, dev, net, ema, optimizer, scheduler, precision) -> dict:
    """Load ``last.pt`` into the run's parts and the random states; return the checkpoint."""
    ck = load_checkpoint(path, map_location=dev)
    net.load_state_dict(ck.get("train_state_dict", ck["state_dict"]))
    if ema is not None:
        if "train_state_dict" not in ck:
            raise fail(path, "was trained without train.ema", "resume with the run's own config.yaml")
        ema.module.load_state_dict(ck["state_dict"])
        ema.n_averaged.fill_(int(ck.get("ema_updates", 1)))
    saved_groups = len(ck["optimizer"].get("param_groups", []))
    if saved_groups != len(optimizer.param_groups):  # train.encoder_lr_scale switched on or off since
        raise fail(
            path,
            f"was trained with {saved_groups} optimiser parameter group(s), this config makes "
            f"{len(optimizer.param_groups)} (train.encoder_lr_scale)",
            "resume with the run's own config.yaml, or start a new run from it with --init",
        )
    optimizer.load_state_dict(ck["optimizer"])
    scheduler.load_state_dict(ck["scheduler"])
    precision.load_state_dict(ck.get("scaler"))
    set_rng_state(ck["rng"])
    return ck


def save_or_explain(payload: dict, path: Path) -> None:
    """``save_checkpoint``; a failure says that the checkpoints already on disk are intact (each is replaced only
    once its new version is complete) and how to go on."""
    resumable = (path.parent / "last.pt").is_file()
    saved = [f for f in CHECKPOINTS if (path.parent / f).is_file()]
    safe = (
        f"the previous {'/'.join(saved)} {'are' if len(saved) > 1 else 'is'} intact"
        if saved
        else "no checkpoint of this run was saved yet"
    )
    again = "run again with --resume" if resumable else "run again with --force" if saved else "run again"
    try:
        save_checkpoint(payload, path)
    except (OSError, RuntimeError) as exc:  # torch reports some failed writes as RuntimeError
        raise fail(
            path,
            f"could not write the checkpoint ({os_reason(exc)}); {safe}",
            f"free disk space (or make {path.parent} writable) and {again}",
        ) from None
