"""The folds of a ``medseg cv`` folder as one ensemble: ``medseg infer -m CVDIR`` runs every fold's ``last.pt``
(the weights each fold's held-out score is of), their probabilities averaged.

Between them the folds trained on every case of the cross-validation's data folder, so an ensemble of them has no
held-out case there: ``medseg evaluate`` refuses that folder and scores the ensemble on cases no fold saw.
"""

from __future__ import annotations

from pathlib import Path

from medseg.errors import fail
from medseg.evaluation.cv import SCORED, read_cv
from medseg.log import get_logger

_log = get_logger(__name__)


def is_cv_dir(path: str | Path) -> bool:
    return Path(path).is_dir() and (Path(path) / "cv.json").is_file()


def fold_checkpoints(cv_dir: str | Path) -> list[Path]:
    """Each finished fold's ``last.pt`` (the weights its held-out score is of), in fold order."""
    cv_dir = Path(cv_dir)
    info = read_cv(cv_dir)
    done = sorted(int(f) for f in info["folds"])
    if not done:
        raise fail(cv_dir, "has no finished fold yet", "run medseg cv into it first")
    paths = [cv_dir / f"fold{f}" / f"{SCORED}.pt" for f in done]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise fail(missing[0], "is missing from a finished fold", f"pass --force --only {missing[0].parent.name[4:]}")
    if len(done) < info["setup"]["folds"]:
        _log.warning(f"{cv_dir}: {len(done)} of {info['setup']['folds']} folds finished; ensembling those")
    return paths


def expand_models(models) -> tuple[list[str], list[Path]]:
    """``-m`` arguments with every cross-validation folder replaced by its folds' checkpoints; also returns the
    folders so expanded."""
    out, cv_dirs = [], []
    for m in models or []:
        if is_cv_dir(m):
            cv_dirs.append(Path(m))
            out += [str(p) for p in fold_checkpoints(m)]
        else:
            out.append(str(m))
    return out, cv_dirs


def refuse_held_in(cv_dirs: list[Path], data_dir: str | Path) -> None:
    """Between them the folds of a cross-validation trained on every case of its data folder, so that folder holds
    no case held out from their ensemble: scoring the ensemble there would report training cases."""
    here = str(Path(data_dir).resolve())
    for d in cv_dirs:
        setup = read_cv(d)["setup"]
        if setup["data_dir"] == here:
            raise fail(
                d,
                f"its folds together trained on every case in {data_dir} (each fold on the other folds' cases), "
                "so no case there is held out from their ensemble; the held-out score of each fold is in "
                f"{d / 'summary.csv'}",
                "evaluate the ensemble on a folder of cases no fold saw (all of it is then scored as a test set)",
            )
