"""``medseg cv`` and ``medseg compare``: a 2-fold cross-validation of the demo recipe (tiny model, one epoch), and
paired comparisons of runs written by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medseg.errors import MedsegError
from medseg.evaluation import compare, cv, cv_ensemble
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parents[2]
TINY_DEMO = [
    "data.options.n_cases=8",
    "data.options.size=[48,64]",
    "preprocess.spatial_size=[48,64]",
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "train.epochs=1",
    "train.val_every=1",
]


@pytest.fixture(scope="module")
def cv_run(tmp_path_factory):
    """One 2-fold run of the demo recipe: (output folder, data folder, result)."""
    root = tmp_path_factory.mktemp("cv")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MEDSEG_CONFIG_DIR", str(REPO / "configs"))
        res = cv.cross_validate(
            "demo", root / "data", root / "cv", folds=2, overrides=TINY_DEMO, device="cpu", progress=False
        )
    return root / "cv", root / "data", res


def _split(out: Path, fold: int) -> dict:
    return json.loads((out / f"fold{fold}" / "split.json").read_text())


def test_every_fold_writes_a_run_an_evaluation_and_the_pooled_files(cv_run):
    out, _, res = cv_run
    for f in (0, 1):
        for name in ("last.pt", "best.pt", "config.yaml", "split.json", "eval-last/metrics.csv", "eval-last/eval.json"):
            assert (out / f"fold{f}" / name).is_file(), name
        assert _split(out, f)["method"].startswith(f"2-fold, fold {f}")
    for name in cv.CV_FILES:
        assert (out / name).is_file(), name
    assert not (out / "fold0" / "eval-best").exists()  # best.pt is scored only when asked
    assert res.info["pooled"]["folds_done"] == [0, 1] and res.info["pooled"]["complete"]


def test_held_out_cases_are_disjoint_and_cover_the_data(cv_run):
    out, data_dir, res = cv_run
    from medseg.data import load_samples

    everyone = {s["case_id"] for s in load_samples("demo", data_dir, {"n_cases": 8}).samples}
    held = [set(_split(out, f)["val"]) for f in (0, 1)]
    assert held[0] and held[1] and not held[0] & held[1]
    assert held[0] | held[1] == everyone and len(everyone) == 8
    for f in (0, 1):
        assert set(_split(out, f)["train"]) == everyone - held[f]  # each fold trains on the other fold
        assert set(res.info["folds"][str(f)]["held_out"]) == held[f]
        assert set(res.metrics[res.metrics["fold"] == f]["case_id"]) == held[f]


def test_pooled_numbers_are_the_mean_of_the_fold_numbers(cv_run):
    out, _, res = cv_run
    summary = pd.read_csv(out / "summary.csv").set_index(["class", "metric"])
    folds = pd.read_csv(out / "folds.csv")
    fold_dice = []
    for f in (0, 1):
        own = pd.read_csv(out / f"fold{f}" / "eval-last" / "summary.csv").set_index(["class", "metric"])
        fold_dice.append(own.loc[("lesion", "dice"), "mean"])
        assert res.info["folds"][str(f)]["dice"] == pytest.approx(fold_dice[-1], rel=1e-5)
        row = folds[(folds["fold"] == f) & (folds["metric"] == "dice")]
        assert row["mean"].iloc[0] == pytest.approx(fold_dice[-1], rel=1e-5)
    dice = summary.loc[("lesion", "dice")]
    assert dice["mean"] == pytest.approx(np.mean(fold_dice), rel=1e-5)
    assert dice["std"] == pytest.approx(np.std(fold_dice, ddof=1), rel=1e-4)
    assert (dice["min"], dice["max"]) == pytest.approx((min(fold_dice), max(fold_dice)), rel=1e-5)
    assert res.info["pooled"]["dice"] == pytest.approx(np.mean(fold_dice), rel=1e-5)
    pooled_cases = pd.read_csv(out / "metrics.csv")
    assert len(pooled_cases) == 8 and dice["case_n"] == 8
    assert dice["case_mean"] == pytest.approx(pooled_cases["dice"].mean(), rel=1e-5)


def test_a_rerun_keeps_finished_folds_and_refuses_another_setup(cv_run):
    out, data_dir, _ = cv_run
    stamp = (out / "fold0" / "last.pt").stat().st_mtime_ns
    res = cv.cross_validate("demo", data_dir, out, folds=2, overrides=TINY_DEMO, device="cpu", progress=False)
    assert (out / "fold0" / "last.pt").stat().st_mtime_ns == stamp  # nothing trained again
    assert res.info["pooled"]["folds_done"] == [0, 1]
    with pytest.raises(MedsegError, match=r"another cross-validation \(differs in config_values.data.split.folds"):
        cv.cross_validate("demo", data_dir, out, folds=3, overrides=TINY_DEMO, progress=False)
    with pytest.raises(MedsegError, match="differs in config_values.train.epochs, overrides"):
        cv.cross_validate("demo", data_dir, out, folds=2, overrides=[*TINY_DEMO, "train.epochs=2"], progress=False)


def test_a_fold_left_unfinished_is_refused_without_force(tmp_path):
    (tmp_path / "cv" / "fold1").mkdir(parents=True)
    (tmp_path / "cv" / "fold1" / "last.pt").write_bytes(b"")
    with pytest.raises(MedsegError, match=r"fold1: already holds last.pt .*fix: pass --force to train fold 1 again"):
        cv.cross_validate("demo", tmp_path / "data", tmp_path / "cv", folds=2, overrides=TINY_DEMO, progress=False)
    (tmp_path / "ev").mkdir()
    (tmp_path / "ev" / "metrics.csv").write_text("case_id,class,dice\n")  # an evaluation's folder, say
    with pytest.raises(MedsegError, match="holds metrics.csv but no cv.json, so medseg cv did not write them"):
        cv.cross_validate("demo", tmp_path / "data", tmp_path / "ev", folds=2, force=True, progress=False)
    with pytest.raises(MedsegError, match="at least 2 folds"):
        cv.cross_validate("demo", tmp_path / "data", tmp_path / "cv", folds=1)
    with pytest.raises(MedsegError, match=r"--only 2 is not a fold of 2 \(0..1\)"):
        cv.cross_validate("demo", tmp_path / "data", tmp_path / "cv", folds=2, only=[2])


def test_the_folds_are_one_ensemble_for_infer_and_not_scored_on_their_own_data(cv_run, tmp_path):
    out, data_dir, _ = cv_run
    paths, dirs = cv_ensemble.expand_models([out, "x.pt"])
    assert paths == [str(out / "fold0" / "last.pt"), str(out / "fold1" / "last.pt"), "x.pt"] and dirs == [out]
    image = next(iter(sorted((data_dir / "images").glob("*.png"))))
    r = run_cli("infer", image, "-m", out, "--out", tmp_path / "inf", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    findings = json.loads(next((tmp_path / "inf").glob("*_findings.json")).read_text())
    assert [m["path"] for m in findings["models"]] == [str((out / f"fold{f}" / "last.pt").resolve()) for f in (0, 1)]
    r = run_cli("evaluate", "-m", out, "--data", "demo", "--data-dir", data_dir, "--out", tmp_path / "ev")
    assert r.exit_code == 2
    assert "its folds together trained on every case in" in r.output and "held out from their ensemble" in r.output
    assert not (tmp_path / "ev").exists()


# ----------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------


def _run(root: Path, folds: dict[int, dict[str, float]]) -> Path:
    """A cross-validation folder with each fold's metrics.csv: a tumour score per case and a constant oedema."""
    for fold, scores in folds.items():
        d = root / f"fold{fold}" / "eval-last"
        d.mkdir(parents=True)
        lines = ["case_id,class,dice,jaccard"]
        for case, dice in scores.items():
            lines += [f"{case},tumour,{dice},{dice / (2 - dice)}", f"{case},oedema,0.1,0.05"]
        (d / "metrics.csv").write_text("\n".join(lines) + "\n")
    return root


def test_paired_differences_of_a_hand_made_pair(tmp_path):
    a = _run(tmp_path / "a", {0: {"p1": 0.5, "p2": 0.8}, 1: {"p3": 0.6, "p4": 0.9}})
    b = _run(tmp_path / "b", {0: {"p1": 0.7, "p2": 0.7}, 1: {"p3": 0.61, "p4": 0.9}})
    (rec,) = compare.compare_runs([a], [b], n_boot=2000, name="b - a")
    # per case b - a: +0.2, -0.1, +0.01, 0
    assert rec["comparison"] == "b - a" and rec["cases"] == 4
    assert rec["mean_diff"] == pytest.approx((0.2 - 0.1 + 0.01) / 4, abs=1e-4)
    assert rec["base_mean"] == pytest.approx((0.5 + 0.8 + 0.6 + 0.9) / 4, abs=1e-4)
    assert rec["lever_mean"] == pytest.approx((0.7 + 0.7 + 0.61 + 0.9) / 4, abs=1e-4)
    assert (rec["cases_up"], rec["cases_down"]) == (1, 1)  # beyond the 0.05 margin: p1 up, p2 down
    assert rec["most_up"][0] == ["p1", 0.2] and rec["most_down"][0] == ["p2", -0.1]
    lo, hi = rec["ci95"]
    assert -0.1 <= lo < rec["mean_diff"] < hi <= 0.2  # a mean of resampled cases lies within the cases' range


def test_seed_pairs_average_and_the_noise_floor(tmp_path):
    b0 = _run(tmp_path / "b0", {0: {"a": 0.5, "b": 0.8}, 1: {"c": 0.6}})
    b1 = _run(tmp_path / "b1", {0: {"a": 0.7, "b": 0.8}, 1: {"c": 0.6}})
    l0 = _run(tmp_path / "l0", {0: {"a": 0.6, "b": 0.7}, 1: {"c": 0.9}})
    l1 = _run(tmp_path / "l1", {0: {"a": 0.8, "b": 0.7}, 1: {"c": 0.7}})
    lever, noise = compare.compare_runs([b0, b1], [l0, l1], n_boot=2000)
    # per case, lever - default averaged over the two seeds: a (0.1 + 0.1)/2, b -0.1, c (0.3 + 0.1)/2
    assert lever["mean_diff"] == pytest.approx((0.1 - 0.1 + 0.2) / 3, abs=1e-4)
    assert lever["base_mean"] == pytest.approx((0.6 + 0.8 + 0.6) / 3, abs=1e-4)
    assert (lever["cases_up"], lever["cases_down"]) == (2, 1)
    # the default against itself on the second seed: only case a moves, by +0.2
    assert noise["mean_diff"] == pytest.approx(0.2 / 3, abs=1e-4) and noise["cases_up"] == 1


def test_class_metric_and_evaluation_folders(tmp_path):
    a = _run(tmp_path / "a", {0: {"x": 0.5}})
    assert compare.case_scores(a, "jaccard") == pytest.approx({"x": 0.5 / 1.5})
    assert compare.case_scores(a, label="oedema") == {"x": 0.1}
    ev = tmp_path / "ev"  # what medseg evaluate writes: one metrics.csv
    ev.mkdir()
    (ev / "metrics.csv").write_text("case_id,class,dice\nx,tumour,0.75\ny,tumour,nan\n")
    assert compare.case_scores(ev) == {"x": 0.75}  # an undefined score is left out
    (rec,) = compare.compare_runs([a], [ev])
    assert rec["mean_diff"] == 0.25 and rec["ci95"] == [0.25, 0.25]
    with pytest.raises(MedsegError, match="has no column 'hd95'; fix: pass --metric as one of dice"):
        compare.case_scores(ev, "hd95")


def test_constant_difference_has_a_zero_width_interval():
    lo, hi, share = compare.bootstrap_ci(np.full(7, 0.03), n=500)
    assert lo == pytest.approx(0.03) and hi == pytest.approx(0.03) and share == 1.0


def test_interval_is_the_percentile_of_the_resampled_means():
    diff = np.random.default_rng(5).normal(0.01, 0.1, 37)
    rng = np.random.default_rng(0)  # the draw scipy.stats.bootstrap makes with the same seeded generator
    means = diff[rng.integers(0, diff.size, size=(3000, diff.size))].mean(1)
    lo, hi, share = compare.bootstrap_ci(diff, n=3000)
    assert (lo, hi) == pytest.approx(tuple(np.quantile(means, [0.025, 0.975])))
    assert share == pytest.approx((means > 0).mean())


def test_mismatched_runs_are_refused(tmp_path):
    b = _run(tmp_path / "b", {0: {"a": 0.5}})
    other = _run(tmp_path / "o", {0: {"z": 0.5}})
    with pytest.raises(MedsegError, match="one run per base run"):
        compare.compare_runs([b, b], [other])
    with pytest.raises(MedsegError, match="share no scored case"):
        compare.compare_runs([b], [other])
    with pytest.raises(MedsegError, match="no fold.*metrics.csv and no metrics.csv; fix: point at a folder"):
        compare.compare_runs([tmp_path], [b])
    twice = _run(tmp_path / "t", {0: {"a": 0.5}, 1: {"a": 0.6}})
    with pytest.raises(MedsegError, match="held out by two folds"):
        compare.case_scores(twice)


def test_compare_command(tmp_path):
    a = _run(tmp_path / "a", {0: {"p1": 0.5, "p2": 0.8}})
    b = _run(tmp_path / "b", {0: {"p1": 0.6, "p2": 0.8}})
    r = run_cli("compare", a, b, "--json", "--boot", "500")
    assert r.exit_code == 0, r.output
    rec = json.loads(r.output)
    assert rec["mean_diff"] == pytest.approx(0.05) and rec["comparison"] == f"{b} - {a}"
    r = run_cli("compare", a, b)
    assert r.exit_code == 0 and "2 cases, 0.6500 -> 0.7000 (+0.0500" in r.output and "most up: p1 +0.100" in r.output
    r = run_cli("compare", a, tmp_path / "missing")
    assert r.exit_code == 2 and "missing: has no fold*/eval-last/metrics.csv" in r.output


def test_compare_command_pairs_seeds_given_as_lists(tmp_path):
    b0 = _run(tmp_path / "b0", {0: {"a": 0.5, "b": 0.8}})
    b1 = _run(tmp_path / "b1", {0: {"a": 0.7, "b": 0.8}})
    l0 = _run(tmp_path / "l0", {0: {"a": 0.6, "b": 0.8}})
    l1 = _run(tmp_path / "l1", {0: {"a": 0.8, "b": 0.8}})
    r = run_cli("compare", f"{b0},{b1}", f"{l0},{l1}", "--json", "--boot", "500")
    assert r.exit_code == 0, r.output
    lever, noise = (json.loads(x) for x in r.output.splitlines())
    assert lever["mean_diff"] == pytest.approx(0.05) and noise["mean_diff"] == pytest.approx(0.1)
    r = run_cli("compare", f"{b0},{b1}", l0)
    assert r.exit_code == 2 and "2 base runs but 1 runs to compare" in r.output


def test_cv_command_refuses_before_training(tmp_path):
    r = run_cli("cv", "demo", "--folds", "1", "--out", tmp_path / "cv")
    assert r.exit_code == 2 and "needs at least 2 folds" in r.output
    r = run_cli("cv", "ph2", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "cv")
    assert r.exit_code == 2 and "nowhere: data directory does not exist" in r.output
    assert not (tmp_path / "cv").exists()


def test_every_fold_can_start_from_one_checkpoint(cv_run, tmp_path):
    out, data, _ = cv_run
    start = out / "fold0" / "best.pt"
    res = cv.cross_validate(
        "demo", data, tmp_path / "cv", folds=2, only=[1], overrides=TINY_DEMO, device="cpu", progress=False, init=start
    )
    assert res.info["setup"]["init"] == str(start.resolve())
    from medseg.checkpoint import load_checkpoint

    w = load_checkpoint(tmp_path / "cv" / "fold1" / "best.pt")["weights"]
    assert w["option"] == "--init" and w["source"] == str(start) and w["loaded"] == w["total"]
    with pytest.raises(MedsegError, match="another cross-validation.*init"):  # another start, another experiment
        cv.cross_validate("demo", data, tmp_path / "cv", folds=2, only=[0], overrides=TINY_DEMO, device="cpu")


def test_object_scores_pool_per_image_weighted_and_ap_per_fold():
    fold = lambda n, dsb, ap50: {"instances": {"cases": n, "dsb_mean": dsb, "pq_mean": dsb, "count_error_mean": 1.0,
                                               "count_error_abs_mean": 2.0, "ap": ap50 / 2, "ap50": ap50, "ap75": 0.1}}  # fmt: skip
    pooled = cv._pooled_instances([fold(30, 0.6, 0.8), fold(10, 0.2, 0.4)])["instances"]
    assert pooled["cases"] == 40 and pooled["dsb_mean"] == pytest.approx((30 * 0.6 + 10 * 0.2) / 40)
    assert pooled["ap50_fold_mean"] == pytest.approx(0.6) and pooled["ap_fold_mean"] == pytest.approx(0.3)
    assert cv._pooled_instances([fold(30, 0.6, 0.8), {"dice": 0.9}]) == {}  # a semantic fold among them: none
