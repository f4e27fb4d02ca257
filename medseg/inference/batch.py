"""A batch of cases for ``medseg infer``: which cases to segment, which an earlier run already did, which process
segments which, and the one summary of them all.

The plan is made once (by the process that launches the others, or by rank 0 under ``torchrun``) and every process
segments its share of it, so that each case is written exactly once however many processes there are. A case that
fails is one line in the summary, never the end of the batch.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from medseg import __version__
from medseg.errors import MedsegError, os_reason
from medseg.inference.cases import Case, expand_inputs
from medseg.inference.outputs import (
    CaseWriteError,
    batch_write_failure,
    findings_sizes,
    make_out_dir,
    spacing_note,
    write_label_tables,
)
from medseg.inference.predictor import Predictor
from medseg.inference.segment import case_outputs, segment_case
from medseg.io import atomic_write
from medseg.log import get_logger
from medseg.parallel import DistInfo

log = get_logger(__name__)

SUMMARY_NAME = "infer_summary.json"


@dataclass
class BatchPlan:
    """What a batch does: the cases to segment and each process's share of them (indices into ``cases``), the
    cases an earlier run into the same folder completed, and the inputs that are no case or were refused."""

    out_dir: Path
    models: list[str]
    model_shas: list[str]  # their SHA-256 (12 characters), as the findings record them
    force: bool
    cases: list[Case] = field(default_factory=list)
    shares: list[list[int]] = field(default_factory=lambda: [[]])
    skipped: list[dict] = field(default_factory=list)  # their findings, as the earlier run wrote them
    failures: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)

    def share(self, rank: int) -> list[Case]:
        return [self.cases[i] for i in self.shares[rank]]


@dataclass
class ShareResult:
    """What one process did with its share: the findings of the cases it wrote, a line per case that failed, and,
    when it had to stop early (its disk full), why and which of its cases it never ran."""

    rank: int
    outputs: list[dict] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    stopped: str | None = None
    not_run: list[str] = field(default_factory=list)


def plan_batch(
    inputs: list[str], predictor: Predictor, out_dir: Path, force: bool, world: int, models: list[str]
) -> BatchPlan:
    """Expand the inputs into cases, name the classes for the viewers, set aside the cases an earlier run of these
    models completed (unless ``force``) and deal the rest out to ``world`` processes."""
    make_out_dir(out_dir)
    cfg = predictor.models[0].cfg
    cases, failures = expand_inputs(inputs, cfg, warn=True)
    shas = [m.sha for m in predictor.models]
    plan = BatchPlan(out_dir, models, shas, force, failures=list(failures))
    if cases and not cfg.instances and (cfg.data.spatial_dims == 3 or not cfg.binary):  # class indices: name them
        try:
            tables = write_label_tables(out_dir, list(cfg.data.labels), force)
        except OSError as exc:
            raise batch_write_failure(out_dir / "labels.ctbl", exc, out_dir, 0, len(cases)) from None
        log.info(f"class names for the viewers: {tables[0]} (3D Slicer), {tables[1]} (ITK-SNAP)")
    for case in cases:
        paths = case_outputs(predictor, case, out_dir)
        state, detail = ("new", None) if force else paths.earlier_run(shas)
        if state == "new":
            plan.cases.append(case)
        elif state == "done":
            plan.skipped.append(detail)
        else:
            plan.failures.append(detail)
            log.error(detail)
    if plan.skipped:
        log.info(
            f"{len(plan.skipped)} case(s) already segmented in {out_dir} by this model: skipped (--force redoes them)"
        )
    plan.shares = balanced_shares(plan.cases, world)
    return plan


def read_findings(path: Path) -> dict:
    res = json.loads(Path(path).read_text())
    res["findings_json"] = str(path)
    return res


def balanced_shares(cases: list[Case], world: int) -> list[list[int]]:
    """Each process's cases: the largest case first, each to the process with the fewest bytes so far (then the
    fewest cases), so that the processes finish together; each share keeps the inputs' order."""
    loads, shares = [0] * world, [[] for _ in range(world)]
    sizes = [case_bytes(c) for c in cases]
    for i in sorted(range(len(cases)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], len(shares[r]), r))
        shares[rank].append(i)
        loads[rank] += sizes[i]
    return [sorted(s) for s in shares]


def case_bytes(case: Case) -> int:
    """The bytes of a case's files (a DICOM folder: its files), a measure of how long it takes to segment."""
    total = 0
    for p in map(Path, case.paths):
        try:
            total += sum(f.stat().st_size for f in p.iterdir() if f.is_file()) if p.is_dir() else p.stat().st_size
        except OSError:
            pass  # unreadable: it fails when it is read, and costs nothing
    return total


def run_share(predictor: Predictor, plan: BatchPlan, info: DistInfo, progress: bool = True) -> ShareResult:
    """Segment this process's share of the plan. A case that fails is a line in the result and the next case goes
    on; only a failed write (a full disk, a read-only folder, which the next case would meet too) stops the share."""
    from medseg.progress import track

    cases = plan.share(info.rank)
    result = ShareResult(info.rank)
    tag = f"[rank {info.rank}] " if info.world > 1 else ""
    shown = progress and info.world == 1 and len(cases) >= 2  # several processes' bars would draw over each other
    for n, case in enumerate(track(cases, desc="infer", enabled=shown, unit="case")):
        try:
            res = segment_case(predictor, case, plan.out_dir, force=plan.force)
        except CaseWriteError as exc:
            result.stopped = str(batch_write_failure(exc.target, exc.cause, plan.out_dir, n, len(cases)))
            result.not_run = [c.case_id for c in cases[n + 1 :]]
            log.error(tag + result.stopped)
            break
        except MedsegError as exc:
            result.failures.append(str(exc))
            log.error(tag + str(exc))
            continue
        except Exception as exc:  # a fault on one case (a bug, its memory) must not cost the others
            line = (
                f"{case.paths[0]}: failed ({type(exc).__name__}: {' '.join(str(exc).split())}); the other cases went on"
            )
            result.failures.append(line)
            log.error(tag + line, exc_info=log.isEnabledFor(logging.DEBUG))  # the traceback when debugging
            continue
        result.outputs.append(res)
        log_case(case, res, tag)
    return result


def log_case(case: Case, res: dict, tag: str = "") -> None:
    """The case's line (sizes per class, where the mask is), then what its loader facts mean for the reader."""
    from medseg.inference.facts import CaseFacts

    cls = ", ".join(f"{n}: {findings_sizes(res, v)}" for n, v in res["classes"].items()) + spacing_note(res)
    log.info(f"{tag}{case.case_id}: {cls} -> {res['segmentation']}")
    for level, text in CaseFacts.from_findings(res).notes(case.paths[0], res["geometry"]["shape"]):
        log.log(level, tag + text)


def gather_shares(result: ShareResult, info: DistInfo) -> list[ShareResult]:
    """Every process's result, on every process (``all_gather_object``: NCCL has no ``gather_object``)."""
    if info.world == 1:
        return [result]
    import torch.distributed as dist

    box: list = [None] * info.world
    dist.all_gather_object(box, result)
    return box


def batch_failures(plan: BatchPlan, results: list[ShareResult]) -> list[str]:
    """Every failure line of the batch: inputs that are no case or were refused, then each process's failed cases
    and why it stopped early, if it did."""
    return plan.failures + [f for r in results for f in [*r.failures, *([r.stopped] if r.stopped else [])]]


def write_batch_summary(plan: BatchPlan, results: list[ShareResult], world: int, backend: str) -> Path | None:
    """``infer_summary.json``: every case of this batch with its status (written, skipped, failed lines, not run),
    which process wrote it and how long it took; it describes the folder after the latest run, so it is replaced.
    None when it cannot be written (the folder that failed the cases fails it too: their error says what to do)."""
    cases = [_case_row(res, "written", r.rank) for r in results for res in r.outputs]
    cases += [_case_row(res, "skipped", None) for res in plan.skipped]
    failures = batch_failures(plan, results)
    not_run = [c for r in results for c in r.not_run]
    summary = {
        "medseg_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "out_dir": str(plan.out_dir.resolve()),
        "models": [{"path": str(Path(m).resolve()), "sha256_12": sha} for m, sha in zip(plan.models, plan.model_shas)],
        "processes": world,
        "backend": backend,
        "seconds": round(time.time() - plan.started, 2),
        "counts": {"written": sum(len(r.outputs) for r in results), "skipped": len(plan.skipped)}
        | {"failed": len(failures), "not_run": len(not_run)},
        "cases": sorted(cases, key=lambda c: c["case_id"]),
        "failures": failures,
        "stopped": [r.stopped for r in results if r.stopped],
        "not_run": not_run,
    }
    path = plan.out_dir / SUMMARY_NAME
    try:
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(summary, indent=1)), suffix=".json")
    except OSError as exc:
        log.warning(f"{path}: the batch's summary could not be written ({os_reason(exc)})")
        return None
    return path


def _case_row(res: dict, status: str, rank: int | None) -> dict:
    return {
        "case_id": res["case_id"],
        "status": status,
        "rank": rank,
        "input": res["input"],
        "segmentation": res["segmentation"],
        "findings_json": str(Path(res["findings_json"]).resolve()),
        "seconds": (res.get("timings") or {}).get("total_s"),
    }


def read_batch_summary(out_dir: Path) -> dict:
    """The summary a batch's rank 0 wrote (what ``--nproc``'s launching process reports from)."""
    path = Path(out_dir) / SUMMARY_NAME
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MedsegError(
            f"{path}: the batch's processes ended without a readable summary ({exc}); fix: see their error lines "
            "above, then run again (cases already written are skipped)"
        ) from None
