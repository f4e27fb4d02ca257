"""Launching distributed training: ``--nproc N`` spawns N local processes; under ``torchrun`` each launched
process joins the group itself. NCCL on GPUs, gloo on CPUs; rank 0 alone writes checkpoints and TensorBoard."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from medseg.config import Config
from medseg.engine.checks import check_config
from medseg.engine.run_folder import default_run_dir, prepare_run_dir, read_history
from medseg.engine.trainer import Trainer, TrainResult, best_summary
from medseg.errors import MedsegError, user_errors
from medseg.log import ROOT, StdoutHandler, get_logger, show_log_lines
from medseg.parallel import DistInfo, backend, free_port, join_launched_group

log = get_logger(__name__)


def join_torchrun(cfg: Config, data_dir, out_dir, device: str, resume: bool, force: bool, **trainer_kw) -> TrainResult:
    """Train as one of the processes ``torchrun`` launched: rank 0 picks and prepares the run folder."""
    import torch.distributed as dist

    info, _ = join_launched_group(device)
    box = [str(Path(out_dir) if out_dir else default_run_dir(cfg.name))]
    dist.broadcast_object_list(box, src=0)
    if info.main:
        prepare_run_dir(Path(box[0]), resume, force)
    dist.barrier()
    return Trainer(cfg, data_dir, box[0], device, resume, prepared=True, dist_info=info, **trainer_kw).fit()


def spawn(
    cfg: Config, data_dir, out_dir, device: str, resume: bool, force: bool, progress: bool, nproc: int, init=None
):
    """Train in ``nproc`` local processes and sum up their run from what rank 0 wrote."""
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
    log.info(f"starting {nproc} processes ({backend(device)})")
    # the processes start afresh: tell them whether this one prints its log lines (the command line does)
    shown = any(isinstance(h, StdoutHandler) for h in logging.getLogger(ROOT).handlers)
    args = (nproc, free_port(), cfg.to_dict(), str(data_dir), str(run_dir), device, resume, progress, shown, init)
    mp.spawn(_worker, args=args, nprocs=nproc, join=True)
    return _spawned_result(run_dir, nproc, time.time() - t0)


def _spawned_result(run_dir: Path, nproc: int, seconds: float) -> TrainResult:
    from medseg.checkpoint import load_checkpoint

    history = read_history(run_dir / "history.csv")
    best = load_checkpoint(run_dir / "best.pt")
    res = TrainResult(run_dir, float(best["best_metric"]), int(best["best_epoch"]), len(history), seconds, history)
    validated = any(k.startswith("val_") for row in history for k in row)
    log.info(
        f"done in {res.seconds:.0f}s on {nproc} processes: {best_summary(res.best_metric, validated)} "
        f"at epoch {res.best_epoch}; checkpoints in {run_dir}"
    )
    return res


def _worker(rank, world, port, cfg_dict, data_dir, run_dir, device, resume, progress, shown, init=None) -> None:
    """One spawned process: join the group, train its share, leave the group."""
    import torch.distributed as dist

    from medseg.config import config_from_dict

    if shown:
        show_log_lines()
    dist.init_process_group(backend(device), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        with user_errors():
            info = DistInfo(rank, world, rank)
            cfg = config_from_dict(cfg_dict)
            kw = {"progress": progress, "prepared": True, "dist_info": info, "init": init}
            Trainer(cfg, data_dir, run_dir, device, resume, **kw).fit()
    finally:
        dist.destroy_process_group()
