"""``medseg compare``: two runs scored on the same cases, compared case by case.

A run is a folder that ``medseg cv`` wrote (``fold*/eval-last/metrics.csv``) or that ``medseg evaluate`` wrote
(``metrics.csv``). Pairing per case removes what makes one case harder than another, so a difference far smaller
than the spread of the scores can still be told from noise: for every case scored in both runs, the second run's
score minus the first's; their mean with a 95% percentile bootstrap interval over cases (cases resampled with
replacement, ``scipy.stats.bootstrap``, seeded), the share of resamples whose mean is above 0, how many cases gain
or lose more than a margin, and the cases that moved most.

Several runs per side (one per seed, paired in the order given) average each case's difference over the pairs;
with two or more base runs, the base against itself on its second seed is the noise floor a change has to clear.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from medseg.errors import MedsegError, fail


def _metrics_files(run: Path, eval_dir: str) -> list[Path]:
    files = sorted(run.glob(f"fold*/{eval_dir}/metrics.csv"))
    if files:
        return files
    if (run / "metrics.csv").is_file() and not (run / "cv.json").is_file():
        return [run / "metrics.csv"]
    raise fail(
        run,
        f"has no fold*/{eval_dir}/metrics.csv and no metrics.csv",
        "point at a folder that medseg cv or medseg evaluate wrote (its --out), after its cases were scored",
    )


def case_scores(
    run: str | Path, metric: str = "dice", eval_dir: str = "eval-last", label: str | None = None
) -> dict[str, float]:
    """``{case_id: score}`` over every fold of one run (one class: the first in metrics.csv, or ``label``).
    Cases whose score is undefined (empty or nan) are left out."""
    scores: dict[str, float] = {}
    for f in _metrics_files(Path(run), eval_dir):
        with open(f, newline="") as fh:
            rows = list(csv.DictReader(fh))
        if rows and metric not in rows[0]:
            columns = [c for c in rows[0] if c not in ("case_id", "class")]
            raise fail(f, f"has no column '{metric}'", f"pass --metric as one of {', '.join(columns)}")
        cls = label or (rows[0]["class"] if rows else None)
        for r in rows:
            if r["class"] != cls or r.get(metric, "") in ("", "nan"):
                continue
            if r["case_id"] in scores:
                raise fail(
                    f,
                    f"case {r['case_id']} is held out by two folds",
                    "compare runs of one k-fold split",
                )
            scores[r["case_id"]] = float(r[metric])
    return scores


def paired(base: list[dict[str, float]], other: list[dict[str, float]]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The cases scored in every run, each with its base score and its other-minus-base difference, both averaged
    over the run pairs."""
    if len(base) != len(other):
        raise MedsegError(
            f"{len(base)} base runs but {len(other)} runs to compare; fix: give one run per base run, in the same "
            "seed order"
        )
    cases = sorted(set.intersection(*(set(s) for s in base + other)))
    if not cases:
        raise MedsegError("the runs share no scored case; fix: compare runs of the same folds or the same cases")
    b = np.array([[s[c] for c in cases] for s in base])
    d = np.array([[so[c] - sb[c] for c in cases] for sb, so in zip(base, other)])
    return cases, b.mean(0), d.mean(0)


def bootstrap_ci(diff: np.ndarray, n: int = 10000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Percentile interval of the mean of ``diff`` over resampled cases, and the share of resamples above 0."""
    from scipy.stats import bootstrap

    diff = np.asarray(diff, dtype=np.float64)
    if diff.size < 2:  # one case: no spread to resample
        return float(diff.mean()), float(diff.mean()), float(diff.mean() > 0)
    res = bootstrap(
        (diff,),
        np.mean,
        n_resamples=n,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    share = float((res.bootstrap_distribution > 0).mean())
    return float(res.confidence_interval.low), float(res.confidence_interval.high), share


def summary(name: str, cases: list[str], base: np.ndarray, diff: np.ndarray, margin: float, n_boot: int) -> dict:
    """The figures of one comparison, rounded as they are printed."""
    lo, hi, p_up = bootstrap_ci(diff, n_boot)
    order = np.argsort(diff)
    return {
        "comparison": name,
        "cases": len(cases),
        "base_mean": round(float(base.mean()), 4),
        "lever_mean": round(float((base + diff).mean()), 4),
        "mean_diff": round(float(diff.mean()), 4),
        "ci95": [round(lo, 4), round(hi, 4)],
        "share_of_resamples_above_0": round(p_up, 3),
        "cases_up": int((diff > margin).sum()),
        "cases_down": int((diff < -margin).sum()),
        "margin": margin,
        "most_down": [[cases[i], round(float(diff[i]), 3)] for i in order[:3]],
        "most_up": [[cases[i], round(float(diff[i]), 3)] for i in order[::-1][:3]],
    }


def compare_runs(
    base: list[str | Path],
    other: list[str | Path],
    metric: str = "dice",
    label: str | None = None,
    eval_dir: str = "eval-last",
    margin: float = 0.05,
    n_boot: int = 10000,
    name: str = "lever - default",
) -> list[dict]:
    """``other`` against ``base``, case by case (see the module text), as the comparison ``name``; with two or more
    base runs a second record: the base's second seed against its first, the noise floor."""
    if margin < 0 or n_boot < 1:
        raise MedsegError(f"margin {margin} and resamples {n_boot} must be >= 0 and >= 1; fix: e.g. 0.05 and 10000")
    load = lambda runs: [case_scores(r, metric, eval_dir, label) for r in runs]
    b, o = load(base), load(other)
    out = [summary(name, *paired(b, o), margin, n_boot)]
    if len(b) >= 2:
        out.append(summary("default, second seed - first seed", *paired(b[:1], b[1:2]), margin, n_boot))
    return out


def describe(rec: dict) -> str:
    """One readable line of a comparison."""
    return (
        f"{rec['comparison']}: {rec['cases']} cases, {rec['base_mean']:.4f} -> {rec['lever_mean']:.4f} "
        f"({rec['mean_diff']:+.4f}, 95% CI {rec['ci95'][0]:+.4f} to {rec['ci95'][1]:+.4f}); "
        f"{rec['cases_up']} up and {rec['cases_down']} down by more than {rec['margin']}"
    )


def method_of(run: str | Path) -> tuple[str, bool]:
    """The method a run scored and whether it is classical, from the model card of its eval.json (an evaluate
    folder) or of its first fold's (a cv folder); the folder's name when neither says."""
    run = Path(run)
    for f in (run / "eval.json", *sorted(run.glob("fold*/eval-last/eval.json"))):
        if f.is_file():
            card = json.loads(f.read_text(encoding="utf-8")).get("model_card") or {}
            if card.get("method"):
                return card["method"], bool(card.get("classical"))
    return run.name, False


def beside(eval_dir: str | Path, runs: list[str | Path], metric: str = "dice", n_boot: int = 10000) -> list[dict]:
    """This evaluation against each of ``runs`` (evaluate or cv folders) on the cases both scored: per run its
    method, whether it is classical, its mean and this evaluation's mean on those cases, and this one's paired
    advantage with its bootstrap interval (:func:`summary`, with the other run as the base)."""
    this = case_scores(eval_dir, metric)
    out = []
    for run in runs:
        name, classical = method_of(run)
        other = case_scores(run, metric)
        if not set(other) & set(this):
            raise fail(run, f"shares no scored case with {eval_dir}", "pass a run scored on the same cases or folds")
        cases, base, diff = paired([other], [this])
        rec = summary(f"this model - {name}", cases, base, diff, 0.05, n_boot)
        out.append({"run": str(run), "method": name, "classical": classical, **rec})
    return out
