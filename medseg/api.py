"""Library entry points behind each CLI command (importable and testable)."""

from __future__ import annotations

from pathlib import Path

from .config import apply_overrides, config_from_dict, load_config
from .errors import MedsegError, fail
from .train import TrainResult, latest_run_dir, load_run_config, train


def _cli_overrides(overrides, epochs=None, seed=None) -> list[str]:
    out = list(overrides or [])
    if epochs is not None:
        if epochs < 1:
            raise MedsegError(f"--epochs {epochs} must be at least 1")
        out.append(f"train.epochs={epochs}")
    if seed is not None:
        out.append(f"train.seed={seed}")
    return out


def default_data_dir(name: str) -> Path:
    return Path("datasets") / name


def train_from_cli(config: str, data_dir=None, out=None, epochs=None, device="auto", resume=False, force=False,
                   seed=None, overrides=None, progress=True, log=print) -> TrainResult:
    """Resolve config, data and run directory the way ``medseg train`` documents, then train."""
    overrides = _cli_overrides(overrides, epochs, seed)
    if resume:
        if force:
            raise MedsegError("--resume and --force contradict each other; fix: pass only one")
        name = Path(config).stem if config.endswith((".yaml", ".yml")) else config
        run_dir = Path(out) if out else latest_run_dir(name)
        if run_dir is None:
            raise MedsegError(f"no earlier '{name}' run with last.pt under runs/; fix: pass --out RUN_DIR or drop --resume")
        saved = apply_overrides(load_run_config(run_dir), overrides)
        cfg = config_from_dict(saved, source=str(run_dir / "config.yaml"))
        if data_dir is None:
            from .checkpoint import load_checkpoint

            data_dir = load_checkpoint(run_dir / "last.pt", map_location="cpu")["data"]["data_dir"]
        return train(cfg, data_dir, run_dir, device=device, resume=True, progress=progress, log=log)
    cfg = load_config(config, overrides)
    data_dir = Path(data_dir) if data_dir else default_data_dir(cfg.name)
    if not data_dir.exists() and cfg.data.recipe != "demo":
        raise fail(data_dir, "data directory does not exist",
                   f"pass --data-dir or put the data in datasets/{cfg.name} (see datasets/{cfg.name}/README.md)")
    return train(cfg, data_dir, out, device=device, resume=False, force=force, progress=progress, log=log)


def check_from_cli(name: str, data_dir=None, overrides=None, progress=False) -> dict:
    from .data.check import check_dataset

    try:
        cfg = load_config(name, overrides)
    except MedsegError:
        from .data import list_recipes

        if name not in list_recipes():
            raise
        cfg = config_from_dict({"name": name, "data": {"recipe": name}})
    data_dir = Path(data_dir) if data_dir else default_data_dir(cfg.name)
    return check_dataset(cfg, data_dir, progress=progress)


def run_demo(out: Path = Path("reports/demo"), device: str = "auto", force: bool = False, progress: bool = True,
             log=print) -> dict:
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
    result = train(cfg, data_dir, run_dir, device=device, force=force, progress=progress, log=log)
    summary = {"run_dir": str(run_dir), "best_val_dice": result.best_metric, "seconds": round(time.time() - t0, 1)}
    log(f"demo finished in {summary['seconds']}s; checkpoint {run_dir / 'best.pt'}; "
        f"TensorBoard: tensorboard --logdir {run_dir / 'tb'}")
    return summary


def infer_from_cli(inputs, model=None, out=None, device="auto", tta=False, probabilities=False, force=False,
                   report=False, progress=True, log=print, **post):
    """``medseg infer``: segment, write masks and findings, optionally a PDF per case."""
    from .infer import infer

    summary = infer(inputs, model=model, out=out, device=device, tta=tta, probabilities=probabilities, force=force,
                    progress=progress, log=log, **post)
    if report:
        from .report import case_report

        for res in summary.outputs:
            pdf = case_report(res["findings_json"], force=force)
            log(f"report: {pdf}")
    log(f"outputs in {summary.out_dir}")
    return summary
