"""``medseg infer``: checkpoint(s) + new images -> masks in each input's exact geometry, and findings.

The checkpoint alone defines preprocessing (channels, orientation, spacing, intensity normalisation, resize); the
:class:`~medseg.inference.predictor.Predictor` runs it and the network and brings the probabilities back onto the
input's voxel grid. Here they become a label map (the task's threshold or arg-max, then the clean-up of
:mod:`medseg.postprocess`), written with the input's own header (NIfTI qform/sform kept), spacing, origin
and direction, beside a findings JSON. The stages:

- :mod:`medseg.inference.cases`: the user's inputs -> cases;
- :mod:`medseg.inference.checkpoints`: the models (given, or the newest that fits);
- :mod:`medseg.inference.options`: what the flags change;
- :mod:`medseg.inference.predictor`: probabilities on the input's grid;
- :mod:`medseg.inference.segment`: one case, from its files to its outputs;
- :mod:`medseg.inference.outputs`: the files;
- :mod:`medseg.inference.batch`: the batch: what to segment or skip, each process's share, the summary.

A batch runs in one process, in ``--nproc N`` local processes, or in the processes ``torchrun`` launches on one
machine or several (NCCL between GPUs, gloo between CPU processes); each case is written by exactly one of them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import torch

from medseg.errors import MedsegError, user_errors
from medseg.inference.batch import (
    SUMMARY_NAME,
    BatchPlan,
    ShareResult,
    batch_failures,
    gather_shares,
    plan_batch,
    read_batch_summary,
    read_findings,
    run_share,
    write_batch_summary,
)
from medseg.inference.cases import refuse_checkpoint_inputs
from medseg.inference.checkpoints import find_default_model, load_models
from medseg.inference.options import InferenceOptions
from medseg.inference.predictor import Predictor
from medseg.log import ROOT, StdoutHandler, get_logger, show_log_lines
from medseg.parallel import (
    SINGLE,
    DistInfo,
    backend,
    free_port,
    join_launched_group,
    rank_device,
    rank_threads,
    under_torchrun,
)

log = get_logger(__name__)


@dataclass
class InferSummary:
    out_dir: Path
    outputs: list[dict] = field(default_factory=list)  # one findings dict per case written, by any process
    failures: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # why a process stopped early (a failed write), also in failures
    skipped: list[dict] = field(default_factory=list)  # findings of cases an earlier run had written
    own: list[dict] | None = None  # the cases this process wrote (None: all of ``outputs``)
    summary_json: Path | None = None
    main: bool = True  # rank 0 (or the only process): it speaks for the batch

    @property
    def written_here(self) -> list[dict]:
        return self.outputs if self.own is None else self.own


def infer(
    inputs: list[str],
    model: list[str] | None = None,
    out: str | Path | None = None,
    device: str = "auto",
    options: InferenceOptions | None = None,
    force: bool = False,
    progress: bool = True,
    nproc: int = 1,
) -> InferSummary:
    """Segment every input; keep going past bad files and raise one MedsegError listing them at the end.

    ``options`` (tta, threshold, clean-up, sliding window, probabilities) default to the checkpoint's ``infer``
    settings; ``model`` defaults to the newest ``runs/**/best.pt`` that fits the inputs. Cases whose outputs an
    earlier run of the same models wrote into ``out`` are skipped unless ``force``. ``nproc`` > 1 shares the cases
    among that many local processes; under ``torchrun`` each launched process takes its share by itself.
    """
    inputs = [str(i) for i in inputs]
    _refuse_empty(inputs)
    refuse_checkpoint_inputs(inputs)
    if nproc < 1:
        raise MedsegError(f"--nproc {nproc}: needs at least 1 process; fix: give --nproc 1 or more")
    if nproc > 1 and under_torchrun():
        raise MedsegError("--nproc starts its own processes; under torchrun, fix: leave --nproc out")
    out_dir = Path(out) if out else Path("runs") / f"infer-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    if nproc > 1:
        summary = _spawn_batch(inputs, model, out_dir, device, options, force, nproc)
    elif under_torchrun():
        summary = _torchrun_batch(inputs, model, out_dir, device, options, force)
    else:
        summary = _one_process_batch(inputs, model, out_dir, device, options, force, progress)
    if summary.failures and summary.main:
        err = MedsegError(_failure_line(summary))
        err.summary = summary  # the cases that were segmented: infer --report still writes their PDFs
        raise err
    return summary


def _failure_line(summary: InferSummary) -> str:
    """The batch's error: a failed write first (the folder is full or read-only: what to fix before anything
    else), otherwise how many inputs failed and the first of them."""
    if summary.stopped:
        return summary.stopped[0]
    written = f"the others were written to {summary.out_dir}" if summary.outputs else "nothing was written"
    total = len(summary.outputs) + len(summary.skipped) + len(summary.failures)
    return f"{len(summary.failures)} of {total} inputs failed (first: {summary.failures[0]}); {written}"


def _refuse_empty(inputs: list[str]) -> None:
    if not inputs:
        raise MedsegError("no INPUT given; fix: medseg infer scan.nii.gz --model runs/NAME/best.pt")
    if any(not i.strip() for i in inputs):  # an unset shell variable: Path("") is the current folder
        raise MedsegError(
            "an INPUT is empty (an unset shell variable?); fix: name the images, volumes or folders to segment"
        )


def _planned(inputs, model, out_dir, dev, options, force, world) -> tuple[Predictor, BatchPlan]:
    """Load the models on ``dev`` and plan the batch for ``world`` processes."""
    model = model or [str(find_default_model(inputs=inputs))]
    predictor = Predictor(load_models(model, dev), dev, options)
    return predictor, plan_batch(inputs, predictor, out_dir, force, world, [str(m) for m in model])


def _one_process_batch(inputs, model, out_dir, device, options, force, progress) -> InferSummary:
    dev = rank_device(device, SINGLE)
    predictor, plan = _planned(inputs, model, out_dir, dev, options, force, 1)
    result = run_share(predictor, plan, SINGLE, progress)
    return _finish(plan, [result], SINGLE, backend="none")


def _share_of_process(plan: BatchPlan, info: DistInfo, dev, options, predictor=None) -> ShareResult:
    """This process's share, never raising: a process that cannot even load the models says so in its result,
    and the others, waiting to gather the results, are not left hanging."""
    try:
        with user_errors():
            predictor = predictor or Predictor(load_models(plan.models, dev), dev, options)
            return run_share(predictor, plan, info, progress=False)
    except MedsegError as exc:
        return ShareResult(
            info.rank, stopped=f"[rank {info.rank}] {exc}", not_run=[c.case_id for c in plan.share(info.rank)]
        )


def _finish(plan: BatchPlan, results: list[ShareResult], info: DistInfo, backend: str) -> InferSummary:
    """Rank 0 writes the batch's summary; every process learns what the batch did."""
    summary_json = write_batch_summary(plan, results, info.world, backend) if info.main else None
    mine = next(r.outputs for r in results if r.rank == info.rank)
    return InferSummary(
        plan.out_dir,
        outputs=[o for r in results for o in r.outputs],
        failures=batch_failures(plan, results),
        stopped=[r.stopped for r in results if r.stopped],
        skipped=plan.skipped if info.main else [],
        own=mine,
        summary_json=summary_json,
        main=info.main,
    )


def _torchrun_batch(inputs, model, out_dir, device, options, force) -> InferSummary:
    """One of the processes ``torchrun`` launched: rank 0 plans the batch and hands it to the others."""
    import torch.distributed as dist

    info, created = join_launched_group(device)
    try:
        dev = rank_device(device, info)
        predictor, box = None, [None]
        if info.main:
            try:
                predictor, plan = _planned(inputs, model, out_dir, dev, options, force, info.world)
                box = [plan]
                log.info(f"{len(plan.cases)} case(s) over {info.world} processes ({backend(device)})")
            except MedsegError as exc:
                box = [str(exc)]
        dist.broadcast_object_list(box, src=0)
        if isinstance(box[0], str):  # rank 0 could not plan: every process ends with its reason
            raise MedsegError(box[0])
        plan = box[0]
        result = _share_of_process(plan, info, dev, options, predictor)
        return _finish(plan, gather_shares(result, info), info, backend(device))
    finally:
        if created:
            dist.destroy_process_group()


def _spawn_batch(inputs, model, out_dir, device, options, force, nproc) -> InferSummary:
    """Plan here, segment in ``nproc`` spawned processes, and report from the summary their rank 0 wrote."""
    import torch.multiprocessing as mp

    if device != "cpu" and torch.cuda.is_available() and torch.cuda.device_count() < nproc:
        raise MedsegError(
            f"--nproc {nproc} needs {nproc} GPUs, {torch.cuda.device_count()} visible; fix: lower --nproc"
        )
    _, plan = _planned(inputs, model, out_dir, torch.device("cpu"), options, force, nproc)  # processes load their own
    if not plan.cases:  # every case already written or refused: no process to start
        return _finish(plan, [ShareResult(0)], SINGLE, backend="none")
    log.info(f"{len(plan.cases)} case(s) over {nproc} processes ({backend(device)})")
    shown = any(isinstance(h, StdoutHandler) for h in logging.getLogger(ROOT).handlers)
    try:
        mp.spawn(_batch_worker, args=(nproc, free_port(), plan, device, options, shown), nprocs=nproc, join=True)
    except mp.ProcessRaisedException as exc:  # a fault outside any case: the batch's summary may be missing
        last = str(exc).strip().splitlines()[-1]
        raise MedsegError(f"a batch process failed ({last}); fix: see the lines above, then run again") from None
    return _summary_from_file(plan)


def _batch_worker(rank: int, world: int, port: int, plan: BatchPlan, device: str, options, shown: bool) -> None:
    """One spawned process: join the group, segment its share, hand its result to rank 0, leave the group."""
    import torch.distributed as dist

    if shown:
        show_log_lines()
    info = DistInfo(rank, world, rank)
    torch.set_num_threads(rank_threads(world))  # the cores shared out, not each process claiming them all
    dist.init_process_group(backend(device), init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        dev = rank_device(device, info)
        results = gather_shares(_share_of_process(plan, info, dev, options), info)
        _finish(plan, results, info, backend(device))
    finally:
        dist.destroy_process_group()


def _summary_from_file(plan: BatchPlan) -> InferSummary:
    """What the spawned processes did, as their rank 0 wrote it down."""
    data = read_batch_summary(plan.out_dir)
    rows = {s: [c for c in data["cases"] if c["status"] == s] for s in ("written", "skipped")}
    return InferSummary(
        plan.out_dir,
        outputs=[read_findings(c["findings_json"]) for c in rows["written"]],
        failures=list(data["failures"]),
        stopped=list(data["stopped"]),
        skipped=[read_findings(c["findings_json"]) for c in rows["skipped"]],
        summary_json=plan.out_dir / SUMMARY_NAME,
    )
