"""Bad inputs and faults at inference: tampered checkpoints, link loops, the default model, unwritable outputs.

Each case names the row of the fault matrix it covers (q5 link loops, q6/q16 checkpoint validation, q17 --out and
disk faults, q21 a checkpoint given as an INPUT, q22 the default model, q26 the modality count)."""

import errno
import math
import os

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medseg.checkpoint import load_checkpoint, save_checkpoint
from medseg.config import load_config
from medseg.data import synthetic
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.inference.checkpoints import load_models
from medseg.inference.infer import infer
from medseg.models import build_model, model_spec

SMALL_2D = [
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "model.num_res_units=1",
    "preprocess.spatial_size=[48,64]",
    "train.batch_size=4",
    "train.val_every=1",
]


@pytest.fixture(scope="module")
def ckpt2d(tmp_path_factory):
    """A real 2D checkpoint: one epoch on a tiny synthetic folder set."""
    root = tmp_path_factory.mktemp("ck2")
    data = synthetic.make_folder_2d(root / "data", n=8, size=(48, 64))
    cfg = load_config("demo", ["data.recipe=folder", "train.epochs=1", *SMALL_2D])
    train(cfg, data, root / "run", progress=False)
    return root / "run" / "best.pt"


def _payload_3d(path, channels=("flair", "t1c"), labels=None):
    """A 3D checkpoint laid out as training writes it (untrained weights: these tests are about refusals)."""
    over = [
        "model.channels=[4,8]",
        "model.strides=[2]",
        "model.num_res_units=0",
        "train.patch_size=[16,16,16]",
        "infer.roi_size=[16,16,16]",
        f"data.channels=[{','.join(channels)}]",
        "preprocess.crop_foreground=false",
    ]
    if labels:
        over.append(f"data.labels=[{','.join(labels)}]")
    cfg = load_config("brats", over)
    spec = model_spec(cfg)
    torch.manual_seed(0)
    net = build_model(spec)
    d = cfg.to_dict()
    save_checkpoint(
        {
            "model": spec,
            "state_dict": net.state_dict(),
            "config": d,
            "labels": list(cfg.data.labels),
            "channels": list(cfg.data.channels),
            "preprocess": d["preprocess"],
            "infer": d["infer"],
            "intensity_stats": {},
            "roi_size": [16, 16, 16],
            "epoch": 3,
            "best_metric": 0.5,
            "best_epoch": 3,
            "val_metrics": {"val_mean_dice": 0.5},
            "split": {"train": [], "val": [], "test": []},
            "data": {"recipe": "brats", "data_dir": "x", "n_train": 1, "n_val": 1, "split_method": "random"},
        },
        path,
    )
    return path


def _tampered(src, dst, change):
    ck = load_checkpoint(src)
    change(ck)
    torch.save(ck, dst)
    return dst


def _set_twice(*paths: tuple[str, ...]):
    """A tamper that sets a value at each key path: where the checkpoint keeps it and in its config copy."""

    def setter(value):
        def change(ck):
            for *parents, last in paths:
                node = ck
                for key in parents:
                    node = node[key]
                node[last] = list(value)

        return change

    return setter


_set_labels = _set_twice(("labels",), ("config", "data", "labels"))
_set_channels = _set_twice(("channels",), ("config", "data", "channels"))
_set_spacing = _set_twice(("preprocess", "spacing"), ("config", "preprocess", "spacing"))


def _set_roi(roi, in_config=True):
    def change(ck):
        ck["roi_size"] = list(roi)  # what inference uses (the config's value is its fallback)
        if in_config:
            ck["config"]["infer"]["roi_size"] = list(roi)

    return change


def _nan_weight(ck):
    key = next(k for k, v in ck["state_dict"].items() if v.is_floating_point() and v.numel() > 1)
    ck["state_dict"][key].view(-1)[0] = math.nan


def _set_dims(ck):
    ck["config"]["data"]["spatial_dims"] = 3


TAMPERS = [
    pytest.param(
        "2d",
        _set_labels(["background", "a", "b"]),
        r"'labels'.*3 classes.*3 output channels.*has 1",
        id="q6-labels-2-to-3",
    ),
    pytest.param(
        "3d",
        _set_labels(["background", "tumour"]),
        r"'labels'.*2 classes.*1 output channel.*has 5",
        id="q6-labels-5-to-2-3d",
    ),
    pytest.param(
        "3d",
        _set_spacing([0, 0, 0]),
        r"'config.preprocess.spacing' \[0, 0, 0\] is not 3 positive",
        id="q6-spacing-zero",
    ),
    pytest.param(
        "3d",
        _set_spacing([-1, 1, 1]),
        r"'config.preprocess.spacing' \[-1, 1, 1\] is not 3 positive",
        id="q6-spacing-negative",
    ),
    pytest.param("2d", _nan_weight, r"'state_dict\.[^']+' holds 1 non-finite value", id="q6-nan-weight"),
    pytest.param("3d", _nan_weight, r"'state_dict\.[^']+' holds 1 non-finite value", id="q6-nan-weight-3d"),
    pytest.param("2d", _set_dims, r"'config.data.spatial_dims' is 3 but the network is 2D", id="q6-spatial-dims"),
    pytest.param(
        "2d", _set_channels(["grey"]), r"'config.data.channels' \['grey'\] gives 1 input.*takes 3", id="q16-channels"
    ),
    pytest.param(
        "3d",
        _set_channels(["flair"]),
        r"'config.data.channels' \['flair'\] gives 1 input.*takes 2",
        id="q16-channels-3d",
    ),
    pytest.param("2d", _set_roi([50, 66]), r"'roi_size' \[50, 66\] is not a multiple of 4", id="q16-roi-size"),
    pytest.param(
        "3d",
        _set_roi([16, 0, 16], in_config=False),
        r"key 'roi_size' \[16, 0, 16\] is not 3 positive",
        id="q16-roi-size-zero",
    ),
]


@pytest.mark.parametrize("kind,change,match", TAMPERS)
def test_tampered_checkpoint_is_refused_at_load(kind, change, match, ckpt2d, tmp_path):
    src = ckpt2d if kind == "2d" else _payload_3d(tmp_path / "src3d.pt", labels=None)
    bad = _tampered(src, tmp_path / "bad.pt", change)
    with pytest.raises(MedsegError, match=match) as err:
        load_models([bad], torch.device("cpu"))
    text = str(err.value)
    assert text.startswith(f"{bad}: checkpoint ") and "fix: re-train, or restore the file" in text
    assert "\n" not in text


def test_untampered_checkpoints_load(ckpt2d, tmp_path):
    """The checks refuse only what is wrong: a trained checkpoint and a well-formed 3D one both load."""
    two = load_models([ckpt2d], torch.device("cpu"))[0]
    three = load_models([_payload_3d(tmp_path / "ok3d.pt")], torch.device("cpu"))[0]
    assert (two.cfg.data.spatial_dims, three.cfg.data.spatial_dims) == (2, 3)


def test_evaluate_refuses_nan_weights(ckpt2d, tmp_path):
    from medseg.evaluation.evaluate import evaluate_model

    bad = _tampered(ckpt2d, tmp_path / "nan.pt", _nan_weight)
    data = synthetic.make_folder_2d(tmp_path / "data", n=4, size=(48, 64))
    with pytest.raises(MedsegError, match=r"nan.pt: checkpoint key 'state_dict\..*non-finite"):
        evaluate_model(bad, "folder", data, tmp_path / "ev", split="all", progress=False)
    assert not (tmp_path / "ev" / "predictions").exists() or not any((tmp_path / "ev" / "predictions").iterdir())


def test_nan_checkpoint_refused_by_infer_before_anything_is_written(ckpt2d, tmp_path):
    bad = _tampered(ckpt2d, tmp_path / "nan.pt", _nan_weight)
    Image.fromarray(np.full((48, 64), 120, np.uint8)).save(tmp_path / "a.png")
    with pytest.raises(MedsegError, match="nan.pt: checkpoint key 'state_dict"):
        infer([str(tmp_path / "a.png")], model=[str(bad)], out=tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------- q5: link loops


def _png(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(synthetic.lesion_2d(rng, 48, 64)[0]).save(path)
    return path


def test_q5_symlink_loop_segments_each_file_once(ckpt2d, tmp_path, log_lines):
    d = tmp_path / "scans"
    d.mkdir()
    _png(d / "loop.png")
    os.symlink(d, d / "loop_a")
    os.symlink(d, d / "loop_b")
    summary = infer([str(d)], model=[str(ckpt2d)], out=tmp_path / "o", progress=False)
    assert [o["case_id"] for o in summary.outputs] == ["loop"]
    warnings = [s for s in log_lines if s.startswith("warning:")]
    assert len(warnings) == 2, log_lines
    assert any(str(d / "loop_a") in w and "skipped" in w for w in warnings)


def test_q5_linked_file_and_linked_folder_once(ckpt2d, tmp_path, log_lines):
    d = tmp_path / "scans"
    (d / "sub").mkdir(parents=True)
    _png(d / "sub" / "x.png")
    os.symlink(d / "sub" / "x.png", d / "alias.png")
    os.symlink(d / "sub", d / "again")
    summary = infer([str(d)], model=[str(ckpt2d)], out=tmp_path / "o", progress=False)
    assert len(summary.outputs) == 1
    assert sum(s.startswith("warning:") for s in log_lines) == 2, log_lines


# ---------------------------------------------------------------------------- q21: a checkpoint as an INPUT


def test_q21_checkpoint_given_as_input_is_refused(ckpt2d, tmp_path):
    _png(tmp_path / "img.png")
    with pytest.raises(
        MedsegError,
        match=r"best.pt: is a checkpoint, not an image; fix: pass it with --model "
        r"\(once per model: -m a.pt -m b.pt\)",
    ):
        infer(
            [str(ckpt2d), str(tmp_path / "img.png")],
            model=[str(ckpt2d)],
            out=tmp_path / "o",
            progress=False,
        )
    assert not (tmp_path / "o" / "img_seg.png").exists()


# ---------------------------------------------------------------------------- q26: modality count


def _volume(path, channels=1, shape=(16, 16, 12)):
    rng = np.random.default_rng(0)
    arr = rng.normal(size=shape + ((channels,) if channels > 1 else ())).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.eye(4)), str(path))
    return path


def test_q26_modality_count_error_names_the_channels(tmp_path):
    model = _payload_3d(tmp_path / "m.pt", channels=("flair", "t1c"))
    _volume(tmp_path / "one.nii.gz")
    with pytest.raises(MedsegError, match=r"one.nii.gz: the model expects 2 modalities \(flair,t1c\), got 1; fix: "):
        infer([str(tmp_path / "one.nii.gz")], model=[str(model)], out=tmp_path / "o", progress=False)


# ---------------------------------------------------------------------------- q22: the default model


def _age(path, seconds_ago):
    t = path.stat().st_mtime - seconds_ago
    os.utime(path, (t, t))


def _runs(tmp_path, ckpt2d, with_1ch_3d=False):
    (tmp_path / "runs" / "ph2like").mkdir(parents=True)
    two = tmp_path / "runs" / "ph2like" / "best.pt"
    two.write_bytes(ckpt2d.read_bytes())
    _age(two, 300)
    if with_1ch_3d:
        one = _payload_3d(tmp_path / "runs" / "mono" / "best.pt", channels=("mr",), labels=["background", "lesion"])
        _age(one, 200)
    (tmp_path / "runs" / "brats").mkdir(parents=True)
    _payload_3d(tmp_path / "runs" / "brats" / "best.pt")  # the newest: 3D, two modalities
    return two


def test_q22_default_model_fits_a_2d_input(ckpt2d, tmp_path, log_lines):
    _runs(tmp_path, ckpt2d)
    _png(tmp_path / "img.png")
    summary = infer([str(tmp_path / "img.png")], out=tmp_path / "o", progress=False)
    assert summary.outputs[0]["models"][0]["path"].endswith("runs/ph2like/best.pt")
    said = log_lines[0]
    assert said.startswith("using runs/ph2like/best.pt (folder, 2D, 1 epoch, val Dice ")
    assert "runs/brats/best.pt (2D image" not in said and "runs/brats/best.pt" in said  # the newer one, skipped


def test_q22_default_model_fits_a_single_volume(ckpt2d, tmp_path, log_lines):
    _runs(tmp_path, ckpt2d, with_1ch_3d=True)
    _volume(tmp_path / "v.nii.gz")
    summary = infer([str(tmp_path / "v.nii.gz")], out=tmp_path / "o", progress=False)
    assert summary.outputs[0]["models"][0]["path"].endswith("runs/mono/best.pt")
    assert log_lines[0].startswith("using runs/mono/best.pt (brats, 3D, 3 epochs, val Dice 0.50)")


def test_q22_no_default_model_fits(ckpt2d, tmp_path):
    _runs(tmp_path, ckpt2d)
    _volume(tmp_path / "v.nii.gz")
    with pytest.raises(
        MedsegError,
        match=r"none of the 2 checkpoints under runs fits these inputs .*takes 2 "
        r"modalities \(flair,t1c\), v.nii.gz has 1.*fix: pass --model",
    ):
        infer([str(tmp_path / "v.nii.gz")], out=tmp_path / "o", progress=False)


# ---------------------------------------------------------------------------- q17: --out and write faults


def test_q17_out_is_an_existing_file(ckpt2d, tmp_path):
    _png(tmp_path / "img.png")
    (tmp_path / "out.txt").write_text("keep me")
    with pytest.raises(MedsegError, match=r"out.txt: exists and is a file, not a folder; fix: choose another --out"):
        infer([str(tmp_path / "img.png")], model=[str(ckpt2d)], out=tmp_path / "out.txt", progress=False)
    assert (tmp_path / "out.txt").read_text() == "keep me"


def test_q17_out_cannot_be_created(ckpt2d, tmp_path):
    _png(tmp_path / "img.png")
    (tmp_path / "f").write_text("")
    with pytest.raises(MedsegError, match=r"f/out: cannot be created \(Not a directory\); fix: choose an --out"):
        infer([str(tmp_path / "img.png")], model=[str(ckpt2d)], out=tmp_path / "f" / "out", progress=False)


def _leftovers(out):
    """The files of cases in ``out`` (the batch's own summary aside)."""
    return sorted(p.name for p in out.iterdir() if p.name != "infer_summary.json") if out.exists() else []


@pytest.mark.parametrize(
    "code,reason",
    [(errno.EROFS, "Read-only file system"), (errno.EACCES, "Permission denied")],
    ids=["q17-read-only-fs", "q17-read-only-folder"],
)
def test_q17_read_only_out(code, reason, ckpt2d, tmp_path, monkeypatch):
    import medseg.inference.outputs as mi

    def refuse(_arr, path):  # running as root, chmod cannot make a folder read-only: the OS's answer, simulated
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(mi, "write_image_2d", refuse)
    _png(tmp_path / "img.png")
    with pytest.raises(MedsegError, match=rf"img_seg.png: could not be written \({reason}\); stopped there: 0 of 1"):
        infer([str(tmp_path / "img.png")], model=[str(ckpt2d)], out=tmp_path / "o", progress=False)
    assert _leftovers(tmp_path / "o") == []


def test_q17_disk_full_mid_batch_keeps_finished_cases_and_leaves_no_half_case(ckpt2d, tmp_path, monkeypatch):
    import medseg.inference.outputs as mi

    real_atomic = mi.atomic_write

    def full_at_second_json(path, writer, suffix=None):
        if str(path).endswith("b_findings.json"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_atomic(path, writer, suffix=suffix)

    monkeypatch.setattr(mi, "atomic_write", full_at_second_json)
    for i, name in enumerate("abc"):
        _png(tmp_path / f"{name}.png", seed=i)
    with pytest.raises(MedsegError) as err:
        infer(
            [str(tmp_path / f"{n}.png") for n in "abc"],
            model=[str(ckpt2d)],
            out=tmp_path / "o",
            progress=False,
        )
    text = str(err.value)
    assert text.startswith(
        f"{tmp_path / 'o' / 'b_findings.json'}: could not be written (No space left on device); "
        "stopped there: 1 of 3 case(s)"
    )
    assert "fix: free disk space" in text
    assert _leftovers(tmp_path / "o") == ["a_findings.json", "a_seg.png"]  # b's mask removed, c never started


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_q17_really_read_only_out(ckpt2d, tmp_path):
    _png(tmp_path / "img.png")
    out = tmp_path / "ro"
    out.mkdir()
    out.chmod(0o555)
    try:
        with pytest.raises(MedsegError, match=r"img_seg.png: could not be written \(Permission denied\)"):
            infer([str(tmp_path / "img.png")], model=[str(ckpt2d)], out=out, progress=False)
        assert _leftovers(out) == []
    finally:
        out.chmod(0o755)


@pytest.mark.parametrize(
    "args,line",
    [
        (
            lambda ck, t: ["infer", str(ck), str(t / "img.png"), "-m", str(ck), "--out", str(t / "o")],
            "is a checkpoint, not an image; fix: pass it with --model",
        ),
        (
            lambda ck, t: ["infer", str(t / "img.png"), "-m", str(ck), "--out", str(t / "img.png")],
            "exists and is a file, not a folder; fix: choose another --out",
        ),
    ],
    ids=["q21-cli", "q17-cli-out-is-file"],
)
def test_cli_prints_one_line_and_exits_2(args, line, ckpt2d, tmp_path):
    from typer.testing import CliRunner

    from medseg.cli import app

    _png(tmp_path / "img.png")
    res = CliRunner().invoke(app, args(ckpt2d, tmp_path))
    assert res.exit_code == 2, res.output
    assert line in res.output and "Traceback" not in res.output
    assert len([s for s in res.output.splitlines() if s.startswith("error:")]) == 1


@pytest.mark.parametrize(
    "raw",
    [",", "flair.nii.gz,", ",t1c.nii.gz", "a.nii.gz, ,b.nii.gz"],
    ids=["x-comma-alone", "x-comma-trailing", "x-comma-leading", "x-comma-blank-middle"],
)
def test_multimodal_input_with_an_empty_part_is_one_line(raw):
    """`medseg infer "$FLAIR,$T1C"` with a variable unset: an IndexError before; now an error line naming it."""
    from medseg.inference.cases import expand_inputs

    cases, errors = expand_inputs([raw], load_config("brats"))
    assert cases == [] and len(errors) == 1 and "a file of this multi-modal case is empty" in errors[0]


def test_itk_write_failure_is_an_oserror_and_leaves_no_temp(tmp_path, monkeypatch):
    """x-itk-write-failure: SimpleITK reports a failed write (full disk) as RuntimeError; write_volume turns it into
    the OSError that infer's write-failure handling catches, and removes its temp file."""
    import SimpleITK as sitk

    from medseg.io import read_volume, write_volume

    src = tmp_path / "in.nrrd"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 5, 6), np.float32)), str(src))
    arr, geom = read_volume(src)

    def full_disk(*_a, **_k):
        raise RuntimeError("ITK ERROR: ImageFileWriter: could not write file")

    monkeypatch.setattr(sitk, "WriteImage", full_disk)
    with pytest.raises(OSError, match="ITK could not write it"):
        write_volume(arr, geom, tmp_path / "out" / "seg.nrrd")
    assert list((tmp_path / "out").iterdir()) == []
