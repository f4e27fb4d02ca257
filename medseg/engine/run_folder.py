"""The run folder: making it ready, the files medseg writes there (config, split, history) and reading them back.

A run folder holds ``last.pt``, ``best.pt``, ``config.yaml``, ``split.json``, ``history.csv`` and TensorBoard
event files under ``tb/``. Starting over replaces only those, never a user's own files; every file is written
atomically, and a failed write becomes one line naming the file, what is still sound, and the fix.
"""

from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path

import yaml

from medseg.config import Config, save_config
from medseg.data.splits import save_split
from medseg.errors import fail, os_reason
from medseg.io import atomic_write, stale_temp_files
from medseg.log import get_logger

log = get_logger(__name__)

CHECKPOINTS = ("last.pt", "best.pt")
RUN_FILES = (*CHECKPOINTS, "config.yaml", "split.json", "history.csv")  # what medseg writes at the top of a run folder
TB_OWN_DIRS = ("", "hparams")  # tb/ and the sub-run add_hparams writes: medseg's event files live only there
LEGACY_TEMPS = ("history.tmp",)  # the temp name history.csv was once written through


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


def write_or_explain(path: Path, writer, what: str, safe: str, fix: str) -> None:
    """``atomic_write(path, writer)``; a failure (read-only folder, full disk) becomes one line that says what was
    not written, what on disk is still sound (``safe``) and the fix."""
    try:
        atomic_write(path, writer)
    except OSError as exc:
        raise fail(path, f"could not write {what} ({os_reason(exc)}); {safe}", fix) from None


def write_run_start(run_dir: Path, split: dict, cfg: Config) -> None:
    """split.json and config.yaml, each atomically; a failure names the file and says nothing was trained yet."""
    safe, fix = "nothing was trained yet", f"free disk space (or make {run_dir} writable) and run again"
    write_or_explain(run_dir / "split.json", lambda tmp: save_split(split, tmp), "the split", safe, fix)
    write_or_explain(run_dir / "config.yaml", lambda tmp: save_config(cfg, tmp), "the config", safe, fix)


def write_history(path: Path, rows: list[dict]) -> None:
    """history.csv, atomically. last.pt holds the same rows, so a failure here loses nothing a resume needs."""
    keys = list(dict.fromkeys(k for r in rows for k in r))

    def write(tmp):
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=keys)
            w.writeheader()
            w.writerows(rows)

    write_or_explain(
        path,
        write,
        "the training history",
        "last.pt holds this epoch and the history up to it",
        "free disk space and run again with --resume (history.csv is rewritten from last.pt)",
    )


def resumed_history(ck: dict, path: Path) -> list[dict]:
    """The history rows of the epochs ``last.pt`` holds, one per epoch.

    A kill or a full disk between the checkpoint and the history write leaves history.csv an epoch behind or
    ahead of last.pt; last.pt is the truth. Checkpoints from before it stored the history fall back on
    history.csv, cut to last.pt's epoch.
    """
    epoch = int(ck["epoch"])
    if isinstance(ck.get("history"), list):
        return [dict(r) for r in ck["history"]]
    by_epoch: dict = {}
    for row in read_history(path):
        try:
            e = int(float(row.get("epoch", "")))
        except ValueError:
            continue
        if 1 <= e <= epoch:
            by_epoch[e] = row  # a repeated epoch: the later row is the one whose checkpoint followed
    missing = [e for e in range(1, epoch + 1) if e not in by_epoch]
    if missing:
        log.warning(f"{path} has no row for epoch(s) {', '.join(map(str, missing))} of last.pt; they stay missing")
    return [by_epoch[e] for e in sorted(by_epoch)]


def read_history(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [dict(r) for r in csv.DictReader(fh)]


def load_run_config(run_dir: Path) -> dict:
    p = run_dir / "config.yaml"
    if not p.is_file():
        raise fail(run_dir, "has no config.yaml", "resume only runs started by medseg train")
    return yaml.safe_load(p.read_text(encoding="utf-8"))
