import json

from typer.testing import CliRunner

from medseg.cli import app

runner = CliRunner()


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_check_json(ph2_dir):
    r = _run("datasets", "check", "ph2", "--data-dir", ph2_dir, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_cases"] == 12 and report["problems"] == []
    assert report["diagnosis_counts"] == {"0": 4, "1": 4, "2": 4}


def test_check_wrong_layout_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = _run("datasets", "check", "ph2", "--data-dir", tmp_path / "empty")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "empty" in lines[0] and "fix:" in lines[0] and "Traceback" not in r.output


def test_check_reports_bad_files_and_exits_1(tmp_path):
    from PIL import Image

    from medseg.data import synthetic

    root = synthetic.make_folder_2d(tmp_path / "f", n=3, size=(16, 16))
    Image.new("L", (8, 8)).save(root / "masks" / "case_001_mask.png")
    r = _run("datasets", "check", "folder", "--data-dir", root)
    assert r.exit_code == 1
    assert "PROBLEM" in r.output and "case_001_mask.png: mask is 8x8" in r.output


def test_missing_data_dir(tmp_path):
    r = _run("train", "ph2", "--data-dir", tmp_path / "nowhere")
    assert r.exit_code == 2 and "nowhere: data directory does not exist" in r.output


def test_train_then_refuse_then_resume(folder_dir, tmp_path, small_2d_overrides):
    sets = [x for o in small_2d_overrides for x in ("--set", o)]
    base = ["train", "demo", "--data-dir", folder_dir, "--out", tmp_path / "run", "--quiet", "--set", "data.recipe=folder", *sets]
    r = _run(*base, "--epochs", "1")
    assert r.exit_code == 0, r.output
    r = _run(*base, "--epochs", "1")
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = _run(*base, "--epochs", "2", "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
