"""The checkpoints an inference runs: loaded, checked to fit each other, or the newest one that fits the inputs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from medseg.checkpoint import file_hash, load_checkpoint, network_of, validate_checkpoint
from medseg.config import Config
from medseg.errors import MedsegError, fail
from medseg.inference.cases import Case, case_channels, expand_inputs
from medseg.io import IMAGE_2D_EXTS, file_ext
from medseg.log import get_logger

log = get_logger(__name__)


@dataclass
class LoadedModel:
    path: Path
    ckpt: dict
    cfg: Config
    model: torch.nn.Module
    sha: str


def load_models(paths: list[str | Path], device: torch.device) -> list[LoadedModel]:
    from medseg.export import EXPORTED_EXTS, load_exported

    models = []
    for p in paths:
        if file_ext(p) in EXPORTED_EXTS:  # medseg export's ONNX or TorchScript file: its metadata, a callable net
            meta, cfg, net = load_exported(p, device)
            models.append(LoadedModel(Path(p), meta, cfg, net, file_hash(p)))
            continue
        ck = load_checkpoint(p, map_location="cpu")
        cfg = validate_checkpoint(ck, p)
        net = network_of(ck, p).to(device)
        models.append(LoadedModel(Path(p), ck, cfg, net, file_hash(p)))
    first = models[0]
    for m in models[1:]:
        for what in ("labels", "channels"):
            if m.ckpt[what] != first.ckpt[what]:
                raise fail(
                    m.path,
                    f"{what} {m.ckpt[what]} differ from {first.path.name}'s {first.ckpt[what]}",
                    "ensemble only checkpoints trained for the same task",
                )
        if m.cfg.data.spatial_dims != first.cfg.data.spatial_dims:
            raise fail(m.path, "mixes 2D and 3D models in one ensemble", "pass checkpoints of one kind")
    return models


# ----------------------------------------------------------------------------


def find_default_model(root: Path = Path("runs"), inputs: list[str] | None = None) -> Path:
    """The newest ``best.pt`` under ``root`` that fits ``inputs`` (2D or 3D as the inputs are, and for volumes as
    many modalities as the model takes); says which one was chosen, with its recipe, epochs and validation Dice."""
    cands = sorted(root.glob("**/best.pt"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    if not cands:
        raise MedsegError(
            "no --model given and no runs/*/best.pt found; fix: train one with 'medseg train NAME' "
            "or pass --model path/to/best.pt"
        )
    skipped = []
    for path in reversed(cands):
        why, ckpt = _misfit(path, inputs)
        if why is None:
            log.info(
                f"using {path} ({model_summary(ckpt)})"
                + (f"; skipped newer checkpoints that do not fit: {'; '.join(skipped)}" if skipped else "")
            )
            return path
        skipped.append(f"{path} ({why})")
    raise MedsegError(
        f"no --model given and none of the {len(cands)} checkpoints under {root} fits these inputs "
        f"({'; '.join(skipped[:3])}{'; ...' if len(skipped) > 3 else ''}); fix: pass --model "
        "path/to/best.pt trained for such images"
    )


def model_summary(ckpt: dict) -> str:
    """``ph2, 2D, 12 epochs, val Dice 0.91``: what a checkpoint was trained on and how well it validated."""
    cfg = ckpt.get("config", {}).get("data", {})
    recipe = ckpt.get("data", {}).get("recipe") or cfg.get("recipe")
    dice = (ckpt.get("val_metrics") or {}).get("val_mean_dice")
    score = f"val Dice {float(dice):.2f}" if dice is not None else "no validation Dice"
    epochs = ckpt.get("epoch")
    return f"{recipe}, {cfg.get('spatial_dims')}D, {epochs} epoch{'' if epochs == 1 else 's'}, {score}"


def _misfit(path: Path, inputs: list[str] | None) -> tuple[str | None, dict | None]:
    """Why the checkpoint at ``path`` does not fit ``inputs`` (None when it does), and the checkpoint."""
    try:
        ckpt = load_checkpoint(path)
        cfg = validate_checkpoint(ckpt, path)
    except MedsegError as exc:
        return f"unusable: {str(exc).split('; fix:')[0].removeprefix(f'{path}: ')}", None
    if not inputs:
        return None, ckpt
    cases, _errors = expand_inputs(inputs, cfg)
    for case in cases:
        why = _case_misfit(case, cfg)
        if why:
            return why, ckpt
    return None, ckpt


def _case_misfit(case: Case, cfg: Config) -> str | None:
    is_2d = file_ext(case.paths[0]) in IMAGE_2D_EXTS
    dims = cfg.data.spatial_dims
    if is_2d != (dims == 2):
        return f"{dims}D model, {Path(case.paths[0]).name} is {'a 2D image' if is_2d else 'a volume'}"
    if dims == 3:
        found = case_channels(case.paths)
        if found is not None and found != len(cfg.data.channels):
            return (
                f"takes {len(cfg.data.channels)} modalities ({','.join(cfg.data.channels)}), "
                f"{Path(case.paths[0]).name} has {found}"
            )
    return None
