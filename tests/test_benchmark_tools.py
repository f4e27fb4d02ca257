"""The statistics of benchmarks/cv_compare.py on cross-validation folders written by hand, and the resize round
trip of benchmarks/resize_ceiling.py on masks worked out by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

_spec = importlib.util.spec_from_file_location("cv_compare", Path(__file__).parents[1] / "benchmarks" / "cv_compare.py")
cv_compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cv_compare)
_spec = importlib.util.spec_from_file_location(
    "resize_ceiling", Path(__file__).parents[1] / "benchmarks" / "resize_ceiling.py"
)
resize_ceiling = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(resize_ceiling)


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


def test_resize_round_trip_keeps_an_aligned_half_and_loses_a_lone_pixel():
    half = np.zeros((8, 8), bool)
    half[:, :4] = True  # 8x8 -> 2x2 by area is [[1, 0], [1, 0]]; bilinear back puts 0.625 at column 3, 0.375 at 4
    assert np.array_equal(resize_ceiling.round_trip(half, (2, 2)), half)
    dot = np.zeros((8, 8), bool)
    dot[5, 2] = True  # averages to 1/16 in its 4x4 block: nothing comes back above 0.5
    assert not resize_ceiling.round_trip(dot, (2, 2)).any()
    assert np.array_equal(resize_ceiling.round_trip(dot, (8, 8)), dot)


def test_resize_ceiling_pools_the_slices_of_a_volume(tmp_path):
    from PIL import Image

    masks = {"s1": np.zeros((8, 8), np.uint8), "s2": np.zeros((8, 8), np.uint8), "solo": np.zeros((8, 8), np.uint8)}
    masks["s1"][:, :4] = 255  # 32 pixels, kept whole
    masks["s2"][1, 1] = 255  # 1 pixel, lost
    masks["solo"][6, 6] = 255
    samples = []
    for name, m in masks.items():
        Image.fromarray(m).save(tmp_path / f"{name}.png")
        s = {"label": str(tmp_path / f"{name}.png"), "case_id": name}
        if name != "solo":
            s["volume_id"] = "patient"
        samples.append(s)
    d = resize_ceiling.ceiling(samples, (2, 2))
    assert d["patient"] == pytest.approx(2 * 32 / (2 * 32 + 1))  # tp 32, fn 1 over both slices
    assert d["solo"] == 0.0
