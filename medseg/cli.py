"""The ``medseg`` command line: each command parses its flags and makes one library call."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from medseg.errors import MedsegError, os_fix, os_reason

# rich_markup_mode=None: typer's rich help panel prints a type placeholder (<bool>) after every flag; the plain
# click formatter shows flags as flags (--tta, --keep-largest / --no-keep-largest) and the other options' types.
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    help="medseg: train, run and report medical image segmentation models (MONAI + PyTorch).",
)
datasets_app = typer.Typer(
    no_args_is_help=True, rich_markup_mode=None, help="Inspect data sets in their on-disk layouts."
)
app.add_typer(datasets_app, name="datasets")


def _print_version(value: bool) -> None:
    if value:
        from medseg import __version__

        typer.echo(__version__)
        raise typer.Exit()


@app.callback()
def _global_options(
    version: bool = typer.Option(
        False, "--version", callback=_print_version, is_eager=True, help="Print the medseg version and exit."
    ),
):
    pass


def _run(fn, *args, **kwargs):
    """Call into the library; print user errors as one line and exit 2."""
    from medseg.log import show_log_lines

    show_log_lines()
    try:
        return fn(*args, **kwargs)
    except MedsegError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2)
    except OSError as exc:  # a write the library did not explain itself: a full disk, a read-only folder
        typer.echo(f"error: {write_failure(exc)}", err=True)
        raise typer.Exit(2)
    except KeyboardInterrupt:
        typer.echo("interrupted; resume a training run with --resume", err=True)
        raise typer.Exit(130)


def write_failure(exc: OSError) -> str:
    """One line for a failed file operation: which file, what the system said, what is safe and the fix."""
    where = f"{exc.filename}: " if exc.filename else ""
    reason, fix = os_reason(exc), os_fix(exc)
    return (
        f"{where}{reason}; files medseg finished writing are complete (each is written under a temporary name "
        f"and renamed when done); fix: {fix}, then run the command again"
    )


def _echo(msg: str) -> None:
    typer.echo(msg, err=False)


# Post-processing flags shared by `infer` and `evaluate --model` (None: the checkpoint's own setting).
THRESHOLD = typer.Option(None, "--threshold", help="Binary threshold (default from the checkpoint).")
KEEP_LARGEST = typer.Option(None, "--keep-largest/--no-keep-largest", help="Keep the largest component per class.")
MIN_SIZE = typer.Option(
    None,
    "--min-size",
    help="Drop components under this size (mm³ in 3D, mm² in 2D; px² for 2D images without data.pixel_spacing_mm).",
)
FILL_HOLES = typer.Option(None, "--fill-holes/--no-fill-holes", help="Fill holes in each class.")
# Flags every command that computes shares
DEVICE = typer.Option("auto", "--device", help="auto (CUDA when available, else CPU), cpu or cuda.")
QUIET = typer.Option(False, "--quiet", help="No progress bars (log lines and errors are still printed).")
TTA = typer.Option(
    None,
    "--tta/--no-tta",
    help="Average predictions over flips (test-time augmentation); default: the checkpoint's infer.tta.",
)
BESIDE = typer.Option(
    [],
    "--beside",
    metavar="RUN",
    help="Another evaluate or cv folder scored on the same cases, shown in the cohort PDF against this one; the best "
    "classical method among them is named (repeatable).",
)


@app.command()
def train(
    config: str = typer.Argument(
        ..., help="Recipe name (ph2, lgg, brats, nifti, folder, demo) or path to a YAML config."
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (default datasets/NAME)."),
    out: Path | None = typer.Option(None, "--out", help="Run directory (default runs/NAME-<timestamp>)."),
    epochs: int | None = typer.Option(None, "--epochs", help="Override train.epochs."),
    device: str = DEVICE,
    resume: bool = typer.Option(
        False, "--resume", help="Continue the run in --out (or the newest runs/NAME-*) from last.pt."
    ),
    force: bool = typer.Option(
        False, "--force", help="Overwrite an existing run in --out (only the files medseg wrote)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Override train.seed."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE", help="Override any config key: --set train.lr=3e-4 (repeatable)."
    ),
    nproc: int = typer.Option(
        1, "--nproc", help="Processes for DistributedDataParallel (GPUs: one per GPU; CPU: gloo)."
    ),
    init: Path | None = typer.Option(
        None, "--init", help="Start from this medseg checkpoint (fine-tuning): every tensor that fits loads."
    ),
    quiet: bool = QUIET,
):
    """Train a model on a data set recipe."""
    from medseg.api import train_from_cli

    _run(
        train_from_cli,
        config,
        data_dir=data_dir,
        out=out,
        epochs=epochs,
        device=device,
        resume=resume,
        force=force,
        seed=seed,
        overrides=set_,
        progress=not quiet,
        nproc=nproc,
        init=init,
    )


@datasets_app.command("check")
def datasets_check(
    name: str = typer.Argument(..., help="Recipe name or config path."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (default datasets/NAME)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    set_: list[str] = typer.Option([], "--set", "-s", metavar="KEY=VALUE", help="Override config keys."),
):
    """Report what a recipe finds in DATA_DIR; exit 1 if any file has a problem."""
    from medseg.api import check_from_cli
    from medseg.data.check import format_report

    report = _run(check_from_cli, name, data_dir=data_dir, overrides=set_, progress=not as_json)
    typer.echo(json.dumps(report, indent=None if as_json else 1) if as_json else format_report(report))
    if report["problems"]:
        raise typer.Exit(1)


@datasets_app.command("list")
def datasets_list():
    """List the data recipes and configs available."""
    from medseg.config import config_search_dirs
    from medseg.data import list_recipes

    typer.echo("recipes: " + ", ".join(list_recipes()))
    configs = sorted({c.stem for d in config_search_dirs() if d.is_dir() for c in d.glob("*.yaml")})
    typer.echo("configs: " + ", ".join(configs))


@app.command()
def demo(
    out: Path = typer.Option(Path("reports/demo"), "--out", help="Where the demo writes its outputs."),
    device: str = DEVICE,
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier demo in --out."),
    quiet: bool = QUIET,
):
    """Run the whole product on synthetic data (no download, a few minutes on a CPU)."""
    from medseg.api import run_demo

    _run(run_demo, out=out, device=device, force=force, progress=not quiet, log=_echo)


@app.command()
def infer(
    inputs: list[str] = typer.Argument(
        ...,
        help="Volumes (.nii/.nii.gz/.nrrd/.mha), DICOM folders, 2D images, folders "
        "of these, or 'a.nii.gz,b.nii.gz' for one multi-modal case.",
    ),
    model: list[Path] = typer.Option(
        [],
        "--model",
        "-m",
        metavar="CHECKPOINT",
        help="Checkpoint(s); several are ensembled. A folder that medseg cv wrote stands for its folds' last.pt "
        "(the cross-validation ensemble). Default: the newest runs/**/best.pt that fits the inputs.",
    ),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/infer-<timestamp>)."),
    device: str = DEVICE,
    tta: bool | None = TTA,
    probabilities: bool = typer.Option(False, "--probabilities", help="Also write <case>_prob.nii.gz (.tif for 2D)."),
    dicom_seg: bool = typer.Option(
        False, "--dicom-seg", help="Also write <case>_seg.dcm, a DICOM SEG over each DICOM series input."
    ),
    force: bool = typer.Option(
        False, "--force", help="Redo cases whose outputs are already in --out (replacing medseg's files of them)."
    ),
    threshold: float | None = THRESHOLD,
    keep_largest: bool | None = KEEP_LARGEST,
    min_size: float | None = MIN_SIZE,
    fill_holes: bool | None = FILL_HOLES,
    overlap: float | None = typer.Option(None, "--overlap", help="Sliding-window overlap (0-1)."),
    sw_batch_size: int | None = typer.Option(None, "--sw-batch-size", help="Windows per forward pass."),
    report: bool = typer.Option(False, "--report", help="Also write a single-case PDF report per input."),
    nproc: int = typer.Option(
        1, "--nproc", help="Processes to share the cases among (GPUs: one per GPU; CPU: the cores split evenly)."
    ),
    quiet: bool = QUIET,
):
    """Segment new images; masks are written in each input's exact geometry, with findings JSON. Cases this model
    already wrote into --out are skipped (--force redoes them)."""
    from medseg.api import infer_from_cli
    from medseg.inference.options import InferenceOptions

    _run(
        lambda: infer_from_cli(  # inside _run: a flag out of range is a one-line error
            inputs,
            model=[str(m) for m in model],
            out=out,
            device=device,
            options=InferenceOptions(
                tta=tta,
                threshold=threshold,
                keep_largest=keep_largest,
                min_size=min_size,
                fill_holes=fill_holes,
                overlap=overlap,
                sw_batch_size=sw_batch_size,
                probabilities=probabilities,
                dicom_seg=dicom_seg,
            ),
            force=force,
            report=report,
            progress=not quiet,
            nproc=nproc,
        )
    )


@app.command()
def evaluate(
    pred: Path | None = typer.Option(None, "--pred", help="Folder of predicted masks (<case>_seg.<ext>)."),
    gt: Path | None = typer.Option(None, "--gt", help="Folder of ground-truth masks."),
    model: list[Path] = typer.Option(
        [],
        "--model",
        "-m",
        metavar="CHECKPOINT",
        help="Checkpoint to run on a data set instead of --pred; repeat to evaluate an ensemble (same split). "
        "A folder that medseg cv wrote stands for its folds' last.pt, scored on cases no fold saw (not its own "
        "--data-dir: every case there trained some fold).",
    ),
    data: str | None = typer.Option(
        None,
        "--data",
        help="Recipe name with --model (ph2, lgg, brats, nifti, folder, membrane); with --pred/--gt it adds the "
        "recipe's own metrics (membrane: pixel error, Rand and VI).",
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder with --model."),
    split: str = typer.Option("val", "--split", help="all, val or test (the checkpoint's own split)."),
    out: Path = typer.Option(..., "--out", help="Output folder for metrics.csv, summary.csv and plots."),
    labels: str | None = typer.Option(None, "--labels", help="Comma-separated label names, background first."),
    label_values: list[str] = typer.Option(
        [],
        "--label-values",
        help="With --gt: the ground truth's values that make a class, NAME=V,V (repeatable), e.g. tumour=1,2,3,4 "
        "to score BraTS' whole tumour; values listed under background are dropped.",
    ),
    images: Path | None = typer.Option(None, "--images", help="Folder of the images, for overlays (with --pred)."),
    device: str = DEVICE,
    tta: bool | None = TTA,
    threshold: float | None = THRESHOLD,
    keep_largest: bool | None = KEEP_LARGEST,
    min_size: float | None = MIN_SIZE,
    fill_holes: bool | None = FILL_HOLES,
    report: bool = typer.Option(False, "--report", help="Also write the cohort PDF into --out (cohort_report.pdf)."),
    beside: list[Path] = BESIDE,
    force: bool = typer.Option(False, "--force", help="Overwrite an earlier evaluation in --out."),
    instances: bool = typer.Option(
        False,
        "--instances",
        help="--pred/--gt hold instance maps (a value per object): also score the objects (DSB 2018, PQ, AP), "
        "ranked by the scores in <case>_objects.csv where medseg infer wrote them.",
    ),
    quiet: bool = QUIET,
):
    """Per-case, per-class metrics (Dice, Jaccard, precision, recall, HD95, ASSD, lesion counts)."""
    from medseg.api import evaluate_from_cli, parse_label_values
    from medseg.inference.options import InferenceOptions

    _run(
        lambda: evaluate_from_cli(  # inside _run: a flag out of range is a one-line error
            pred=pred,
            gt=gt,
            model=list(model) or None,
            data=data,
            data_dir=data_dir,
            split=split,
            out=out,
            labels=labels.split(",") if labels else None,
            images=images,
            device=device,
            options=InferenceOptions(
                tta=tta, threshold=threshold, keep_largest=keep_largest, min_size=min_size, fill_holes=fill_holes
            ),
            report=report,
            force=force,
            progress=not quiet,
            log=_echo,
            instances=instances,
            beside=beside,
            label_values=parse_label_values(label_values),
        )
    )


@app.command()
def report(
    source: Path = typer.Argument(..., help="<case>_findings.json (single case) or an evaluation folder (cohort)."),
    out: Path | None = typer.Option(None, "--out", help="PDF path or folder (default reports/)."),
    gt: Path | None = typer.Option(None, "--gt", help="Ground-truth mask for a single-case report."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing PDF."),
    beside: list[Path] = BESIDE,
):
    """Write a clinical-style PDF report."""
    from medseg.api import report_from_cli

    _run(report_from_cli, source, out=out, gt=gt, force=force, log=_echo, beside=beside)


@app.command()
def cv(
    config: str = typer.Argument(..., help="Recipe name or path to a YAML config, as for medseg train."),
    data_dir: Path | None = typer.Option(None, "--data-dir", help="Data folder (default datasets/NAME)."),
    folds: int = typer.Option(5, "--folds", help="Number of folds (groups such as patients stay in one fold)."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default runs/cv-NAME)."),
    only: list[int] = typer.Option([], "--only", metavar="FOLD", help="Run only this fold (repeatable, from 0)."),
    set_: list[str] = typer.Option(
        [], "--set", "-s", metavar="KEY=VALUE", help="Override any config key in every fold (repeatable)."
    ),
    device: str = DEVICE,
    tta: bool | None = typer.Option(
        None, "--tta/--no-tta", help="Average predictions over flips when scoring; default: the config's infer.tta."
    ),
    score_best: bool = typer.Option(
        False, "--score-best", help="Also score best.pt (picked on the same held-out fold, so optimistic)."
    ),
    force: bool = typer.Option(
        False, "--force", help="Train the asked-for folds again (a rerun without it keeps the finished folds)."
    ),
    init: Path | None = typer.Option(None, "--init", help="Every fold starts from this medseg checkpoint."),
    quiet: bool = QUIET,
):
    """K-fold cross-validation: train each fold, score its held-out cases at the original resolution, pool them.

    Writes fold0/ ... (each a training run with eval-last/), cv.json, folds.csv, summary.csv (mean and spread over
    folds) and metrics.csv (every held-out case). Use the folds together with medseg infer -m OUT."""
    from medseg.api import cv_from_cli

    _run(
        cv_from_cli,
        config,
        data_dir=data_dir,
        out=out,
        folds=folds,
        only=only or None,
        overrides=set_,
        device=device,
        tta=tta,
        score_best=score_best,
        force=force,
        progress=not quiet,
        init=init,
    )


@app.command()
def compare(
    run_a: str = typer.Argument(
        ..., help="The reference: a folder medseg cv or medseg evaluate wrote (or a,b,...: one run per seed)."
    ),
    run_b: str = typer.Argument(..., help="The run compared with it, on the same cases (as many seeds as RUN_A)."),
    metric: str = typer.Option("dice", "--metric", help="A column of metrics.csv (dice, jaccard, hd95, ...)."),
    label: str | None = typer.Option(None, "--label", help="The class to compare (default: the first)."),
    eval_dir: str = typer.Option(
        "eval-last", "--eval-dir", help="Evaluation folder inside each fold (eval-best with cv --score-best)."
    ),
    margin: float = typer.Option(0.05, "--margin", help="A case counts as up or down beyond this difference."),
    boot: int = typer.Option(10000, "--boot", help="Bootstrap resamples for the 95% interval."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per comparison."),
):
    """Paired per-case comparison of two runs: mean difference (B - A), 95% bootstrap interval, wins and losses.

    With several seeds per side (RUN_A and RUN_B as comma-separated runs, paired in order) each case's difference
    is averaged over the pairs, and RUN_A's second seed against its first shows the noise floor."""
    from medseg.api import compare_from_cli
    from medseg.evaluation.compare import describe

    records = _run(
        compare_from_cli, run_a, run_b, metric=metric, label=label, eval_dir=eval_dir, margin=margin, n_boot=boot
    )
    for rec in records:
        if as_json:
            typer.echo(json.dumps(rec))
            continue
        typer.echo(describe(rec))
        typer.echo(f"  share of resamples above 0: {rec['share_of_resamples_above_0']}")
        typer.echo("  most down: " + ", ".join(f"{c} {d:+.3f}" for c, d in rec["most_down"]))
        typer.echo("  most up: " + ", ".join(f"{c} {d:+.3f}" for c, d in rec["most_up"]))


@app.command()
def export(
    checkpoint: Path = typer.Argument(..., help="A best.pt/last.pt written by medseg train."),
    fmt: str = typer.Option(
        "onnx", "--format", help="onnx (run with onnxruntime), torchscript, or monai-bundle (a folder, 3D models)."
    ),
    out: Path | None = typer.Option(
        None, "--out", help="The file (bundle: folder) to write (default: beside CHECKPOINT)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an earlier medseg export at --out."),
):
    """Export the network with what infer needs inside it; run it with medseg infer --model FILE (a MONAI bundle:
    with python -m monai.bundle run)."""
    from medseg.api import export

    res = _run(export, checkpoint, fmt=fmt, out=out, force=force)
    dynamic = ", ".join(res.dynamic_axes) or "none (fixed to the window size)"
    typer.echo(f"{res.path}: {res.fmt}, max |logit difference| {res.max_abs_diff:.2e}, dynamic axes: {dynamic}")


@app.command()
def version():
    """Print the medseg version."""
    from medseg import __version__

    typer.echo(__version__)


def main() -> None:  # console-script entry point
    app(prog_name="medseg")


if __name__ == "__main__":
    sys.exit(main())
