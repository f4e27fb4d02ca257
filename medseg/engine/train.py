"""The training loop: ``train(cfg, data_dir, ...)`` is what ``medseg train`` calls.

One loop serves 2D and 3D, binary and multi-class. Per epoch the random state
of augmentation, shuffling and dropout is re-seeded from ``seed + epoch``, so a
run resumed from ``last.pt`` continues exactly as if it had never stopped (on
CPU with ``num_workers: 0``).
"""

from __future__ import annotations

import csv
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import yaml

from medseg.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from medseg.config import Config, save_config
from medseg.data import IMAGE, LABEL, load_samples
from medseg.data.splits import make_split, save_split, select
from medseg.data.transforms import train_transforms, val_transforms
from medseg.engine.checks import check_config
from medseg.engine.losses import build_loss
from medseg.errors import MedsegError, fail, os_reason, user_errors
from medseg.inference.predictor import predict_logits, roi_size
from medseg.io import atomic_write, stale_temp_files
from medseg.models import build_model, model_spec
from medseg.progress import progress_bar
from medseg.runtime import amp_dtype, configure_cpu_threads, precision_name, resolve_device

CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = (*CHECKPOINTS, "config.yaml", "split.json", "history.csv")  # what medseg writes at the top of a run folder
TB_OWN_DIRS = ("", "hparams")  # tb/ and the sub-run add_hparams writes: medseg's event files live only there
LEGACY_TEMPS = ("history.tmp",)  # the temp name history.csv was once written through


@dataclass
class TrainResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def default_run_dir(name: str) -> Path:
    return Path("runs") / f"{name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_run_dir(name: str, root: Path = Path("runs")) -> Path | None:
    cands = sorted((p for p in root.glob(f"{name}-*") if (p / "last.pt").is_file()), key=lambda p: p.stat().st_mtime)
    return cands[-1] if cands else None


def prepare_run_dir(run_dir: Path, resume: bool, force: bool) -> None:
    """Make ``run_dir`` ready for a new run, or check that it can be resumed.

    A folder without a checkpoint (a run that failed before its first epoch ended) is reused as it is; one with
    last.pt or best.pt needs ``resume`` or ``force``. Starting over replaces only files medseg wrote (its run
    files, its TensorBoard event files), never the user's. Temp files a killed write left behind are removed.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise fail(run_dir, "is a file, not a run folder", "choose another --out (a new folder or an earlier run's)")
    try:
        for tmp in stale_temp_files(run_dir, RUN_FILES) + [
            run_dir / n for n in LEGACY_TEMPS if (run_dir / n).is_file()
        ]:
            tmp.unlink()
        if resume:
            if not (run_dir / "last.pt").is_file():
                raise fail(
                    run_dir,
                    "has no last.pt to resume from",
                    "drop --resume to start a new run, or point --out at an earlier run",
                )
            return
        foreign = [f for f in RUN_FILES[2:] if (run_dir / f).is_file() and not _written_by_medseg(run_dir / f)]
        if foreign:  # a user's own config.yaml beside --out, say: never replaced, not even with --force
            raise fail(
                run_dir / foreign[0],
                "has a run file's name but was not written by medseg train",
                "move it out of the run folder, or choose another --out",
            )
        held = [f for f in CHECKPOINTS if (run_dir / f).exists()]
        if held and not force:
            existing = [f for f in RUN_FILES if (run_dir / f).exists()]
            if "last.pt" not in held:  # stopped between its first best.pt and last.pt: nothing to resume from
                raise fail(
                    run_dir,
                    f"holds a run that cannot be resumed ({', '.join(existing)}, but no last.pt)",
                    "pass --force to start it over, or choose another --out",
                )
            raise fail(
                run_dir,
                f"already holds a run ({', '.join(existing)})",
                "pass --resume to continue it, --force to overwrite it, or choose another --out",
            )
        _remove_own_files(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise fail(
            run_dir, f"cannot prepare the run folder ({os_reason(exc)})", "choose an --out in a folder you can write to"
        ) from None


def _written_by_medseg(path: Path) -> bool:
    """Whether a config.yaml / split.json / history.csv in a run folder has the shape medseg train writes: a
    full config dump, a split with its method, a history whose first column is the epoch."""
    try:
        if path.name == "config.yaml":
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and {"name", "data", "preprocess", "model", "train", "infer"} <= set(data)
        if path.name == "split.json":
            import json

            data = json.loads(path.read_text(encoding="utf-8"))
            return isinstance(data, dict) and {"train", "val", "method"} <= set(data)
        if path.name == "history.csv":
            return path.read_text(encoding="utf-8").startswith("epoch,")
    except (OSError, ValueError, yaml.YAMLError):  # unreadable or not text: not one of medseg's
        return False
    return True


def _remove_own_files(run_dir: Path) -> None:
    """Delete what an earlier run wrote in ``run_dir``: the run files and the TensorBoard event files in tb/ and
    tb/hparams/ (a folder left empty goes too). Every other file, and the folders holding one, stay."""
    for f in RUN_FILES:
        if (run_dir / f).is_file():
            (run_dir / f).unlink()
    for sub in reversed(TB_OWN_DIRS):  # the sub-run first, so tb/ can go when it is left empty
        folder = run_dir / "tb" / sub if sub else run_dir / "tb"
        if not folder.is_dir():
            continue
        for event in folder.glob("events.out.tfevents.*"):
            if event.is_file():
                event.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _write_or_explain(path: Path, writer, what: str, safe: str, fix: str) -> None:
    """``atomic_write(path, writer)``; a failure (read-only folder, full disk) becomes one line that says what was
    not written, what on disk is still sound (``safe``) and the fix."""
    try:
        atomic_write(path, writer)
    except OSError as exc:
        raise fail(path, f"could not write {what} ({os_reason(exc)}); {safe}", fix) from None


def _save_checkpoint_or_explain(payload: dict, path: Path) -> None:
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


RESUME_ONLY = ("optimizer", "scheduler", "scaler", "rng", "train_state_dict", "ema_updates", "history")


def build_ema(net: torch.nn.Module, decay: float | None):
    """An exponential moving average of ``net``'s weights (PyTorch's ``AveragedModel``), or None.

    Small medical sets give a noisy last epoch; the average over the last ~1/(1-decay) steps is smoother.
    Buffers are averaged too, so a model with running statistics stays consistent.
    """
    if decay is None:
        return None
    if not 0.0 < float(decay) < 1.0:
        raise MedsegError(f"train.ema {decay} must be a decay between 0 and 1; fix: e.g. 0.99, or null to turn it off")
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(float(decay)), use_buffers=True)
    ema.module.eval()
    return ema


def _lr_lambda(cfg: Config, total_steps: int, steps_per_epoch: int):
    warm = cfg.train.warmup_epochs * steps_per_epoch
    kind = cfg.train.scheduler
    if kind not in ("cosine", "poly", "constant"):
        raise MedsegError(f"train.scheduler '{kind}' is unknown; fix: use cosine, poly or constant")

    def f(step: int) -> float:
        if warm and step < warm:
            return (step + 1) / warm
        t = min(1.0, (step - warm) / max(1, total_steps - warm))
        if kind == "cosine":
            return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * t))
        if kind == "poly":
            return max(0.0, 1 - t) ** 0.9
        return 1.0

    return f


def build_optimizer(cfg: Config, params):
    t = cfg.train
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=t.lr, momentum=0.99, nesterov=True, weight_decay=t.weight_decay)
    raise MedsegError(f"train.optimizer '{t.optimizer}' is unknown; fix: use adamw, adam or sgd")


def as_float(out):
    """Network output (a tensor, or a list of them with deep supervision) as float32."""
    return [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()


def logits_to_labels(logits: torch.Tensor, binary: bool, threshold: float = 0.5) -> torch.Tensor:
    """``(B, K, ...)`` logits -> ``(B, 1, ...)`` integer class map."""
    if binary:
        return (torch.sigmoid(logits) > threshold).to(torch.uint8)
    return logits.argmax(dim=1, keepdim=True).to(torch.uint8)


def _counts(pred: torch.Tensor, label: torch.Tensor, num_classes: int) -> np.ndarray:
    """``(K-1, 3)`` true-positive, false-positive and false-negative voxel counts per foreground class."""
    from medseg.evaluation.metrics import confusion

    p, g = pred.numpy(), label.numpy()
    return np.array([confusion(p == c, g == c)[:3] for c in range(1, num_classes)], dtype=np.float64)


def _plain(x) -> torch.Tensor:
    """A tensor without MONAI's metadata (a MetaTensor carries its meta through every operation)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


@dataclass
class Validation:
    """One validation pass: mean Dice per foreground class, the whole-foreground Dice (all foreground classes as
    one; for a multi-class task the BraTS "whole tumour"), the mean loss (None without a loss function) and the
    example for the image panel."""

    dice: np.ndarray
    dice_whole: float
    loss: float | None
    example: dict | None


@torch.no_grad()
def validate(model, val_ds, cfg: Config, device: torch.device, loss_fn=None) -> Validation:
    """Score ``model`` on the validation items: see :class:`Validation`.

    Items that carry a ``volume_id`` (LGG slices) are pooled per volume first, so the score is per patient, the
    way ``medseg evaluate`` and Buda et al. score it, rather than per slice with empty slices counting as perfect.
    The loss is the training loss on the whole validation images, averaged over items.
    """
    from medseg.evaluation.metrics import confusion, dice_from_counts

    model.eval()
    counts: dict = {}
    whole: dict = {}
    loss_sum, n_items = 0.0, 0
    example, best_fg = None, -1
    # 2D items of one size go through the model a training batch at a time (one slice at a time spent most of its
    # time in per-call overhead); 3D volumes one at a time, each through the sliding window.
    per_call = max(1, cfg.train.batch_size) if cfg.data.spatial_dims == 2 else 1
    pending: list = []

    def run() -> None:
        nonlocal example, best_fg, loss_sum, n_items
        imgs = torch.stack([_plain(item[IMAGE]) for _i, item in pending]).to(device)
        logits = predict_logits(model, imgs, cfg, device)
        if loss_fn is not None:
            labs = torch.stack([_plain(item[LABEL]) for _i, item in pending]).to(logits.device)
            loss_sum += float(loss_fn(logits, labs)) * len(pending)
            n_items += len(pending)
        preds = logits_to_labels(logits, cfg.binary, cfg.infer.threshold).cpu()
        for (i, item), img, pred in zip(pending, imgs, preds):
            lab = _plain(item[LABEL])
            key = item.get("volume_id", i) if isinstance(item, dict) else i
            counts[key] = counts.get(key, 0) + _counts(pred[None], lab[None], cfg.num_classes)
            if not cfg.binary:  # binary: the one foreground class is the whole foreground, counted already
                whole[key] = whole.get(key, 0) + np.array(confusion(pred.numpy() > 0, lab.numpy() > 0)[:3], np.float64)
            fg = int((lab > 0).sum())
            if fg > best_fg:
                best_fg, example = fg, {"image": img.cpu().numpy(), "label": lab[0].numpy(), "pred": pred[0].numpy()}
        pending.clear()

    for i, item in enumerate(val_ds):
        if pending and (len(pending) == per_call or pending[0][1][IMAGE].shape != item[IMAGE].shape):
            run()
        pending.append((i, item))
    if pending:
        run()
    dice = np.mean([[dice_from_counts(*row) for row in c] for c in counts.values()], axis=0)
    dice_whole = float(np.mean([dice_from_counts(*c) for c in whole.values()])) if whole else float(dice[0])
    return Validation(dice, dice_whole, loss_sum / n_items if n_items else None, example)


PANEL_MIN_SIDE = 256  # TensorBoard shows images at their own size: a 48-pixel slice would be a speck
LEGEND = (
    ("ground truth", "contour", "GT_COLOUR"),
    ("prediction", "contour", "PRED_COLOUR"),
    ("false positive", "fill", "FP_COLOUR"),
    ("false negative", "fill", "FN_COLOUR"),
)


def _panel(example: dict) -> np.ndarray:
    """The validation example for TensorBoard: contours and error shading on the image, scaled up (nearest
    neighbour) to at least PANEL_MIN_SIDE pixels on the short side, with a colour legend strip below."""
    from medseg.reporting.viz import overlay, to_display_rgb

    img, gt, pred = example["image"], example["label"], example["pred"]
    if img.ndim == 4:  # 3D: the axial slice with the most ground truth
        z = int(np.argmax((gt > 0).sum(axis=(0, 1)))) if gt.any() else gt.shape[2] // 2
        img, gt, pred = img[..., z], gt[..., z], pred[..., z]
    factor = max(1, math.ceil(PANEL_MIN_SIDE / max(1, min(gt.shape[:2]))))

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)

    # contours are drawn after scaling, so they stay one pixel wide instead of growing with the factor
    rgb = up(to_display_rgb(img))
    panel = overlay(rgb, up(gt > 0), up(pred > 0))
    return np.concatenate([panel, _legend_strip(panel.shape[1])], axis=0)


def _legend_strip(width: int, height: int = 22) -> np.ndarray:
    """A dark ``(height, width, 3)`` strip naming the overlay colours: a swatch and a word for each."""
    from PIL import Image, ImageDraw

    from medseg.reporting import viz

    strip = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    x = 4
    for name, style, colour_name in LEGEND:
        colour = tuple(getattr(viz, colour_name))
        box = (x, 6, x + 10, 16)
        if style == "contour":
            draw.rectangle(box, outline=colour, width=2)
        else:
            draw.rectangle(box, fill=colour)
        draw.text((x + 14, 5), name, fill=(235, 235, 235))
        x += 14 + int(draw.textlength(name)) + 12
    return np.asarray(strip)


def make_loader(ds, batch: int, num_workers: int, generator, weights=None):
    """Shuffled batches, or with ``weights`` batches drawn with replacement in proportion to them (one epoch is
    still ``len(ds)`` samples). With no worker processes, a background thread prefetches the next batch
    (augmentation overlaps the training step: MONAI's ThreadDataLoader); with workers, a multi-process DataLoader."""
    from monai.data import DataLoader, ThreadDataLoader
    from torch.utils.data import WeightedRandomSampler

    common = {"batch_size": batch, "drop_last": len(ds) > batch, "generator": generator}
    if weights is not None:
        common["sampler"] = WeightedRandomSampler(weights, len(ds), replacement=True, generator=generator)
    else:
        common["shuffle"] = True
    if num_workers == 0:
        return ThreadDataLoader(ds, buffer_size=2, num_workers=0, **common)
    return DataLoader(ds, num_workers=num_workers, persistent_workers=True, **common)


def positive_weights(has_fg: list[bool], pos_fraction: float | None) -> list[float] | None:
    """Sampling weights that make ``pos_fraction`` of the drawn samples ones with foreground (None: no reweighting,
    also when every or no sample has foreground)."""
    if pos_fraction is None:
        return None
    if not 0 < pos_fraction < 1:
        raise MedsegError(f"train.pos_slice_fraction must be between 0 and 1, not {pos_fraction}; fix: e.g. 0.5")
    n_pos = sum(has_fg)
    n_neg = len(has_fg) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    return [pos_fraction / n_pos if f else (1 - pos_fraction) / n_neg for f in has_fg]


def _has_foreground(ds, samples: list[dict]) -> list[bool]:
    """Whether each training sample's mask has foreground: from the cache when there is one, else by reading it."""
    cache = getattr(ds, "_cache", None)
    if cache and len(cache) == len(samples) and all(isinstance(c, dict) and LABEL in c for c in cache):
        return [bool(torch.as_tensor(c[LABEL]).any()) for c in cache]
    from medseg.data.transforms import binarise_mask_2d
    from medseg.io import read_image_2d

    return [bool(binarise_mask_2d(read_image_2d(s[LABEL], kind="mask")).any()) for s in samples]


def _intensity_stats(ds) -> dict:
    stats = [
        item["image_meta"]["stats"]
        for item in getattr(ds, "_cache", [])
        if isinstance(item, dict) and "image_meta" in item
    ]
    if not stats:
        return {}
    means = np.array([s[0] for s in stats])
    stds = np.array([s[1] for s in stats])
    return {
        "mean": means.mean(axis=0).round(4).tolist(),
        "std": np.sqrt((stds**2).mean(axis=0)).round(4).tolist(),
        "n_images": len(stats),
    }


def _flat_hparams(cfg: Config) -> dict:
    out = {}
    for sec in ("model", "train", "preprocess", "augment"):
        for k, v in getattr(cfg, sec).__dict__.items():
            if isinstance(v, (int, float, str, bool)):
                out[f"{sec}.{k}"] = v
            elif isinstance(v, list):
                out[f"{sec}.{k}"] = str(v)
    return out


class _NullWriter:
    """Stands in for SummaryWriter on ranks other than 0."""

    def __getattr__(self, name):
        return lambda *a, **k: None


@dataclass
class DistInfo:
    rank: int
    world: int
    local_rank: int

    @property
    def main(self) -> bool:
        return self.rank == 0


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _backend(device: str) -> str:
    return "nccl" if device != "cpu" and torch.cuda.is_available() else "gloo"


def _ddp_worker(
    rank: int,
    world: int,
    port: int,
    cfg_dict: dict,
    data_dir: str,
    run_dir: str,
    device: str,
    resume: bool,
    progress: bool,
) -> None:
    import torch.distributed as dist

    from medseg.config import config_from_dict

    dist.init_process_group(_backend(device), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        with user_errors():
            _train(
                config_from_dict(cfg_dict),
                data_dir,
                run_dir,
                device=device,
                resume=resume,
                progress=progress,
                prepared=True,
                dist_info=DistInfo(rank, world, rank),
            )
    finally:
        dist.destroy_process_group()


def train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log=print,
    on_epoch_end=None,
    nproc: int = 1,
) -> TrainResult:
    """Train ``cfg`` on ``data_dir`` into ``out_dir``; see :func:`_train`.

    ``nproc > 1`` runs DistributedDataParallel in that many local processes (NCCL on GPUs, gloo on CPUs);
    under ``torchrun`` (``WORLD_SIZE`` set) each launched process joins the group itself. The data are split
    across ranks, ``train.batch_size`` is the global batch, and only rank 0 writes checkpoints and TensorBoard.
    Errors in data loading surface as MedsegError.
    """
    import os

    with user_errors():
        world_env = int(os.environ.get("WORLD_SIZE", "1"))
        if world_env > 1:  # launched by torchrun
            import torch.distributed as dist

            if not dist.is_initialized():
                dist.init_process_group(_backend(device))
            info = DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
            box = [str(Path(out_dir) if out_dir else default_run_dir(cfg.name))]
            dist.broadcast_object_list(box, src=0)
            if info.main:
                prepare_run_dir(Path(box[0]), resume, force)
            dist.barrier()
            return _train(
                cfg,
                data_dir,
                box[0],
                device,
                resume,
                progress=progress,
                log=log,
                on_epoch_end=on_epoch_end,
                prepared=True,
                dist_info=info,
            )
        if nproc > 1:
            import torch.multiprocessing as mp

            check_config(cfg)
            if cfg.train.batch_size % nproc:
                raise MedsegError(
                    f"train.batch_size {cfg.train.batch_size} (the global batch) is not divisible by "
                    f"--nproc {nproc}; fix: use a batch size that is a multiple of {nproc}"
                )
            if device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() < nproc:
                raise MedsegError(
                    f"--nproc {nproc} needs {nproc} GPUs, {torch.cuda.device_count()} visible; fix: lower --nproc"
                )
            run_dir = Path(out_dir) if out_dir else default_run_dir(cfg.name)
            prepare_run_dir(run_dir, resume, force)
            t0 = time.time()
            log(f"starting {nproc} processes ({_backend(device)})")
            mp.spawn(
                _ddp_worker,
                args=(nproc, _free_port(), cfg.to_dict(), str(data_dir), str(run_dir), device, resume, progress),
                nprocs=nproc,
                join=True,
            )
            history = _read_history(run_dir / "history.csv")
            best = load_checkpoint(run_dir / "best.pt")
            res = TrainResult(
                run_dir, float(best["best_metric"]), int(best["best_epoch"]), len(history), time.time() - t0, history
            )
            validated = any(k.startswith("val_") for row in history for k in row)
            log(
                f"done in {res.seconds:.0f}s on {nproc} processes: {_best_summary(res.best_metric, validated)} "
                f"at epoch {res.best_epoch}; checkpoints in {run_dir}"
            )
            return res
        return _train(cfg, data_dir, out_dir, device, resume, force, progress, log, on_epoch_end)


def _train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    log=print,
    on_epoch_end=None,
    prepared: bool = False,
    dist_info: DistInfo | None = None,
) -> TrainResult:
    """Train ``cfg`` on the data in ``data_dir`` and write checkpoints and TensorBoard logs to ``out_dir``.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are on
    disk (``row`` is that epoch's history row), e.g. for notebooks or early stopping.

    Returns a :class:`TrainResult`; raises :class:`MedsegError` on bad input.
    """
    from monai.data import Dataset
    from monai.utils import set_determinism
    from torch.utils.tensorboard import SummaryWriter

    from medseg.data.cache import CaseCache as CacheDataset  # stops its loading threads when a case fails

    check_config(cfg)
    info = dist_info or DistInfo(0, 1, 0)
    world = info.world
    if not info.main:
        log, progress, on_epoch_end = (lambda *a, **k: None), False, None
    run_dir = Path(out_dir) if out_dir else default_run_dir(cfg.name)
    if not prepared:
        prepare_run_dir(run_dir, resume, force)
    dev = resolve_device(device)
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(dev)
    if dev.type == "cpu":
        configure_cpu_threads(cfg.train.num_workers)
        if world > 1:
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    set_determinism(seed=cfg.train.seed)
    loss_fn = build_loss(cfg)  # draws no random numbers; check_config has already refused bad loss settings

    result = load_samples(cfg.data.recipe, data_dir, {**cfg.data.options, "channels": cfg.data.channels})
    for w in result.warnings[:10]:
        log(f"warning: {w}")
    if len(result.warnings) > 10:
        log(f"warning: ... and {len(result.warnings) - 10} more")
    samples = result.samples
    if resume and (run_dir / "split.json").is_file():
        import json

        split = json.loads((run_dir / "split.json").read_text())
    else:
        split = make_split(samples, cfg.data.split)
        if info.main:
            _write_run_start(run_dir, split, cfg)
    train_samples, val_samples = select(samples, split["train"]), select(samples, split["val"])
    n_train_total = len(train_samples)
    if world > 1:  # each rank caches and trains on its own share of the data
        from monai.data import partition_dataset

        train_samples = partition_dataset(
            train_samples, num_partitions=world, shuffle=True, seed=cfg.train.seed, even_divisible=True
        )[info.rank]
        val_samples = val_samples if info.main else []
    if not val_samples:
        log("warning: no validation cases; the best checkpoint will track the training loss instead")
    log(
        f"{cfg.name}: {n_train_total} training and {len(val_samples)} validation samples ({split['method']}) -> {run_dir}"
    )

    t0 = time.time()
    if cfg.train.cache:
        # MONAI's own bar is unnamed ("Loading dataset") and redraws with carriage returns: one line instead
        log(f"caching {len(train_samples)} training and {len(val_samples)} validation samples...")
        kw = {"cache_rate": 1.0, "num_workers": min(4, os.cpu_count() or 1), "progress": False}
        train_ds = CacheDataset(train_samples, train_transforms(cfg), **kw)
        val_ds = CacheDataset(val_samples, val_transforms(cfg), **kw) if val_samples else []
    else:
        train_ds = Dataset(train_samples, train_transforms(cfg))
        val_ds = Dataset(val_samples, val_transforms(cfg)) if val_samples else []
    intensity_stats = _intensity_stats(train_ds)
    log(f"data ready in {time.time() - t0:.1f}s")

    spec = model_spec(cfg)
    net = build_model(spec).to(dev)
    model = net
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(net, device_ids=[dev] if dev.type == "cuda" else None)
    optimizer = build_optimizer(cfg, model.parameters())
    ema = build_ema(net, cfg.train.ema)
    gen = torch.Generator()
    batch = cfg.train.batch_size // world
    weights = None
    if cfg.data.spatial_dims == 2 and cfg.train.pos_slice_fraction is not None:
        flags = _has_foreground(train_ds, train_samples)
        weights = positive_weights(flags, cfg.train.pos_slice_fraction)
        log(
            f"{sum(flags)} of {len(flags)} training samples have foreground; drawn as "
            f"{cfg.train.pos_slice_fraction:.0%} of each epoch"
            if weights
            else "positive-slice oversampling not needed"
        )
    loader = make_loader(train_ds, batch, cfg.train.num_workers, gen, weights)
    steps_per_epoch = (
        len(loader) if not cfg.train.max_steps_per_epoch else min(len(loader), cfg.train.max_steps_per_epoch)
    )
    total_steps = cfg.train.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg, total_steps, steps_per_epoch))
    autocast = amp_dtype(dev, cfg.train.amp)
    use_amp = autocast == torch.float16  # float16 needs loss scaling; bfloat16 has float32's range and does not
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    if autocast is not None:
        log(f"mixed precision: {precision_name(autocast)} on {dev.type} (train.amp: false turns it off)")

    start_epoch, best_metric, best_epoch, history = 0, -math.inf, -1, []
    if resume:
        ck = load_checkpoint(run_dir / "last.pt", map_location=dev)
        net.load_state_dict(ck.get("train_state_dict", ck["state_dict"]))
        if ema is not None:
            if "train_state_dict" not in ck:
                raise fail(
                    run_dir / "last.pt", "was trained without train.ema", "resume with the run's own config.yaml"
                )
            ema.module.load_state_dict(ck["state_dict"])
            ema.n_averaged.fill_(int(ck.get("ema_updates", 1)))
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        scaler.load_state_dict(ck.get("scaler", {})) if ck.get("scaler") else None
        set_rng_state(ck["rng"])
        start_epoch, best_metric, best_epoch = ck["epoch"], ck["best_metric"], ck["best_epoch"]
        history = _resumed_history(ck, run_dir / "history.csv", log)
        if info.main:
            _write_history(run_dir / "history.csv", history)  # agree with last.pt before the first new epoch
        log(f"resuming {run_dir} at epoch {start_epoch + 1}/{cfg.train.epochs}")
        if start_epoch >= cfg.train.epochs:
            log("nothing to do: the run already reached train.epochs (raise it with --epochs)")

    writer = (
        SummaryWriter(str(run_dir / "tb"), purge_step=start_epoch * steps_per_epoch if resume else None)
        if info.main
        else _NullWriter()
    )
    base = {
        "model": spec,
        "config": cfg.to_dict(),
        "labels": list(cfg.data.labels),
        "channels": list(cfg.data.channels),
        "preprocess": cfg.to_dict()["preprocess"],
        "infer": cfg.to_dict()["infer"],
        "intensity_stats": intensity_stats,
        "roi_size": roi_size(cfg),
        "split": {k: split[k] for k in ("train", "val", "test")},
        "data": {
            "recipe": cfg.data.recipe,
            "data_dir": str(data_dir),
            "n_train": n_train_total,
            "n_val": len(val_samples),
            "split_method": split["method"],
        },
    }
    bar = progress_bar(total_steps, cfg.name, progress, unit="steps", initial=start_epoch * steps_per_epoch)
    n_validations = sum(r.get("val_mean_dice") not in (None, "") for r in history)  # those before a resume count too
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, cfg.train.epochs):
        seed = cfg.train.seed + epoch
        torch.manual_seed(seed)
        gen.manual_seed(seed + 7919 * info.rank)
        if hasattr(train_ds, "transform"):
            train_ds.transform.set_random_state(seed=seed + 7919 * info.rank)
        model.train()
        t_epoch, losses = time.perf_counter(), []
        for i, batch in enumerate(loader):
            if i >= steps_per_epoch:
                break
            x, y = batch[IMAGE].to(dev, non_blocking=True), batch[LABEL].to(dev, non_blocking=True)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(device_type=dev.type, dtype=autocast, enabled=autocast is not None):
                out = model(x)
            loss = loss_fn(as_float(out), y)  # the loss's sums and logs in float32 on every device
            if not torch.isfinite(loss):
                raise MedsegError(
                    f"training diverged at epoch {epoch + 1} (loss is {loss.item()}); fix: lower train.lr "
                    "or check the images for extreme values"
                )
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(net)
            losses.append(loss.item())
            step += 1
            bar.set_postfix(epoch=f"{epoch + 1}/{cfg.train.epochs}", loss=f"{np.mean(losses):.4f}")
            bar.update(1)
        train_loss = float(np.mean(losses)) if losses else float("nan")
        writer.add_scalar("train/loss", train_loss, step)
        writer.add_scalar("train/lr", optimizer.param_groups[0]["lr"], step)
        writer.add_scalar("train/epoch_seconds", time.perf_counter() - t_epoch, step)
        row = {
            "epoch": epoch + 1,
            "train_loss": round(train_loss, 6),
            "lr": optimizer.param_groups[0]["lr"],
            "seconds": round(time.perf_counter() - t_epoch, 2),
        }
        metric = None
        is_val_epoch = (epoch + 1) % cfg.train.val_every == 0 or epoch + 1 == cfg.train.epochs
        if val_samples and is_val_epoch:
            t_val = time.perf_counter()
            val = validate(ema.module if ema is not None else net, val_ds, cfg, dev, loss_fn)
            dice, example = val.dice, val.example
            # 4 decimals: on a small set a pass takes milliseconds, and 0.0 would read as "not timed"
            row["validation_seconds"] = round(time.perf_counter() - t_val, 4)
            writer.add_scalar("val/seconds", row["validation_seconds"], step)
            metric = float(np.mean(dice))
            for name, v in zip(cfg.data.labels[1:], dice):
                writer.add_scalar(f"val/dice_{name}", float(v), step)
                row[f"val_dice_{name}"] = round(float(v), 5)
            writer.add_scalar("val/mean_dice", metric, step)
            row["val_mean_dice"] = round(metric, 5)
            if cfg.num_classes > 2:  # the foreground classes as one region (BraTS' whole tumour)
                writer.add_scalar("val/dice_whole", val.dice_whole, step)
                row["val_dice_whole"] = round(val.dice_whole, 5)
            if val.loss is not None:
                writer.add_scalar("val/loss", val.loss, step)
                row["val_loss"] = round(val.loss, 6)
            # counted in validations, not epochs: validation runs every val_every epochs
            if example is not None and (
                n_validations % max(1, cfg.train.image_log_every) == 0 or epoch + 1 == cfg.train.epochs
            ):
                writer.add_image("val/overlay", _panel(example), step, dataformats="HWC")
            n_validations += 1
            bar.write(
                f"epoch {epoch + 1}: loss {train_loss:.4f}, val loss {val.loss:.4f}, val Dice "
                + ", ".join(f"{n} {v:.4f}" for n, v in zip(cfg.data.labels[1:], dice))
            )
        elif not val_samples:
            metric = -train_loss
        history.append(row)
        improved = metric is not None and metric > best_metric
        if improved:
            best_metric, best_epoch = metric, epoch + 1
        if info.main:
            # With train.ema the averaged weights are the model (validated, inferred with); the raw ones resume.
            weights = ema.module.state_dict() if ema is not None else net.state_dict()
            payload = {
                **base,
                "state_dict": weights,
                "epoch": epoch + 1,
                "best_metric": best_metric,
                "best_epoch": best_epoch,
                "world_size": world,
                # Dice only: reports show these under "Validation Dice"; val_loss is in the history
                "val_metrics": {k: v for k, v in row.items() if k.startswith("val_") and "dice" in k},
            }
            # best.pt, then last.pt (which carries the history), then history.csv: a kill between any two leaves
            # last.pt the truth a resume restarts from, and history.csv is rewritten from it then.
            if improved:
                _save_checkpoint_or_explain(payload, run_dir / "best.pt")
            _save_checkpoint_or_explain(
                {
                    **payload,
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict() if use_amp else {},
                    "rng": rng_state(),
                    "history": history,
                    **(
                        {"train_state_dict": net.state_dict(), "ema_updates": int(ema.n_averaged)}
                        if ema is not None
                        else {}
                    ),
                },
                run_dir / "last.pt",
            )
            _write_history(run_dir / "history.csv", history)
        if world > 1:
            import torch.distributed as dist

            dist.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch + 1, row)
    bar.close()
    if info.main and not (run_dir / "best.pt").exists() and (run_dir / "last.pt").exists():
        ck = load_checkpoint(run_dir / "last.pt")
        _save_checkpoint_or_explain(
            {
                k: v
                for k, v in ck.items()
                if k not in RESUME_ONLY + ("format", "format_version", "medseg_version", "created")
            },
            run_dir / "best.pt",
        )
    hp = _flat_hparams(cfg)
    hp_metric = {"hparam/best_val_dice": best_metric} if val_samples else {"hparam/best_train_loss": -best_metric}
    writer.add_hparams(hp, {k: v if math.isfinite(v) else 0.0 for k, v in hp_metric.items()}, run_name="hparams")
    writer.close()
    seconds = time.time() - t0
    log(
        f"done in {seconds:.0f}s: {_best_summary(best_metric, bool(val_samples))} at epoch {best_epoch}; "
        f"checkpoints in {run_dir}"
    )
    return TrainResult(run_dir, best_metric, best_epoch, len(history), seconds, history)


def _write_run_start(run_dir: Path, split: dict, cfg: Config) -> None:
    """split.json and config.yaml, each atomically; a failure names the file and says nothing was trained yet."""
    safe, fix = "nothing was trained yet", f"free disk space (or make {run_dir} writable) and run again"
    _write_or_explain(run_dir / "split.json", lambda tmp: save_split(split, tmp), "the split", safe, fix)
    _write_or_explain(run_dir / "config.yaml", lambda tmp: save_config(cfg, tmp), "the config", safe, fix)


def _best_summary(best_metric: float, validated: bool) -> str:
    """What picked ``best.pt``: the validation Dice, or without validation cases the training loss (which training
    stores negated, so that higher is better throughout)."""
    return f"best validation Dice {best_metric:.4f}" if validated else f"lowest training loss {-best_metric:.4f}"


def _write_history(path: Path, rows: list[dict]) -> None:
    """history.csv, atomically. last.pt holds the same rows, so a failure here loses nothing a resume needs."""
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    _write_or_explain(
        path,
        write,
        "the training history",
        "last.pt holds this epoch and the history up to it",
        "free disk space and run again with --resume (history.csv is rewritten from last.pt)",
    )


def _resumed_history(ck: dict, path: Path, log) -> list[dict]:
    """The history rows of the epochs ``last.pt`` holds, one per epoch.

    A kill or a full disk between the checkpoint and the history write leaves history.csv an epoch behind or
    ahead of last.pt; last.pt is the truth. Checkpoints from before it stored the history fall back on
    history.csv, cut to last.pt's epoch.
    """
    epoch = int(ck["epoch"])
    if isinstance(ck.get("history"), list):
        return [dict(r) for r in ck["history"]]
    by_epoch: dict = {}
    for row in _read_history(path):
        try:
            e = int(float(row.get("epoch", "")))
        except ValueError:
            continue
        if 1 <= e <= epoch:
            by_epoch[e] = row  # a repeated epoch: the later row is the one whose checkpoint followed
    missing = [e for e in range(1, epoch + 1) if e not in by_epoch]
    if missing:
        log(f"warning: {path} has no row for epoch(s) {', '.join(map(str, missing))} of last.pt; they stay missing")
    return [by_epoch[e] for e in sorted(by_epoch)]


def _read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def load_run_config(run_dir: Path) -> dict:
    p = run_dir / "config.yaml"
    if not p.is_file():
        raise fail(run_dir, "has no config.yaml", "resume only runs started by medseg train")
    return yaml.safe_load(p.read_text())
