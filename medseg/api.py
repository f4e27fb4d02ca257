"""Library entry points behind each CLI command (importable and testable)."""

from __future__ import annotations

from pathlib import Path

from medseg.config import apply_overrides, check_value, config_from_dict, load_config
from medseg.engine.train import TrainResult, latest_run_dir, load_run_config, train
from medseg.errors import MedsegError, fail
from medseg.inference.options import InferenceOptions, flag
from medseg.log import get_logger

logger = get_logger(__name__)


def _cli_overrides(overrides, epochs=None, seed=None) -> list[str]:
    out = list(overrides or [])
    if epochs is not None:
        check_value("train.epochs", epochs, "--epochs")
        out.append(f"train.epochs={epochs}")
    if seed is not None:
        out.append(f"train.seed={seed}")
    return out


def default_data_dir(name: str, recipe: str | None = None) -> Path:
    """``datasets/NAME``; a config named apart from its recipe (a user's ``my-ph2`` that reads PH2) falls back to
    ``datasets/RECIPE`` when only that folder exists."""
    own = Path("datasets") / name
    if recipe and recipe != name and not own.exists() and (Path("datasets") / recipe).exists():
        return Path("datasets") / recipe
    return own


def existing_data_dir(cfg, data_dir) -> Path:
    """``--data-dir``, or the recipe's default folder; refused when it does not exist (the demo makes its own)."""
    data_dir = Path(data_dir) if data_dir else default_data_dir(cfg.name, cfg.data.recipe)
    if not data_dir.exists() and cfg.data.recipe != "demo":
        raise fail(
            data_dir,
            "data directory does not exist",
            f"pass --data-dir or put the data in datasets/{cfg.name} (see datasets/{cfg.name}/README.md)",
        )
    return data_dir


def train_from_cli(
    config: str,
    data_dir=None,
    out=None,
    epochs=None,
    device="auto",
    resume=False,
    force=False,
    seed=None,
    overrides=None,
    progress=True,
    nproc=1,
    init=None,
) -> TrainResult:
    """Resolve config, data and run directory the way ``medseg train`` documents, then train."""
    overrides = _cli_overrides(overrides, epochs, seed)
    if resume:
        if force or init:
            raise MedsegError(
                f"--resume and {'--force' if force else '--init'} contradict each other; fix: pass only one"
            )
        name = Path(config).stem if config.endswith((".yaml", ".yml")) else config
        run_dir = Path(out) if out else latest_run_dir(name)
        if run_dir is None:
            raise MedsegError(
                f"no earlier '{name}' run with last.pt under runs/; fix: pass --out RUN_DIR or drop --resume"
            )
        saved = apply_overrides(load_run_config(run_dir), overrides)
        cfg = config_from_dict(saved, source=str(run_dir / "config.yaml"), overrides=overrides)
        if data_dir is None:
            from medseg.checkpoint import load_checkpoint

            data_dir = load_checkpoint(run_dir / "last.pt", map_location="cpu")["data"]["data_dir"]
        return train(cfg, data_dir, run_dir, device=device, resume=True, progress=progress, nproc=nproc)
    cfg = load_config(config, overrides)
    data_dir = existing_data_dir(cfg, data_dir)
    return train(
        cfg, data_dir, out, device=device, resume=False, force=force, progress=progress, nproc=nproc, init=init
    )


def check_from_cli(name: str, data_dir=None, overrides=None, progress=False) -> dict:
    from medseg.data.check import check_dataset

    cfg = load_config(name, overrides)  # a recipe without a config file of its own gets one from the defaults
    data_dir = Path(data_dir) if data_dir else default_data_dir(cfg.name, cfg.data.recipe)
    return check_dataset(cfg, data_dir, progress=progress)


def run_demo(
    out: Path = Path("reports/demo"), device: str = "auto", force: bool = False, progress: bool = True, log=print
) -> dict:
    """Generate synthetic lesions, train a small 2D U-Net, and write outputs into ``out``."""
    import time

    out = Path(out)
    t0 = time.time()
    run_dir = out / "run"
    if (run_dir / "last.pt").exists() and not force:
        raise fail(out, "already holds a demo", "pass --force to redo it or --out to write elsewhere")
    cfg = load_config("demo")
    data_dir = out / "data"
    log(f"demo: synthetic data in {data_dir}")
    result = train(cfg, data_dir, run_dir, device=device, force=force, progress=progress)
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.inference.infer import infer
    from medseg.reporting.case_report import case_report
    from medseg.reporting.cohort_report import cohort_report
    from medseg.reporting.figures import EvaluationFigures

    model = run_dir / "best.pt"
    ev = evaluate_model(
        model,
        "demo",
        data_dir,
        out / "evaluation",
        split="val",
        device=device,
        force=force,
        progress=False,
        figures=EvaluationFigures(),
    )
    _print_summary(ev, log)
    cohort = cohort_report(ev.out_dir, out=out / "cohort_report.pdf", force=force)
    case = ev.info["ranked"]["median"]
    single = infer(
        [ev.info["cases"][case]["image"]],
        model=[str(model)],
        out=out / "infer",
        device=device,
        force=force,
        progress=False,
    )
    pdf = case_report(
        single.outputs[0]["findings_json"],
        out=out / "case_report.pdf",
        gt=ev.info["cases"][case]["ground_truth"],
        force=force,
    )
    summary = {
        "run_dir": str(run_dir),
        "best_val_dice": result.best_metric,
        "cohort_report": str(cohort),
        "case_report": str(pdf),
        "seconds": round(time.time() - t0, 1),
    }
    log(
        f"demo finished in {summary['seconds']}s: cohort report {cohort}, case report {pdf}; "
        f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}"
    )
    return summary


def infer_from_cli(
    inputs,
    model=None,
    out=None,
    device="auto",
    options: InferenceOptions | None = None,
    force=False,
    report=False,
    progress=True,
    nproc=1,
):
    """``medseg infer``: segment, write masks and findings, optionally a PDF per case. ``options`` left unset take
    the checkpoint's ``infer`` settings. Empty inputs and checkpoints among the inputs are refused by ``infer``.
    ``nproc`` > 1 (or ``torchrun``) shares the cases among processes; under ``torchrun`` each process writes the
    reports of its own cases."""
    from medseg.inference.infer import infer

    model = ensemble_members(model)
    kw = {"model": model, "out": out, "device": device, "options": options, "force": force, "progress": progress}
    try:
        summary = infer(inputs, nproc=nproc, **kw)
    except MedsegError as exc:  # some inputs failed: the cases that were segmented still get their reports
        done = getattr(exc, "summary", None)
        failed = write_case_reports(done, force) if report and done is not None else []
        if failed:
            raise MedsegError(
                f"{exc}; {len(failed)} of {len(done.written_here)} reports failed too (first: {failed[0]})"
            ) from None
        raise
    failed = write_case_reports(summary, force) if report else []
    if summary.main:
        logger.info(
            f"outputs in {summary.out_dir}"
            + (f"; batch summary {summary.summary_json}" if summary.summary_json else "")
        )
    if failed:
        raise MedsegError(
            f"{len(failed)} of {len(summary.written_here)} reports failed (first: {failed[0]}); the other "
            f"cases' reports and every segmentation were written to {summary.out_dir}"
        )
    return summary


def write_case_reports(summary, force: bool = False) -> list[str]:
    """One PDF per case this process segmented, and per skipped case (an earlier run's) that has none yet. A report
    that fails is named with the reason in one line and the batch goes on, so one odd case never costs the others
    their reports; returns those lines."""
    from medseg.reporting.case_report import case_report

    def pdf_of(res):
        return summary.out_dir / f"{res['case_id']}_report.pdf"

    failed = []
    for res in summary.written_here + [s for s in summary.skipped if not pdf_of(s).exists()]:
        try:
            pdf = case_report(res["findings_json"], out=pdf_of(res), force=force)
        except MedsegError as exc:
            failed.append(f"{res['case_id']}: report not written: {exc}")
        except Exception as exc:  # noqa: BLE001 - a fault in one report must not abort the others
            failed.append(f"{res['case_id']}: report not written: {type(exc).__name__}: {' '.join(str(exc).split())}")
        else:
            logger.info(f"report: {pdf}")
            continue
        logger.error(failed[-1])
    return failed


def evaluate_from_cli(
    pred=None,
    gt=None,
    model=None,
    data=None,
    data_dir=None,
    split="val",
    out=None,
    labels=None,
    images=None,
    device="auto",
    options: InferenceOptions | None = None,
    report=False,
    force=False,
    progress=True,
    log=print,
    instances=False,
    beside=(),
    label_values: dict | None = None,
):
    """``medseg evaluate``: folders (--pred/--gt) or a model (or a list of models, ensembled) on a recipe
    (--model/--data/--data-dir). ``options`` (tta and the clean-up) override the checkpoint's, as for
    ``medseg infer``; ``instances``: the folders hold instance maps (a model's checkpoint says so itself);
    ``label_values``: the ground-truth folder's values that make each class (a checkpoint has its own)."""
    if beside and not report:
        raise MedsegError("--beside puts other runs beside this one in the cohort PDF; fix: add --report")
    from medseg.evaluation.evaluate import evaluate_folders
    from medseg.reporting.figures import EvaluationFigures

    options = options or InferenceOptions()
    post = options.given_post()
    if post and not model:
        flags = ", ".join(flag(k) for k in post)
        raise MedsegError(
            f"{flags} post-process a model's output; with --pred/--gt the masks are already final "
            "(fix: use --model with --data, or post-process with medseg infer first)"
        )
    if model:
        if pred is not None or gt is not None:
            raise MedsegError("give either --pred/--gt or --model/--data, not both")
        if instances or label_values:
            given = "--instances" if instances else "--label-values"
            raise MedsegError(
                f"{given} is for --pred/--gt folders; with --model the checkpoint's config says it (fix: drop {given})"
            )
        res = _evaluate_model_from_cli(model, data, data_dir, out, split, device, options, force, progress)
    else:
        if pred is None or gt is None:
            raise MedsegError("medseg evaluate needs --pred and --gt folders (or --model with --data)")
        if label_values and not labels:
            raise MedsegError("--label-values names classes; fix: give them with --labels, background first")
        res = evaluate_folders(
            pred,
            gt,
            out,
            labels=labels,
            images=images,
            force=force,
            progress=progress,
            figures=EvaluationFigures(),
            extra_metrics=_recipe_metrics(data),
            instances=instances,
            label_values=label_values,
        )
    _print_summary(res, log)
    if report:
        from medseg.reporting.cohort_report import cohort_report

        pdf = cohort_report(res.out_dir, out=res.out_dir / "cohort_report.pdf", force=force, beside=beside)
        log(f"report: {pdf}")
    return res


def _evaluate_model_from_cli(model, data, data_dir, out, split, device, options, force, progress):
    """``medseg evaluate --model``: the checkpoint(s), or a cv folder's fold models, on recipe ``data``."""
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.reporting.figures import EvaluationFigures

    if not data:
        raise MedsegError(
            "--model needs --data NAME (the recipe) and --data-dir; fix: e.g. --data ph2 --data-dir datasets/ph2"
        )
    _check_recipe_name(data)
    folder = Path(data_dir) if data_dir else default_data_dir(data)
    return evaluate_model(
        ensemble_members(model, data_dir=folder),
        data,
        folder,
        out,
        split=split,
        device=device,
        options=options,
        force=force,
        progress=progress,
        figures=EvaluationFigures(),
    )


def parse_label_values(given: list[str] | None) -> dict[str, list[int]] | None:
    """``["tumour=1,2,3,4", "background=0,5"]`` -> ``{"tumour": [1, 2, 3, 4], "background": [0, 5]}``."""
    if not given:
        return None
    out = {}
    for item in given:
        name, _, values = item.partition("=")
        try:
            out[name.strip()] = [int(v) for v in values.split(",") if v.strip()]
        except ValueError:
            raise MedsegError(
                f"--label-values {item!r}: values must be whole numbers; fix: e.g. tumour=1,2,3,4"
            ) from None
        if not name.strip() or not out[name.strip()]:
            raise MedsegError(f"--label-values {item!r}: give NAME=VALUES; fix: e.g. tumour=1,2,3,4")
    return out


def _check_recipe_name(data: str) -> None:
    from medseg.config import did_you_mean
    from medseg.data import list_recipes

    if data not in list_recipes():
        raise MedsegError(
            f"--data '{data}' is not a data recipe{did_you_mean(data, list_recipes())}; "
            f"fix: use one of {list_recipes()}"
        )


def _recipe_metrics(data: str | None) -> tuple[str, ...]:
    """With --pred/--gt, ``--data NAME`` adds the metrics that recipe's data set is scored by (membrane: Rand)."""
    if not data:
        return ()
    from medseg.data import get_recipe

    _check_recipe_name(data)
    return get_recipe(data).extra_metrics


def _print_summary(res, log) -> None:
    s = res.summary
    for cls in dict.fromkeys(s["class"]):
        d = s[(s["class"] == cls) & (s["metric"] == "dice")].iloc[0]
        j = s[(s["class"] == cls) & (s["metric"] == "jaccard")].iloc[0]
        log(
            f"{cls}: Dice {d['mean']:.4f} (95% CI {d['ci95_low']:.4f}-{d['ci95_high']:.4f}), Jaccard {j['mean']:.4f}, n={int(d['n'])}"
        )
        extra = _extra_means(s[s["class"] == cls])
        if extra:
            log(f"{cls}: {extra}")
    log(f"metrics: {res.out_dir / 'metrics.csv'}, summary: {res.out_dir / 'summary.csv'}")


def _extra_means(rows) -> str:
    """The means of a recipe's extra metrics in one summary class, as one line ("" when there are none)."""
    names = {"pixel_error": "pixel error", "rand_error": "Rand error", "vi_split": "VI split", "vi_merge": "VI merge"}
    means = dict(zip(rows["metric"], rows["mean"]))
    return ", ".join(f"{text} {means[k]:.4f}" for k, text in names.items() if k in means)


def report_from_cli(source, out=None, gt=None, force=False, log=print, beside=()):
    """``medseg report``: a findings JSON gives a single-case PDF, an evaluation folder a cohort PDF (``beside``:
    other runs on the same cases, such as a classical floor)."""
    from medseg.reporting.case_report import case_report
    from medseg.reporting.cohort_report import cohort_report

    source = Path(source)
    if beside and not source.is_dir():
        raise fail(
            source, "--beside compares evaluations, and this is no evaluation folder", "pass medseg evaluate's --out"
        )
    if source.is_dir():
        pdf = cohort_report(source, out=out, force=force, beside=beside)
    elif source.suffix == ".json":
        pdf = case_report(source, out=out, gt=gt, force=force)
    else:
        raise fail(
            source,
            "is neither a findings JSON nor an evaluation folder",
            "pass <case>_findings.json from medseg infer or the --out folder of medseg evaluate",
        )
    log(f"report: {pdf}")
    return pdf


def ensemble_members(models, data_dir=None) -> list[str]:
    """``-m`` arguments with each folder that ``medseg cv`` wrote replaced by its folds' ``last.pt``. With
    ``data_dir`` (evaluate) a cross-validation's own data folder is refused: no case in it is held out from every
    fold, so an ensemble of the folds would be scored on cases it trained on."""
    from medseg.evaluation.cv_ensemble import expand_models, refuse_held_in

    paths, cv_dirs = expand_models(models)
    if data_dir is not None:
        refuse_held_in(cv_dirs, data_dir)
    return paths


def cv_from_cli(
    config: str,
    data_dir=None,
    out=None,
    folds: int = 5,
    only=None,
    overrides=None,
    device: str = "auto",
    tta: bool | None = None,
    score_best: bool = False,
    force: bool = False,
    progress: bool = True,
    init=None,
):
    """``medseg cv``: the data folder and output folder resolved as ``medseg train`` resolves them (output default
    ``runs/cv-NAME``), then :func:`medseg.evaluation.cv.cross_validate`."""
    from medseg.evaluation.cv import cross_validate
    from medseg.reporting.figures import EvaluationFigures

    cfg = load_config(config, overrides)
    data_dir = existing_data_dir(cfg, data_dir)
    return cross_validate(
        config,
        data_dir,
        Path(out) if out else Path("runs") / f"cv-{cfg.name}",
        folds=folds,
        only=only,
        overrides=overrides,
        device=device,
        tta=tta,
        score_best=score_best,
        force=force,
        progress=progress,
        figures=EvaluationFigures(),
        init=init,
    )


def compare_from_cli(
    run_a, run_b, metric="dice", label=None, eval_dir="eval-last", margin=0.05, n_boot=10000
) -> list[dict]:
    """``medseg compare``: RUN_B against RUN_A, case by case (:mod:`medseg.evaluation.compare`). Either side may be
    comma-separated runs, one per seed, paired in order; then the second record is RUN_A's noise floor."""
    from medseg.evaluation.compare import compare_runs

    return compare_runs(
        [r for r in str(run_a).split(",") if r],
        [r for r in str(run_b).split(",") if r],
        metric=metric,
        label=label,
        eval_dir=eval_dir,
        margin=margin,
        n_boot=n_boot,
        name=f"{run_b} - {run_a}",
    )


def export(checkpoint, fmt="onnx", out=None, force=False):
    """``medseg export``: an ONNX or TorchScript file, or (``monai-bundle``) a MONAI bundle folder."""
    if fmt == "monai-bundle":
        from medseg.bundle import export_bundle

        return export_bundle(checkpoint, out=out, force=force)
    from medseg.export import export_model

    return export_model(checkpoint, fmt=fmt, out=out, force=force)
