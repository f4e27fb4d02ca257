"""Training's library entry point: ``train(cfg, data_dir, ...)`` is what ``medseg train`` calls.

The loop itself is :class:`medseg.engine.trainer.Trainer`; this module picks how many processes run it. The
names below are the engine's library surface (notebooks and benchmark scripts import them from here).
"""

from __future__ import annotations

from pathlib import Path

from medseg.config import Config
from medseg.engine.fitting import SearchFit, fits_by_search
from medseg.engine.launch import join_torchrun, spawn
from medseg.engine.loading import make_loader, positive_weights
from medseg.engine.optim import build_ema, build_optimizer, lr_lambda
from medseg.engine.run_folder import default_run_dir, latest_run_dir, load_run_config, prepare_run_dir
from medseg.engine.trainer import Trainer, TrainResult, as_float
from medseg.engine.validation import Validation, validate
from medseg.errors import MedsegError, user_errors
from medseg.parallel import under_torchrun

__all__ = [
    "TrainResult",
    "Trainer",
    "Validation",
    "as_float",
    "build_ema",
    "build_optimizer",
    "default_run_dir",
    "latest_run_dir",
    "load_run_config",
    "lr_lambda",
    "make_loader",
    "positive_weights",
    "prepare_run_dir",
    "train",
    "validate",
]


def train(
    cfg: Config,
    data_dir: str | Path,
    out_dir: str | Path | None = None,
    device: str = "auto",
    resume: bool = False,
    force: bool = False,
    progress: bool = True,
    on_epoch_end=None,
    nproc: int = 1,
    init: str | Path | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``data_dir`` into ``out_dir`` (default ``runs/NAME-<timestamp>``); see :class:`Trainer`.

    ``nproc > 1`` runs DistributedDataParallel in that many local processes (NCCL on GPUs, gloo on CPUs);
    under ``torchrun`` (``WORLD_SIZE`` set) each launched process joins the group itself. The data are split
    across ranks, ``train.batch_size`` is the global batch, and only rank 0 writes checkpoints and TensorBoard.
    Log lines go to the ``medseg.engine`` loggers. Errors in data loading surface as MedsegError.
    ``init``: a medseg checkpoint to start from (everything that fits loads; see
    :func:`medseg.models.pretrained.load_init`).
    """
    with user_errors():
        if fits_by_search(cfg):  # a classical method: one parameter search, on one process
            if under_torchrun() or nproc > 1:
                raise MedsegError(
                    f"{cfg.model.name} is fitted by a search on one process; fix: run medseg train without torchrun "
                    "or --nproc"
                )
            return SearchFit(cfg, data_dir, out_dir, device, resume, force, progress, on_epoch_end, init=init).fit()
        if under_torchrun():
            kw = {"progress": progress, "on_epoch_end": on_epoch_end, "init": init}
            return join_torchrun(cfg, data_dir, out_dir, device, resume, force, **kw)
        if nproc > 1:
            return spawn(cfg, data_dir, out_dir, device, resume, force, progress, nproc, init)
        return Trainer(cfg, data_dir, out_dir, device, resume, force, progress, on_epoch_end, init=init).fit()
