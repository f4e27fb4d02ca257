"""The statistics of benchmarks/cv_compare.py on cross-validation folders written by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("cv_compare", Path(__file__).parents[1] / "benchmarks" / "cv_compare.py")
cv_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cv_compare)


def _run(root: Path, folds: dict[int, dict[str, float]]) -> Path:
    for fold, scores in folds.items():
        d = root / f"fold{fold}" / "eval-last"
        d.mkdir(parents=True)
        lines = ["case_id,class,dice,jaccard"]
        for case, dice in scores.items():
            lines += [f"{case},tumour,{dice},{dice / (2 - dice)}", f"{case},oedema,0.1,0.05"]
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    return root


def test_paired_differences_averaged_over_seeds(tmp_path):
    b0 = _run(tmp_path / "b0", {0: {"a": 0.5, "b": 0.8}, 1: {"c": 0.6}})
    b1 = _run(tmp_path / "b1", {0: {"a": 0.7, "b": 0.8}, 1: {"c": 0.6}})
    l0 = _run(tmp_path / "l0", {0: {"a": 0.6, "b": 0.7}, 1: {"c": 0.9}})
    l1 = _run(tmp_path / "l1", {0: {"a": 0.8, "b": 0.7}, 1: {"c": 0.7}})
    out = cv_compare.main(["--base", str(b0), str(b1), "--lever", str(l0), str(l1), "--boot", "2000"])
    lever, noise = out
    # per case, lever - default averaged over the two seeds: a (0.1 + 0.1)/2, b -0.1, c (0.3 + 0.1)/2
    assert lever["cases"] == 3 and lever["mean_diff"] == pytest.approx((0.1 - 0.1 + 0.2) / 3, abs=1e-4)
    assert lever["base_mean"] == pytest.approx((0.6 + 0.8 + 0.6) / 3, abs=1e-4)
    assert (lever["cases_up"], lever["cases_down"]) == (2, 1)
    assert lever["most_down"][0] == ["b", -0.1] and lever["most_up"][0] == ["c", 0.2]
    lo, hi = lever["ci95"]
    assert -0.1 <= lo < lever["mean_diff"] < hi <= 0.2  # a mean of resampled cases lies within the cases' range
    # the default against itself on the second seed: only case a moves, by +0.2
    assert noise["mean_diff"] == pytest.approx(0.2 / 3, abs=1e-4) and noise["cases_up"] == 1


def test_class_and_metric_can_be_chosen(tmp_path):
    b = _run(tmp_path / "b", {0: {"a": 0.5}})
    lev = _run(tmp_path / "l", {0: {"a": 0.6}})
    assert cv_compare.case_scores(b, "jaccard") == pytest.approx({"a": 0.5 / 1.5})
    assert cv_compare.case_scores(b, label="oedema") == {"a": 0.1}
    assert cv_compare.main(["--base", str(b), "--lever", str(lev), "--label", "oedema"])[0]["mean_diff"] == 0


def test_constant_difference_has_a_zero_width_interval():
    lo, hi, share = cv_compare.bootstrap_ci(np.full(7, 0.03), n=500)
    assert lo == pytest.approx(0.03) and hi == pytest.approx(0.03) and share == 1.0


def test_mismatched_runs_are_refused(tmp_path):
    b = _run(tmp_path / "b", {0: {"a": 0.5}})
    other = _run(tmp_path / "o", {0: {"z": 0.5}})
    with pytest.raises(SystemExit, match="one lever run per base run"):
        cv_compare.main(["--base", str(b), str(b), "--lever", str(other)])
    with pytest.raises(SystemExit, match="share no held-out case"):
        cv_compare.main(["--base", str(b), "--lever", str(other)])
    with pytest.raises(SystemExit, match="no fold"):
        cv_compare.main(["--base", str(tmp_path), "--lever", str(b)])
    twice = _run(tmp_path / "t", {0: {"a": 0.5}, 1: {"a": 0.6}})
    with pytest.raises(SystemExit, match="held out by two folds"):
        cv_compare.case_scores(twice)
