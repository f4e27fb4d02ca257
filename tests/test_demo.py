"""``medseg demo`` end to end, as a user runs it: one command that trains, evaluates, infers and writes the reports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.checkpoint import load_checkpoint

from .conftest import csv_rows, dice, pdf_text, run_cli

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow  # about 20 s of training on a free CPU, a minute on a busy one


def _medseg(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The installed command line in a fresh process, the way a user starts it."""
    env = {**os.environ, "MEDSEG_CONFIG_DIR": str(REPO / "configs")}
    return subprocess.run(
        [sys.executable, "-m", "medseg", *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",  # the demo prints px² whatever the locale of the machine running the tests
        timeout=900,
    )


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """One demo run shared by the checks below: (its --out folder, what it printed)."""
    root = tmp_path_factory.mktemp("demo")
    done = _medseg("demo", "--out", str(root / "demo"), "--device", "cpu", "--quiet", cwd=root)
    assert done.returncode == 0, done.stdout + done.stderr
    return root / "demo", done.stdout


def _mask(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)) > 0


def test_the_demo_says_where_its_reports_are(demo):
    out, said = demo
    last = said.strip().splitlines()[-1]
    assert last.startswith("demo finished in ")
    assert str(out / "cohort_report.pdf") in last and str(out / "case_report.pdf") in last


def test_training_ran_every_epoch_and_learned(demo):
    out, _ = demo
    history = csv_rows(out / "run" / "history.csv")
    assert [int(r["epoch"]) for r in history] == list(range(1, 41))
    dice = [float(r["val_dice_lesion"]) for r in history if r["val_dice_lesion"]]
    assert len(dice) == 8 and max(dice) > 0.9  # validated every 5 epochs; synthetic lesions are easy to learn
    assert float(history[-1]["train_loss"]) < float(history[0]["train_loss"])


def test_evaluation_scores_each_validation_case_once(demo):
    out, _ = demo
    val = json.loads((out / "run" / "split.json").read_text())["val"]
    rows = csv_rows(out / "evaluation" / "metrics.csv")
    assert len(val) == 8 and sorted(r["case_id"] for r in rows) == sorted(val)
    assert {r["class"] for r in rows} == {"lesion"}
    dice = [float(r["dice"]) for r in rows]
    assert min(dice) > 0.9
    summary = {(r["class"], r["metric"]): r for r in csv_rows(out / "evaluation" / "summary.csv")}
    assert float(summary["lesion", "dice"]["mean"]) == pytest.approx(np.mean(dice), abs=1e-5)
    assert int(summary["lesion", "dice"]["n"]) == 8
    # Evaluation at the original resolution with post-processing agrees with training's own validation.
    best = max(float(r["val_dice_lesion"]) for r in csv_rows(out / "run" / "history.csv") if r["val_dice_lesion"])
    assert np.mean(dice) == pytest.approx(best, abs=0.01)


def test_best_checkpoint_loads_and_segments_a_validation_case(demo, tmp_path):
    out, _ = demo
    ckpt = load_checkpoint(out / "run" / "best.pt")
    assert ckpt["config"]["name"] == "demo"
    case = json.loads((out / "run" / "split.json").read_text())["val"][0]
    image = out / "data" / "images" / f"{case}.png"
    r = run_cli("infer", image, "-m", out / "run" / "best.pt", "--out", tmp_path / "o", "--device", "cpu", "--quiet")
    assert r.exit_code == 0, r.output
    seg = _mask(tmp_path / "o" / f"{case}_seg.png")
    truth = _mask(out / "data" / "masks" / f"{case}_mask.png")
    assert seg.shape == truth.shape == np.asarray(Image.open(image)).shape[:2]
    assert dice(seg, truth) > 0.9
    # infer and evaluate share one way of segmenting a case: the same model gives evaluate's mask exactly.
    assert np.array_equal(seg, _mask(out / "evaluation" / "predictions" / f"{case}_seg.png"))


def test_the_reports_are_pdfs_about_the_demo_cases(demo):
    out, _ = demo
    for name in ("cohort_report.pdf", "case_report.pdf"):
        assert (out / name).read_bytes()[:5] == b"%PDF-", name
    case = json.loads(next((out / "infer").glob("*_findings.json")).read_text())
    assert f"Segmentation report Case {case['case_id']}" in pdf_text(out / "case_report.pdf")
    assert "Cohort evaluation report 8 cases" in pdf_text(out / "cohort_report.pdf")


def test_a_second_demo_without_force_refuses_and_names_the_folder(demo):
    out, _ = demo
    before = (out / "run" / "best.pt").stat().st_mtime_ns
    again = _medseg("demo", "--out", str(out), "--device", "cpu", "--quiet", cwd=out.parent)
    assert again.returncode == 2
    said = (again.stdout + again.stderr).strip()
    assert len(said.splitlines()) == 1 and "Traceback" not in said
    assert str(out) in said and "already holds a demo" in said and "--force" in said
    assert (out / "run" / "best.pt").stat().st_mtime_ns == before
