"""Bad input at the config and command-line layer: each case stops with one line naming the file or flag and the fix
(exit 2, no traceback), before any data is read or any output folder is made."""

import json
from pathlib import Path

import pytest

from medseg.cli import app
from medseg.config import load_config
from medseg.errors import MedsegError
from tests.conftest import run_cli, train_tiny


def _one_line_error(r, *needles):
    """Exit 2 with a single 'error: ...; fix: ...' line that contains every needle."""
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert r.exit_code == 2, r.output
    assert "Traceback" not in r.output and len(lines) == 1, r.output
    assert lines[0].startswith("error: ") and "fix:" in lines[0], lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def tta_model(tmp_path_factory, folder_dir):
    """A 1-epoch 2D folder model whose config asks for TTA at inference."""
    return train_tiny(
        "demo", folder_dir, tmp_path_factory.mktemp("ttamodel") / "run", "data.recipe=folder", "infer.tta=true"
    )


# ----------------------------------------------------------------------------
# 7, 9, 18: value ranges, in the config's own validation and for the flags that stand for a key
# ----------------------------------------------------------------------------

BAD_VALUES = [
    ("q7-threshold-5", "infer.threshold=5", "infer.threshold"),
    ("q7-threshold--1", "infer.threshold=-1", "infer.threshold"),
    ("q7-threshold-0", "infer.threshold=0", "infer.threshold"),
    ("q9-epochs--5", "train.epochs=-5", "train.epochs"),
    ("q9-epochs-0", "train.epochs=0", "train.epochs"),
    ("q18-batch-size-0", "train.batch_size=0", "train.batch_size"),
    ("q18-lr--0.1", "train.lr=-0.1", "train.lr"),
    ("q18-spatial-size-negative", "preprocess.spatial_size=[-48,64]", "preprocess.spatial_size"),
    ("q18-val-every-0", "train.val_every=0", "train.val_every"),
    ("q18-val-fraction-1", "data.split.val_fraction=1.0", "data.split.val_fraction"),
    ("q18-test-fraction-negative", "data.split.test_fraction=-0.1", "data.split.test_fraction"),
    ("q18-flip-prob-1.5", "augment.flip_prob=1.5", "augment.flip_prob"),
    ("q18-noise-prob-negative", "augment.noise_prob=-0.2", "augment.noise_prob"),
    ("q18-config-overlap-1", "infer.overlap=1.0", "infer.overlap"),
    ("q18-config-sw-batch-size-0", "infer.sw_batch_size=0", "infer.sw_batch_size"),
    ("q18-weight-decay-negative", "train.weight_decay=-1e-4", "train.weight_decay"),
    ("q18-spacing-0", "preprocess.spacing=[0,1,1]", "preprocess.spacing"),
    ("q18-patch-size-0", "train.patch_size=[0,64,64]", "train.patch_size"),
    ("q18-roi-size-negative", "infer.roi_size=[-64,64]", "infer.roi_size"),
    ("q18-labels-one", "data.labels=[background]", "data.labels"),
    ("q18-labels-repeated", "data.labels=[background,lesion,lesion]", "data.labels"),
    ("q18-channels-empty", "data.channels=[]", "data.channels"),
    ("q18-num-workers-negative", "train.num_workers=-1", "train.num_workers"),
    ("q18-model-channels-0", "model.channels=[0,8,16]", "model.channels"),
    ("q18-dropout-1", "model.dropout=1.0", "model.dropout"),
    ("q18-min-size-negative", "infer.min_size=-5", "infer.min_size"),
    ("q18-samples-per-volume-0", "train.samples_per_volume=0", "train.samples_per_volume"),
    ("q18-pos-fraction-2", "train.pos_fraction=2", "train.pos_fraction"),
    ("q18-spatial-dims-4", "data.spatial_dims=4", "data.spatial_dims"),
    ("q18-seed-negative", "train.seed=-1", "train.seed"),
    ("q18-spatial-size-3-values-in-2d", "preprocess.spatial_size=[48,64,8]", "needs 2 values"),
    ("q18-roi-size-3-values-in-2d", "infer.roi_size=[48,64,8]", "infer.roi_size"),
    ("q18-patch-size-3-values-in-2d", "train.patch_size=[48,64,8]", "needs 2 values"),
    ("q18-split-seed-negative", "data.split.seed=-3", "data.split.seed"),
    ("q18-fractions-sum-1", ["data.split.val_fraction=0.6", "data.split.test_fraction=0.4"], "nothing to train on"),
    ("q18-fold-outside", ["data.split.folds=5", "data.split.fold=5"], "data.split.fold"),
    ("q18-rot90-non-square-size", "augment.rot90_prob=0.5", "[128, 128]"),
    ("q18-rot90-non-square-patch", ["augment.rot90_prob=0.5", "train.patch_size=[64,96]"], "[96, 96]"),
]


@pytest.mark.parametrize("override, needle", [(o, n) for _, o, n in BAD_VALUES], ids=[i for i, _, _ in BAD_VALUES])
def test_config_validation_refuses_out_of_range_values(override, needle):
    overrides = override if isinstance(override, list) else [override]
    with pytest.raises(MedsegError, match="fix:") as err:
        load_config("demo", overrides)
    msg = str(err.value)  # a key set with --set is blamed on it; rules that tie two keys name the config file
    assert needle in msg and (msg.startswith(f"{needle} from --set: ") or "demo.yaml" in msg)


def test_shipped_configs_pass_validation():
    from medseg.config import validate_config

    names = sorted(p.stem for p in (Path(__file__).parents[2] / "configs").glob("*.yaml"))
    assert {"demo", "ph2", "lgg", "brats", "nuclei", "humanseg"} <= set(names)
    for name in names:
        validate_config(load_config(name))


def test_quarter_turns_of_non_square_images_pass_when_each_batch_holds_one():
    """One image per batch stacks whatever its shape, so only batches of several non-square images are refused."""
    cfg = load_config("demo", ["augment.rot90_prob=0.5", "train.batch_size=1"])
    assert cfg.augment.rot90_prob == 0.5 and cfg.preprocess.spatial_size == [96, 128]
    with pytest.raises(MedsegError, match="samples|swaps"):
        load_config("demo", ["augment.rot90_prob=0.5", "train.batch_size=1", "train.patch_size=[64,96]"])


TRAIN_BAD = [
    ("q9-train-epochs--5", ["--set", "train.epochs=-5"], "train.epochs"),
    ("q9-train-flag-epochs--1", ["--epochs", "-1"], "--epochs -1"),
    ("q18-train-flag-seed--1", ["--seed", "-1"], "train.seed -1"),
    ("q7-train-threshold-5", ["--set", "infer.threshold=5"], "infer.threshold"),
    ("q18-train-batch-size-0", ["--set", "train.batch_size=0"], "train.batch_size"),
    ("q18-train-lr--0.1", ["--set", "train.lr=-0.1"], "train.lr"),
    ("q18-train-spatial-size-negative", ["--set", "preprocess.spatial_size=[-48,64]"], "preprocess.spatial_size"),
]


@pytest.mark.parametrize("extra, needle", [(e, n) for _, e, n in TRAIN_BAD], ids=[i for i, _, _ in TRAIN_BAD])
def test_train_refuses_a_bad_config_before_making_the_run_folder(folder_dir, tmp_path, extra, needle, monkeypatch):
    from medseg.engine import loading

    def no_data_work(*a, **k):
        raise AssertionError("the data was read before the config was validated")

    monkeypatch.setattr(loading, "load_samples", no_data_work)
    r = run_cli(
        "train",
        "demo",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "run",
        "--quiet",
        "--set",
        "data.recipe=folder",
        *extra,
    )
    _one_line_error(r, needle)
    assert not (tmp_path / "run").exists()


def test_q18_binary_config_file_is_one_line(folder_dir, tmp_path):
    bad = tmp_path / "binary.yaml"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x81" * 8)
    r = run_cli("train", bad, "--data-dir", folder_dir, "--out", tmp_path / "run", "--quiet")
    _one_line_error(r, "binary.yaml", "not a text file")
    assert not (tmp_path / "run").exists()


FLAG_BAD = [
    ("q7-infer-threshold-5", ["infer", "x.png", "--threshold", "5"], "--threshold 5"),
    ("q7-infer-threshold--1", ["infer", "x.png", "--threshold", "-1"], "--threshold -1"),
    ("q7-infer-threshold-1", ["infer", "x.png", "--threshold", "1"], "--threshold 1"),
    ("q18-infer-overlap-1.5", ["infer", "x.png", "--overlap", "1.5"], "--overlap 1.5"),
    ("q18-infer-sw-batch-size-0", ["infer", "x.png", "--sw-batch-size", "0"], "--sw-batch-size 0"),
    ("q18-infer-min-size-negative", ["infer", "x.png", "--min-size", "-1"], "--min-size -1"),
    (
        "q7-evaluate-threshold-5",
        ["evaluate", "--model", "m.pt", "--data", "folder", "--out", "ev", "--threshold", "5"],
        "--threshold 5",
    ),
    (
        "q7-evaluate-threshold--1",
        ["evaluate", "--model", "m.pt", "--data", "folder", "--out", "ev", "--threshold", "-1"],
        "--threshold -1",
    ),
]


@pytest.mark.parametrize("args, needle", [(a, n) for _, a, n in FLAG_BAD], ids=[i for i, _, _ in FLAG_BAD])
def test_flags_that_stand_for_a_config_key_obey_its_range(tmp_path, args, needle):
    Path("x.png").write_bytes(b"")
    Path("m.pt").write_bytes(b"")
    r = run_cli(*args)
    _one_line_error(r, needle)
    assert not Path("ev").exists() and not Path("runs").exists()


# ----------------------------------------------------------------------------
# 11, 21: inputs that would segment the wrong thing
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "inputs", [[""], ["  "], ["x.png", ""]], ids=["q11-empty", "q11-blank", "q11-empty-among-others"]
)
def test_empty_input_is_refused(tmp_path, inputs):
    from medseg.data import synthetic

    synthetic.make_folder_2d(tmp_path / "below", n=2, size=(16, 16))  # what an empty INPUT would have segmented
    Path("x.png").write_bytes(b"")
    Path("m.pt").write_bytes(b"")
    r = run_cli("infer", *inputs, "-m", "m.pt", "--out", tmp_path / "out")
    _one_line_error(r, "INPUT is empty")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["scans", "--model", "fold0.pt", "fold1.pt", "fold2.pt"],
        [
            "scans",
            "--model",
            "runs/ph2-a/best.pt",
            "runs/ph2-b/best.pt",
        ],  # --model runs/ph2-*/best.pt, expanded by the shell
    ],
    ids=["q21-ensemble-readme", "q21-model-glob"],
)
def test_checkpoints_among_the_inputs_are_refused(tmp_path, args):
    Path("scans").mkdir()
    for a in args:
        if a.endswith(".pt"):
            Path(a).parent.mkdir(parents=True, exist_ok=True)
            Path(a).write_bytes(b"")
    r = run_cli("infer", *args, "--out", tmp_path / "out")
    line = _one_line_error(r, "is a checkpoint, not an image", "-m")
    assert args[3] in line
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------
# 24: every recipe has a config; --set is honoured
# ----------------------------------------------------------------------------


def test_q24_check_nifti_reads_nrrd_volumes_and_honours_set(tmp_path):
    from medseg.data import synthetic

    root = synthetic.make_nifti_folder(tmp_path / "nrrd", n=3, shape=(16, 16, 8), ext=".nrrd")
    r = run_cli("datasets", "check", "nifti", "--data-dir", root, "--json", "--set", "data.labels=[background,blob]")
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    assert report["problems"] == [] and report["n_cases"] == 3
    assert report["spatial_dims"] == 3 and report["image_sizes"] == {"16x16x8": 3}
    assert report["classes"] == ["background", "blob"]


def test_q24_check_folder_honours_set(folder_dir):
    r = run_cli(
        "datasets", "check", "folder", "--data-dir", folder_dir, "--json", "--set", "data.labels=[background,spot]"
    )
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["classes"] == ["background", "spot"]


def test_q24_a_recipe_without_a_config_file_is_built_from_its_defaults(tmp_path, monkeypatch):
    """A recipe registered without a YAML (a user's own) still loads, and its --set overrides apply."""
    from medseg.data import base

    monkeypatch.setitem(base._RECIPES, "myrecipe", base._RECIPES["folder"])
    cfg = load_config("myrecipe", ["data.labels=[background,cell]"])
    assert cfg.data.recipe == "myrecipe" and cfg.data.labels == ["background", "cell"]
    with pytest.raises(MedsegError, match="train.epochs"):
        load_config("myrecipe", ["train.epochs=-5"])


def test_q24_train_nifti_and_folder_by_recipe_name(nifti_dir, folder_dir, tmp_path):
    tiny = [
        "--set",
        "model.channels=[4,8]",
        "--set",
        "model.strides=[2]",
        "--set",
        "model.num_res_units=0",
        "--set",
        "train.max_steps_per_epoch=1",
        "--set",
        "data.split.val_fraction=0.25",
    ]
    r = run_cli(
        "train",
        "nifti",
        "--data-dir",
        nifti_dir,
        "--out",
        tmp_path / "n",
        "--epochs",
        "1",
        "--quiet",
        *tiny,
        "--set",
        "train.patch_size=[16,16,16]",
        "--set",
        "infer.roi_size=[16,16,16]",
        "--set",
        "preprocess.spacing=[2,2,2]",
        "--set",
        "train.batch_size=1",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "n" / "best.pt").is_file()
    r = run_cli(
        "train",
        "folder",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "f",
        "--epochs",
        "1",
        "--quiet",
        *tiny,
        "--set",
        "preprocess.spatial_size=[48,64]",
        "--set",
        "train.batch_size=4",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "f" / "best.pt").is_file()


# ----------------------------------------------------------------------------
# 26: CLI polish
# ----------------------------------------------------------------------------


def test_q26_version_flag():
    from medseg import __version__

    r = run_cli("--version")
    assert r.exit_code == 0 and r.output.strip() == __version__


@pytest.mark.parametrize("command", ["train", "demo", "infer", "evaluate", "report"])
def test_q26_flags_are_shown_as_flags_in_help(command):
    r = run_cli(command, "--help")
    assert r.exit_code == 0, r.output
    assert "<bool>" not in r.output and "--force" in r.output
    if command != "report":
        assert "--quiet" in r.output and "--device" in r.output
    if command in ("infer", "evaluate"):
        assert "--tta / --no-tta" in r.output


def test_q26_every_common_flag_has_help_text():
    import typer

    group = typer.main.get_command(app)
    missing = []
    for name in ("train", "demo", "infer", "evaluate", "report"):
        for param in group.commands[name].params:
            if set(param.opts) & {"--quiet", "--device", "--tta", "--force"} and not (param.help or "").strip():
                missing.append(f"{name} {param.opts[0]}")
    assert missing == []


def test_q26_did_you_mean_for_config_and_recipe_names(tmp_path):
    with pytest.raises(MedsegError, match="did you mean 'ph2'"):
        load_config("PH2")
    r = run_cli("train", "PH2", "--data-dir", tmp_path)
    _one_line_error(r, "did you mean 'ph2'")
    Path("m.pt").write_bytes(b"")
    r = run_cli("evaluate", "--model", "m.pt", "--data", "PH2", "--data-dir", tmp_path, "--out", tmp_path / "ev")
    _one_line_error(r, "--data 'PH2'", "did you mean 'ph2'")
    assert not (tmp_path / "ev").exists()


def test_q26_no_tta_turns_off_the_checkpoints_tta(tta_model, folder_dir, tmp_path):
    image = min((folder_dir / "images").iterdir())
    r = run_cli("infer", image, "-m", tta_model, "--out", tmp_path / "default", "--quiet")
    assert r.exit_code == 0, r.output
    assert json.loads(next((tmp_path / "default").glob("*_findings.json")).read_text())["tta"] is True
    r = run_cli("infer", image, "-m", tta_model, "--out", tmp_path / "off", "--quiet", "--no-tta")
    assert r.exit_code == 0, r.output
    assert json.loads(next((tmp_path / "off").glob("*_findings.json")).read_text())["tta"] is False


def test_q26_evaluate_report_and_report_write_where_out_says(tta_model, folder_dir, tmp_path):
    r = run_cli(
        "evaluate",
        "--model",
        tta_model,
        "--data",
        "folder",
        "--data-dir",
        folder_dir,
        "--out",
        tmp_path / "ev",
        "--quiet",
        "--report",
        "--no-tta",
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "cohort_report.pdf").is_file() and not Path("reports").exists()
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["tta"] is False
    r = run_cli("report", tmp_path / "ev", "--out", tmp_path / "pdfs")
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "pdfs").glob("*.pdf"))) == 1 and not Path("reports").exists()


def test_q26_failed_inputs_do_not_claim_others_were_written(tta_model, tmp_path):
    r = run_cli("infer", tmp_path / "missing.png", "-m", tta_model, "--out", tmp_path / "out", "--quiet")
    assert r.exit_code == 2
    assert "others were written" not in r.output and "nothing was written" in r.output


def test_a_bad_set_value_is_blamed_on_the_command_line():
    """x-set-blame: `--set train.epochs=-5` named the shipped configs/demo.yaml as the culprit."""
    with pytest.raises(MedsegError) as err:
        load_config("demo", ["train.epochs=-5"])
    assert str(err.value).startswith("train.epochs from --set: train.epochs -5 must be at least 1")


@pytest.mark.parametrize(
    "code, fix",
    [(28, "free disk space"), (30, "choose an --out on a writable disk"), (2, "check the path")],
    ids=["x-oserror-enospc", "x-oserror-erofs", "x-oserror-enoent"],
)
def test_an_unexplained_oserror_is_one_line_with_its_fix(code, fix, capsys):
    """x-oserror-net: a failed write the library did not explain (evaluate's or report's --out on a full or
    read-only disk) ends in one line naming the file, not a traceback."""
    import os

    import typer

    from medseg.cli import _run

    def write():
        raise OSError(code, os.strerror(code), "eval/metrics.csv")

    with pytest.raises(typer.Exit) as ex:
        _run(write)
    err = capsys.readouterr().err
    assert ex.value.exit_code == 2 and err.count("\n") == 1 and err.startswith("error: eval/metrics.csv: ")
    assert f"fix: {fix}" in err


def test_the_oserror_line_names_the_file_and_the_fix():
    import errno
    import os

    from medseg.cli import write_failure

    line = write_failure(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "eval/metrics.csv"))
    assert line.startswith("eval/metrics.csv: No space left on device; files medseg finished writing are complete")
    assert "fix: free disk space or choose an --out on another disk, then run the command again" in line
