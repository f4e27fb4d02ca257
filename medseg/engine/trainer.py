"""The training loop as named steps: :class:`Trainer`.

One loop serves 2D and 3D, binary and multi-class (the task, :mod:`medseg.tasks`, holds what differs). Per epoch
the random state of augmentation, shuffling and dropout is re-seeded from ``seed + epoch``, so a run resumed from
``last.pt`` continues exactly as if it had never stopped (on CPU with ``num_workers: 0``).

Each step is a method: change one by subclassing and overriding it (``train_step``, ``validate``,
``end_epoch``, ...), or pass ``on_epoch_end`` for a callback after each epoch's checkpoints are on disk. The policy
pieces live in their own modules: device and precision (:mod:`~medseg.engine.precision`), processes
(:mod:`~medseg.engine.distributed`), data and sampling (:mod:`~medseg.engine.loading`), optimiser, schedule and
EMA (:mod:`~medseg.engine.optim`), checkpoints (:mod:`~medseg.engine.checkpoints`), the run folder
(:mod:`~medseg.engine.run_folder`) and TensorBoard (:mod:`~medseg.engine.tensorboard`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from medseg.config import Config
from medseg.data import IMAGE, LABEL
from medseg.engine import checkpoints
from medseg.engine.checks import check_config
from medseg.engine.distributed import barrier, silence_other_ranks, wrap_model
from medseg.engine.loading import load_training_data, training_loader
from medseg.engine.losses import build_loss
from medseg.engine.optim import (
    build_ema,
    build_optimizer,
    build_schedule,
    freeze_encoder,
    may_idle,
    parameter_groups,
)
from medseg.engine.precision import Precision, training_device
from medseg.engine.run_folder import default_run_dir, prepare_run_dir, resumed_history, write_history
from medseg.engine.tensorboard import Board
from medseg.engine.validation import Validation, validate
from medseg.errors import MedsegError
from medseg.inference.predictor import roi_size
from medseg.log import get_logger
from medseg.models import build_model, model_spec
from medseg.parallel import SINGLE, DistInfo
from medseg.progress import progress_bar

log = get_logger(__name__)


@dataclass
class TrainResult:
    run_dir: Path
    best_metric: float
    best_epoch: int
    epochs_run: int
    seconds: float
    history: list[dict] = field(default_factory=list)


def as_float(out):
    """Network output (a tensor, or a list of them with deep supervision) as float32."""
    return [o.float() for o in out] if isinstance(out, (list, tuple)) else out.float()


def best_summary(best_metric: float, validated: bool) -> str:
    """What picked ``best.pt``: the validation Dice, or without validation cases the training loss (which training
    stores negated, so that higher is better throughout)."""
    return f"best validation Dice {best_metric:.4f}" if validated else f"lowest training loss {-best_metric:.4f}"


class Trainer:
    """Train ``cfg`` on the data in ``data_dir``; checkpoints and TensorBoard logs go to ``run_dir``.

    ``on_epoch_end(epoch, row)`` is called after each epoch's checkpoints are on disk (``row`` is that epoch's
    history row), e.g. for notebooks or early stopping. ``prepared``: the run folder was made ready already (by
    the process that launched this one). :meth:`fit` returns a :class:`TrainResult`.
    """

    def __init__(
        self,
        cfg: Config,
        data_dir,
        run_dir=None,
        device: str = "auto",
        resume: bool = False,
        force: bool = False,
        progress: bool = True,
        on_epoch_end=None,
        prepared: bool = False,
        dist_info: DistInfo | None = None,
        init=None,
    ):
        if init and resume:
            raise MedsegError(
                "--init starts a new run from another model and --resume continues this one; fix: use one"
            )
        self.init = Path(init) if init else None
        self.cfg, self.data_dir, self.device_name = cfg, data_dir, device
        self.run_dir = Path(run_dir) if run_dir else default_run_dir(cfg.name)
        self.resume, self.force, self.prepared = resume, force, prepared
        self.info = dist_info or SINGLE
        self.progress = progress and self.info.main
        self.on_epoch_end = on_epoch_end if self.info.main else None

    def fit(self) -> TrainResult:
        self.setup()
        for epoch in range(self.start_epoch, self.cfg.train.epochs):
            self.begin_epoch(epoch)
            row = self.train_epoch(epoch)
            metric = self.validate(epoch, row)
            self.end_epoch(epoch, row, metric)
        return self.finish()

    # --- setting up: the order of these steps is the order random numbers are drawn in; keep it ---

    def setup(self) -> None:
        from monai.utils import set_determinism

        check_config(self.cfg)
        silence_other_ranks(self.info)
        if not self.prepared:
            prepare_run_dir(self.run_dir, self.resume, self.force)
        self.dev = training_device(self.device_name, self.info, self.cfg.train.num_workers)
        set_determinism(seed=self.cfg.train.seed)
        self.loss_fn = build_loss(self.cfg)  # draws no random numbers
        self.data = load_training_data(self.cfg, self.data_dir, self.run_dir, self.resume, self.info)
        self.build_model()
        self.build_optimisation()
        self.start_epoch, self.best_metric, self.best_epoch, self.history = 0, -math.inf, -1, []
        if self.resume:
            self.restore()
        self.step = self.start_epoch * self.steps_per_epoch
        self.board = Board(self.run_dir, self.info.main, self.step if self.resume else None)
        self.facts = checkpoints.run_facts(self.cfg, self.spec, roi_size(self.cfg), self.data, self.data_dir)
        if self.weights:
            self.facts["weights"] = self.weights
        total = self.cfg.train.epochs * self.steps_per_epoch
        self.bar = progress_bar(total, self.cfg.name, self.progress, unit="steps", initial=self.step)
        # counted in validations, not epochs (validation runs every val_every epochs); those before a resume count
        self.n_validations = sum(r.get("val_mean_dice") not in (None, "") for r in self.history)

    def build_model(self) -> None:
        self.spec = model_spec(self.cfg)
        net = build_model(self.spec)
        self.weights = None if self.resume else self.starting_weights(net)  # a resume reads its own from last.pt
        self.net = net.to(self.dev)
        self.model = wrap_model(self.net, self.dev, self.info, may_idle(self.cfg, net))  # what the step calls
        # a detector (Mask R-CNN) takes the labels and returns its own loss in training
        self.own_loss = bool(getattr(net, "computes_own_loss", False))

    def starting_weights(self, net) -> dict | None:
        """Fill ``net`` from ``--init`` (a medseg model) or ``model.pretrained`` (encoder weights), log what
        loaded, and return the report the checkpoints keep (None: random initialisation)."""
        from medseg.models.pretrained import find_encoder, load_init, load_pretrained, other_intensity_warning

        pretrained = self.cfg.model.pretrained
        if self.cfg.train.freeze_encoder_epochs:
            find_encoder(net)  # a network without one stops here, not at the first epoch
        if self.init is not None:
            if pretrained:
                log.info(f"--init {self.init} replaces model.pretrained ({pretrained})")
            report = load_init(net, self.init)
        elif pretrained:
            report = load_pretrained(net, pretrained, self.spec["kwargs"].get("encoder"))
        else:
            return None
        log.info(f"starting weights: {report.summary()}")
        if warning := other_intensity_warning(report, self.cfg.preprocess.intensity):
            log.warning(warning)
        return {**report.to_dict(), "option": "--init" if self.init is not None else "model.pretrained"}

    def build_optimisation(self) -> None:
        """Optimiser, weight averaging, the loader (its sampler draws from its own generator), schedule, precision."""
        cfg = self.cfg
        self.optimizer = build_optimizer(cfg, parameter_groups(cfg, self.net))
        self.ema = build_ema(self.net, cfg.train.ema)
        self.generator = torch.Generator()
        self.loader = training_loader(cfg, self.data, cfg.train.batch_size // self.info.world, self.generator)
        cap = cfg.train.max_steps_per_epoch
        self.steps_per_epoch = min(len(self.loader), cap) if cap else len(self.loader)
        self.scheduler = build_schedule(cfg, self.optimizer, self.steps_per_epoch)
        self.precision = Precision(self.dev, cfg.train.amp)
        if self.precision.describe():
            log.info(self.precision.describe())

    def restore(self) -> None:
        parts = (self.net, self.ema, self.optimizer, self.scheduler, self.precision)
        ck = checkpoints.restore(self.run_dir / "last.pt", self.dev, *parts)
        self.start_epoch, self.best_metric, self.best_epoch = ck["epoch"], ck["best_metric"], ck["best_epoch"]
        self.history = resumed_history(ck, self.run_dir / "history.csv")
        self.weights = ck.get("weights")
        if self.info.main:
            write_history(self.run_dir / "history.csv", self.history)  # agree with last.pt before the next epoch
        log.info(f"resuming {self.run_dir} at epoch {self.start_epoch + 1}/{self.cfg.train.epochs}")
        if self.start_epoch >= self.cfg.train.epochs:
            log.info("nothing to do: the run already reached train.epochs (raise it with --epochs)")

    # --- one epoch ---

    def begin_epoch(self, epoch: int) -> None:
        """Seed augmentation, shuffling and dropout from ``seed + epoch`` (each rank its own stream)."""
        seed = self.cfg.train.seed + epoch
        frozen = self.cfg.train.freeze_encoder_epochs
        if frozen:
            freeze_encoder(self.net, epoch < frozen)
            if epoch == frozen:
                log.info(f"epoch {epoch + 1}: the encoder trains from now on (train.freeze_encoder_epochs {frozen})")
        torch.manual_seed(seed)
        self.generator.manual_seed(seed + 7919 * self.info.rank)
        if hasattr(self.data.train_ds, "transform"):
            self.data.train_ds.transform.set_random_state(seed=seed + 7919 * self.info.rank)

    def train_epoch(self, epoch: int) -> dict:
        """One pass over the loader (at most ``train.max_steps_per_epoch`` steps); returns the history row."""
        self.model.train()
        started, losses = time.perf_counter(), []
        for i, batch in enumerate(self.loader):
            if i >= self.steps_per_epoch:
                break
            losses.append(self.train_step(batch, epoch))
            self.step += 1
            self.bar.set_postfix(epoch=f"{epoch + 1}/{self.cfg.train.epochs}", loss=f"{np.mean(losses):.4f}")
            self.bar.update(1)
        self.epoch_loss = loss = float(np.mean(losses)) if losses else float("nan")
        lr = self.optimizer.param_groups[0]["lr"]
        self.board.training(loss, lr, time.perf_counter() - started, self.step)
        return {
            "epoch": epoch + 1,
            "train_loss": round(loss, 6),
            "lr": lr,
            "seconds": round(time.perf_counter() - started, 2),
        }

    def train_step(self, batch: dict, epoch: int) -> float:
        """Forward, loss, backward, optimiser and schedule step, weight averaging; returns the loss."""
        x, y = batch[IMAGE].to(self.dev, non_blocking=True), batch[LABEL].to(self.dev, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.precision.autocast():
            out = self.model(x, y) if self.own_loss else self.model(x)
        # the loss's sums and logs in float32 on every device
        loss = out.float() if self.own_loss else self.loss_fn(as_float(out), y)
        if not torch.isfinite(loss):
            raise MedsegError(
                f"training diverged at epoch {epoch + 1} (loss is {loss.item()}); fix: lower train.lr "
                "or check the images for extreme values"
            )
        scaler = self.precision.scaler
        scaler.scale(loss).backward()
        scaler.step(self.optimizer)
        scaler.update()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update_parameters(self.net)
        return loss.item()

    def validate(self, epoch: int, row: dict) -> float | None:
        """Validate on validation epochs (every ``train.val_every`` and the last) and add the scores to ``row``;
        return the metric that picks best.pt (mean Dice; without validation cases the negated training loss)."""
        if not self.data.val_samples:
            return -self.epoch_loss
        if (epoch + 1) % self.cfg.train.val_every and epoch + 1 != self.cfg.train.epochs:
            return None
        started = time.perf_counter()
        # a network with its own training loss has no comparable loss on the rendered validation output
        val = validate(
            self.inference_model, self.data.val_ds, self.cfg, self.dev, None if self.own_loss else self.loss_fn
        )
        # 4 decimals: on a small set a pass takes milliseconds, and 0.0 would read as "not timed"
        row["validation_seconds"] = round(time.perf_counter() - started, 4)
        self.board.validation(val, self.cfg.data.labels, row["validation_seconds"], self.step)
        row.update(validation_row(val, self.cfg.data.labels))
        last = epoch + 1 == self.cfg.train.epochs
        if val.example is not None and (self.n_validations % max(1, self.cfg.train.image_log_every) == 0 or last):
            self.board.panel(val.example, self.step)
        self.n_validations += 1
        log.info(epoch_line(epoch, self.epoch_loss, val, self.cfg.data.labels))
        return float(np.mean(val.dice))

    @property
    def inference_model(self) -> torch.nn.Module:
        """The model validated and saved: the weight average with ``train.ema``, else the network itself."""
        return self.ema.module if self.ema is not None else self.net

    def end_epoch(self, epoch: int, row: dict, metric: float | None) -> None:
        """Record the epoch, track the best, write the checkpoints (rank 0), wait for every rank, call back."""
        self.history.append(row)
        improved = metric is not None and metric > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = metric, epoch + 1
        if self.info.main:
            self.save_checkpoints(epoch, row, improved)
        barrier(self.info)
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch + 1, row)

    def save_checkpoints(self, epoch: int, row: dict, improved: bool) -> None:
        payload = {
            **self.facts,
            "state_dict": self.inference_model.state_dict(),
            "epoch": epoch + 1,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "world_size": self.info.world,
            # Dice only: reports show these under "Validation Dice"; val_loss is in the history
            "val_metrics": {k: v for k, v in row.items() if k.startswith("val_") and "dice" in k},
        }
        resume = checkpoints.resume_state(
            self.optimizer, self.scheduler, self.precision, self.history, self.net, self.ema
        )
        checkpoints.save_epoch(self.run_dir, payload, improved, resume, self.history)

    # --- the end ---

    def finish(self) -> TrainResult:
        self.bar.close()
        validated = bool(self.data.val_samples)
        if self.info.main:
            checkpoints.best_from_last(self.run_dir)
        self.board.close(self.cfg, self.best_metric, validated)
        seconds = time.time() - self.data.started
        log.info(
            f"done in {seconds:.0f}s: {best_summary(self.best_metric, validated)} at epoch {self.best_epoch}; "
            f"checkpoints in {self.run_dir}"
        )
        return TrainResult(self.run_dir, self.best_metric, self.best_epoch, len(self.history), seconds, self.history)


def validation_row(val: Validation, labels: list[str]) -> dict:
    """A validation's entries in the history row: Dice per class, mean, whole foreground (several classes), loss."""
    row = {f"val_dice_{name}": round(float(v), 5) for name, v in zip(labels[1:], val.dice)}
    row["val_mean_dice"] = round(float(np.mean(val.dice)), 5)
    if len(labels) > 2:  # the foreground classes as one region (BraTS' whole tumour)
        row["val_dice_whole"] = round(val.dice_whole, 5)
    if val.loss is not None:
        row["val_loss"] = round(val.loss, 6)
    return row


def epoch_line(epoch: int, train_loss: float, val: Validation, labels: list[str]) -> str:
    val_loss = f", val loss {val.loss:.4f}" if val.loss is not None else ""
    return f"epoch {epoch + 1}: loss {train_loss:.4f}{val_loss}, val Dice " + ", ".join(
        f"{n} {v:.4f}" for n, v in zip(labels[1:], val.dice)
    )
