import json
from pathlib import Path

import pytest

from .conftest import pdf_text, run_cli


def test_check_json(ph2_dir):
    r = run_cli("datasets", "check", "ph2", "--data-dir", ph2_dir, "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["n_cases"] == 12 and report["problems"] == []
    assert report["diagnosis_counts"] == {"0": 4, "1": 4, "2": 4}


def test_check_reads_each_file_once_and_reports_what_is_on_disk(ph2_dir, brats_dir, monkeypatch):
    import medseg.data.loading as tr
    from medseg.config import load_config
    from medseg.data.check import check_dataset

    reads = []
    for name in ("read_image_2d", "read_volume"):
        real = getattr(tr, name)
        monkeypatch.setattr(tr, name, lambda p, *a, _real=real, **k: reads.append(str(p)) or _real(p, *a, **k))
    r = check_dataset(load_config("ph2"), ph2_dir)
    assert len(reads) == 24 and len(set(reads)) == 24  # 12 images + 12 masks, each once
    assert r["channels_found"] == {"3": 12} and r["label_values_found"] == [
        0,
        1,
        255,
    ]  # the synthetic set mixes 1-bit and 8-bit masks
    assert sum(r["image_sizes"].values()) == 12 and r["spacings_mm"] == {}
    reads.clear()
    r = check_dataset(load_config("brats"), brats_dir)
    assert len(reads) == len(set(reads)) == 4 * 3  # 2 modalities + 1 label map per case
    assert r["channels_found"] == {"2": 4} and r["label_values_found"] == [0, 1, 2, 3, 4]
    assert r["image_sizes"] == {"32x32x24": 4} and len(r["spacings_mm"]) >= 1


def test_check_warns_when_colour_would_be_lost(ph2_dir):
    from medseg.config import load_config
    from medseg.data.check import check_dataset

    assert not [w for w in check_dataset(load_config("ph2"), ph2_dir)["warnings"] if "channel" in w]
    cfg = load_config("ph2", ["data.channels=[image]"])
    warned = [w for w in check_dataset(cfg, ph2_dir)["warnings"] if "channel" in w]
    assert warned == [
        (
            "12 images have 3 channels but the config expects 1 (image): they will be turned to grey "
            "(colour is lost); set data.channels to [red, green, blue] to keep colour"
        )
    ]


def test_check_says_which_images_were_turned_by_their_exif_orientation(tmp_path):
    """Two photos carry EXIF orientation 6: one with a mask drawn upright (read upright), one with a mask made from
    the stored pixels (read as stored, with the fix); the plain ones give no warning."""
    from PIL import Image

    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.data.check import check_dataset

    root = synthetic.make_folder_2d(tmp_path / "f", n=4, size=(16, 20))
    exif = Image.Exif()
    exif[274] = 6
    for i, upright_mask in ((0, True), (1, False)):
        img = Image.open(root / "images" / f"case_00{i}.png")
        (root / "images" / f"case_00{i}.png").unlink()
        img.save(root / "images" / f"case_00{i}.jpg", quality=98, exif=exif)
        if upright_mask:
            mask = Image.open(root / "masks" / f"case_00{i}_mask.png")
            mask.transpose(Image.Transpose.ROTATE_270).save(root / "masks" / f"case_00{i}_mask.png")
    r = check_dataset(load_config("demo", ["data.recipe=folder"]), root)
    assert not r["problems"] and r["image_sizes"] == {"16x20": 3, "20x16": 1}
    turned = [w for w in r["warnings"] if "EXIF" in w]
    assert len(turned) == 2 and turned[0].startswith("1 image carries an EXIF orientation: read upright")
    assert turned[1].startswith("1 image fits its mask only with the EXIF orientation ignored") and "fix:" in turned[1]


def test_check_lists_every_missing_mask_and_exits_1(tmp_path):
    from medseg.data import synthetic

    root = synthetic.make_folder_2d(tmp_path / "f", n=4, size=(16, 16))
    for m in sorted((root / "masks").iterdir())[:2]:
        m.unlink()
    r = run_cli("datasets", "check", "folder", "--data-dir", root)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.output.count("PROBLEM") == 2 and r.output.count("image has no mask") == 2
    assert "cases: 2" in r.output and "2 problem(s) found" in r.output


def test_check_wrong_layout_is_one_line(tmp_path):
    (tmp_path / "empty").mkdir()
    r = run_cli("datasets", "check", "ph2", "--data-dir", tmp_path / "empty")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "empty" in lines[0] and "fix:" in lines[0] and "Traceback" not in r.output


def test_check_reports_bad_files_and_exits_1(tmp_path):
    from PIL import Image

    from medseg.data import synthetic

    root = synthetic.make_folder_2d(tmp_path / "f", n=3, size=(16, 16))
    Image.new("L", (8, 12)).save(root / "masks" / "case_001_mask.png")  # other proportions: not a scaled copy
    r = run_cli("datasets", "check", "folder", "--data-dir", root)
    assert r.exit_code == 1
    assert "PROBLEM" in r.output and "case_001_mask.png: mask is 12x8" in r.output


def test_missing_data_dir(tmp_path):
    r = run_cli("train", "ph2", "--data-dir", tmp_path / "nowhere")
    assert r.exit_code == 2 and "nowhere: data directory does not exist" in r.output


def test_train_then_refuse_then_resume(folder_dir, tmp_path, small_2d_overrides):
    sets = [x for o in small_2d_overrides for x in ("--set", o)]
    base = [
        "train",
        "demo",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "run",
        "--quiet",
        "--set",
        "data.recipe=folder",
        *sets,
    ]
    r = run_cli(*base, "--epochs", "1")
    assert r.exit_code == 0, r.output
    r = run_cli(*base, "--epochs", "1")
    assert r.exit_code == 2 and "already holds a run" in r.output
    r = run_cli(*base, "--epochs", "2", "--resume")
    assert r.exit_code == 0, r.output
    assert "resuming" in r.output
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 3  # header + 2 epochs


@pytest.mark.slow  # trains three runs
def test_evaluate_ensembles_models_of_one_split_and_refuses_mixed_splits(folder_dir, tmp_path, small_2d_overrides):
    from medseg.config import load_config
    from medseg.engine.train import train

    def fit(name, *more):
        cfg = load_config("demo", ["data.recipe=folder", *small_2d_overrides, "train.epochs=2", *more])
        train(cfg, folder_dir, tmp_path / name, progress=False)
        return tmp_path / name / "last.pt"

    a, b, c = fit("a"), fit("b", "train.seed=5"), fit("c", "data.split.seed=3")
    r = run_cli(
        "evaluate",
        "--model",
        a,
        "--model",
        b,
        "--data",
        "folder",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "ev",
        "--quiet",
        "--report",
    )
    assert r.exit_code == 0, r.output
    pdf = tmp_path / "ev" / "cohort_report.pdf"  # --report writes into the evaluation's --out folder
    text = pdf_text(pdf)
    assert "ensemble of 2 (probabilities averaged)" in text
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert [p.split("/")[-2] for p in info["ensemble"]] == ["a", "b"]
    assert info["n_cases"] == len(json.loads((tmp_path / "a" / "split.json").read_text())["val"])
    r = run_cli(
        "evaluate",
        "--model",
        a,
        "--model",
        c,
        "--data",
        "folder",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "ev2",
        "--quiet",
    )
    assert r.exit_code == 2 and "another split" in r.output and "last.pt" in r.output and "fix:" in r.output


def test_evaluate_overrides_the_checkpoints_postprocessing(folder_dir, tmp_path, small_2d_overrides):
    """`evaluate --model` takes infer's post-processing flags, so a choice is measured on held-out cases without
    retraining; with --pred/--gt they would silently do nothing, so they are refused."""
    import pandas as pd

    from medseg.config import load_config
    from medseg.engine.train import train

    cfg = load_config("demo", ["data.recipe=folder", *small_2d_overrides, "train.epochs=1"])
    train(cfg, folder_dir, tmp_path / "run", progress=False)
    common = [
        "evaluate",
        "--model",
        tmp_path / "run" / "last.pt",
        "--data",
        "folder",
        "--data-dir",
        folder_dir,
        "--quiet",
    ]
    r = run_cli(*common, "--out", tmp_path / "ev", "--threshold", "1e-9", "--fill-holes")  # 0 itself is refused
    assert r.exit_code == 0, r.output
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert info["postprocess"] == {
        "threshold": 1e-9,
        "keep_largest": cfg.infer.keep_largest,
        "min_size": cfg.infer.min_size,
        "fill_holes": True,
    }
    fg = pd.read_csv(tmp_path / "ev" / "metrics.csv").query("`class` != 'background'")
    assert len(fg) == info["n_cases"] and (fg["recall"] == 1.0).all()  # every pixel is above a threshold of 1e-9
    finding = json.loads(next((tmp_path / "ev" / "predictions").glob("*_findings.json")).read_text())
    assert finding["postprocess"]["threshold"] == 1e-9 and finding["postprocess"]["fill_holes"] is True
    lesions = pd.read_csv(tmp_path / "ev" / "lesions.csv")
    assert info["lesion_detection"]["ranked_by_probability"] is True
    assert (lesions["lesions_pred"] == info["n_cases"]).all()  # one component, the whole image, per case
    r = run_cli(*common, "--out", tmp_path / "ev2", "--min-size", "1e9")  # larger than any image: nothing is kept
    assert r.exit_code == 0, r.output
    fg = pd.read_csv(tmp_path / "ev2" / "metrics.csv").query("`class` != 'background'")
    assert (fg["pred_size"] == 0).all() and json.loads((tmp_path / "ev2" / "eval.json").read_text())["postprocess"][
        "min_size"
    ] == 1e9
    nothing = pd.read_csv(tmp_path / "ev2" / "lesions.csv")
    assert (nothing["lesions_pred"] == 0).all() and (nothing["ap"] == 0).all() and (nothing["lesions_true"] > 0).all()
    r = run_cli(
        "evaluate",
        "--pred",
        tmp_path / "ev" / "predictions",
        "--gt",
        folder_dir / "masks",
        "--out",
        tmp_path / "ev3",
        "--threshold",
        "0.3",
    )
    assert r.exit_code == 2 and "--threshold" in r.output and "fix:" in r.output and not (tmp_path / "ev3").exists()


def test_default_data_dir_falls_back_to_the_recipe_folder(tmp_path):
    """A config named apart from its recipe (a user's my-ph2 reads PH2) finds datasets/ph2; its own folder wins when it
    exists; with neither, the config's own folder is named, so the error message points there."""
    from medseg.api import default_data_dir

    assert default_data_dir("my-ph2", "ph2") == Path("datasets/my-ph2")
    (tmp_path / "datasets" / "ph2").mkdir(parents=True)
    assert default_data_dir("my-ph2", "ph2") == Path("datasets/ph2")
    assert default_data_dir("ph2") == Path("datasets/ph2")
    (tmp_path / "datasets" / "my-ph2").mkdir()
    assert default_data_dir("my-ph2", "ph2") == Path("datasets/my-ph2")
