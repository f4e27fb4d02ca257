"""Training runs under faults: --force, kills between writes, read-only and full disks, failed starts, stale temp
files, what TensorBoard and the logs show. Each case names its issue row (q2, q8, ...)."""

import csv
import errno
import io
import os
import re
import warnings

import numpy as np
import pytest
import torch

from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.engine.train import train
from medseg.errors import MedsegError
from tests.conftest import csv_rows


def _cfg(overrides, *more):
    """The tiny 2D run, one training step per epoch: these tests are about what lands on disk, not learning."""
    return load_config("demo", ["data.recipe=folder", *overrides, "train.max_steps_per_epoch=1", *more])


def _epochs(run) -> list[str]:
    return [r["epoch"] for r in _rows(run)]


def _rows(run) -> list[dict]:
    return csv_rows(run / "history.csv")


def _write_rows(run, rows: list[dict]) -> None:
    with open(run / "history.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


def _hidden(run) -> list[str]:
    return sorted(p.name for p in run.iterdir() if p.name.startswith("."))


def _disk_full_on(monkeypatch, name: str, epoch: int | None = None):
    """torch.save fails with ENOSPC while writing ``name`` (at ``epoch``), the way a full disk fails it."""
    real = torch.save

    def save(obj, f, *a, **k):
        target = os.path.basename(str(getattr(f, "name", f)))
        if target.startswith(f".{name}.") and (epoch is None or obj.get("epoch") == epoch):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save)


# ---------------------------------------------------------------------------------------------------------------
# q2: --force replaces only what medseg wrote
# ---------------------------------------------------------------------------------------------------------------


def test_force_keeps_user_files_in_tb(folder_dir, tmp_path, small_2d_overrides):
    """q2-force-keeps-tb-user-file"""
    cfg = _cfg(small_2d_overrides, "train.epochs=1")
    run = tmp_path / "r"
    train(cfg, folder_dir, run, progress=False)
    old_events = sorted(p.relative_to(run) for p in (run / "tb").rglob("events.out.tfevents.*"))
    assert old_events and any(p.parts[1] == "hparams" for p in old_events)
    (run / "tb" / "mine").mkdir()
    (run / "tb" / "mine" / "keep.txt").write_text("my notes")
    (run / "tb" / "notes.md").write_text("mine too")
    train(cfg, folder_dir, run, force=True, progress=False)
    assert (run / "tb" / "mine" / "keep.txt").read_text() == "my notes"
    assert (run / "tb" / "notes.md").read_text() == "mine too"
    new_events = sorted(p.relative_to(run) for p in (run / "tb").rglob("events.out.tfevents.*"))
    assert not set(old_events) & set(new_events)  # the earlier run's event files were replaced, not mixed in
    assert len(new_events) == len(old_events)


# ---------------------------------------------------------------------------------------------------------------
# q8: history.csv and last.pt agree after any kill
# ---------------------------------------------------------------------------------------------------------------


def test_history_ahead_of_checkpoint_is_cut_on_resume(folder_dir, tmp_path, small_2d_overrides):
    """q8-killed-after-history-write: history.csv has epoch 2, last.pt epoch 1."""
    run = tmp_path / "r"
    train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    rows = _rows(run)
    _write_rows(run, rows + [{**rows[-1], "epoch": "2", "train_loss": "0.123"}])
    res = train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, run, resume=True, progress=False)
    assert _epochs(run) == ["1", "2"]
    assert [int(r["epoch"]) for r in res.history] == [1, 2]
    assert _rows(run)[1]["train_loss"] != "0.123"  # the row of the epoch really trained, not the orphan


def test_history_behind_checkpoint_is_restored_on_resume(folder_dir, tmp_path, small_2d_overrides):
    """q8-killed-after-checkpoint-write: last.pt has epoch 2, history.csv only epoch 1."""
    run = tmp_path / "r"
    train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, run, progress=False)
    full = _rows(run)
    _write_rows(run, full[:1])
    train(_cfg(small_2d_overrides, "train.epochs=3"), folder_dir, run, resume=True, progress=False)
    rows = _rows(run)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert rows[1]["train_loss"] == full[1]["train_loss"]


def test_disk_full_on_last_checkpoint_then_resume(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q8-disk-full-resume and q17-disk-full-checkpoint: last.pt of epoch 2 cannot be written."""
    run = tmp_path / "r"
    cfg = _cfg(small_2d_overrides, "train.epochs=2")
    with monkeypatch.context() as m:
        _disk_full_on(m, "last.pt", epoch=2)
        with pytest.raises(MedsegError) as err:
            train(cfg, folder_dir, run, progress=False)
    msg = str(err.value)
    assert msg.startswith(f"{run / 'last.pt'}: could not write the checkpoint (No space left on device)")
    assert "the previous last.pt/best.pt are intact; fix: free disk space" in msg and msg.endswith("--resume")
    assert "\n" not in msg
    assert load_checkpoint(run / "last.pt")["epoch"] == 1
    assert not _hidden(run)  # the failed write's temp file is gone
    train(cfg, folder_dir, run, resume=True, progress=False)
    assert _epochs(run) == ["1", "2"]


# ---------------------------------------------------------------------------------------------------------------
# q17: an --out that cannot be written says so in one line
# ---------------------------------------------------------------------------------------------------------------


def test_out_is_an_existing_file(folder_dir, tmp_path, small_2d_overrides):
    """q17-out-is-a-file"""
    out = tmp_path / "run.txt"
    out.write_text("not a folder")
    with pytest.raises(MedsegError, match=r"run\.txt: is a file, not a run folder; fix: choose another --out"):
        train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, out, progress=False)
    assert out.read_text() == "not a folder"


def test_out_is_a_file_on_the_command_line(folder_dir, tmp_path):
    """q17-out-is-a-file-cli: one line, exit 2, no traceback."""
    from typer.testing import CliRunner

    from medseg.cli import app

    out = tmp_path / "run.txt"
    out.write_text("not a folder")
    r = CliRunner().invoke(
        app,
        [
            "train",
            "demo",
            "--data-dir",
            str(folder_dir),
            "--out",
            str(out),
            "--epochs",
            "1",
            "--set",
            "data.recipe=folder",
            "--quiet",
        ],
    )
    lines = [ln for ln in r.output.splitlines() if ln.startswith("error:")]
    assert r.exit_code == 2 and "Traceback" not in r.output
    expected = (
        f"error: {out}: is a file, not a run folder; fix: choose another --out (a new folder or an earlier run's)"
    )
    assert lines == [expected]


def test_out_in_read_only_folder(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q17-out-read-only-parent: creating the run folder is refused (what a read-only parent does)."""
    from pathlib import Path

    out = tmp_path / "ro" / "run"
    real = Path.mkdir

    def mkdir(self, *a, **k):
        if self == out:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    with pytest.raises(
        MedsegError,
        match=r"ro/run: cannot prepare the run folder \(Permission denied\); fix: choose an "
        r"--out in a folder you can write to",
    ):
        train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, out, progress=False)


def test_split_write_refused(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q17-out-read-only-split: the run folder exists but refuses writes (read-only mount, or chmod as non-root)."""
    run = tmp_path / "r"
    run.mkdir()
    real = io.open

    def deny(file, mode="r", *a, **k):
        if "split.json" in os.path.basename(str(file)) and ("w" in mode or "x" in mode):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(file))
        return real(file, mode, *a, **k)

    monkeypatch.setattr(io, "open", deny)
    with pytest.raises(
        MedsegError,
        match=r"split\.json: could not write the split \(Permission denied\); nothing was "
        r"trained yet; fix: free disk space \(or make .* writable\) and run again",
    ):
        train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    assert not list(run.iterdir())  # no half-written file, no temp file left


def test_failed_atomic_write_leaves_no_temp_and_keeps_its_error(tmp_path, monkeypatch):
    """q17-atomic-write-cleanup: the writer's error is the one raised, even when removing the temp file fails too."""
    from medseg.io import atomic_write

    def full(tmp):
        with open(tmp, "wb") as fh:
            fh.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    (tmp_path / "last.pt").write_bytes(b"previous")
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "last.pt", full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert (tmp_path / "last.pt").read_bytes() == b"previous"

    def refuse(_path):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

    monkeypatch.setattr(os, "unlink", refuse)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(tmp_path / "last.pt", full)
    assert (tmp_path / "last.pt").read_bytes() == b"previous"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores file permissions")
def test_read_only_run_folder_by_chmod(folder_dir, tmp_path, small_2d_overrides):
    """q17-out-read-only-chmod"""
    run = tmp_path / "r"
    run.mkdir()
    run.chmod(0o555)
    try:
        with pytest.raises(MedsegError, match=r"could not write .*Permission denied"):
            train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    finally:
        run.chmod(0o755)


def test_disk_full_on_first_checkpoint(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q17-disk-full-first-checkpoint: nothing to resume from yet, and the message says so."""
    run = tmp_path / "r"
    _disk_full_on(monkeypatch, "best.pt")
    with pytest.raises(MedsegError) as err:
        train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    assert re.fullmatch(
        r".*best\.pt: could not write the checkpoint \(No space left on device\); no checkpoint of "
        r"this run was saved yet; fix: free disk space \(or make .* writable\) and run again",
        str(err.value),
    )
    assert not _hidden(run)


def test_disk_full_on_history(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q17-disk-full-history: last.pt is written first, so the history can be rebuilt from it."""
    import builtins

    run = tmp_path / "r"
    real = builtins.open

    def full(file, mode="r", *a, **k):
        name = os.path.basename(str(file))
        if (name.startswith(".history.csv.") or name == "history.tmp") and "w" in mode:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(file, mode, *a, **k)

    cfg = _cfg(small_2d_overrides, "train.epochs=2")
    with monkeypatch.context() as m:
        m.setattr(builtins, "open", full)
        with pytest.raises(
            MedsegError,
            match=r"history\.csv: could not write the training history \(No space left on "
            r"device\); last\.pt holds this epoch .*; fix: free disk space and run "
            r"again with --resume",
        ):
            train(cfg, folder_dir, run, progress=False)
    assert not _hidden(run)
    train(cfg, folder_dir, run, resume=True, progress=False)
    assert _epochs(run) == ["1", "2"]


# ---------------------------------------------------------------------------------------------------------------
# q19: a failed start is reusable; stale temp files go; sane temp names
# ---------------------------------------------------------------------------------------------------------------


def test_failed_start_is_reusable_without_force(folder_dir, tmp_path, small_2d_overrides, monkeypatch):
    """q19-rerun-after-failed-start: config.yaml and split.json left behind, no checkpoint."""
    run = tmp_path / "r"
    cfg = _cfg(small_2d_overrides, "train.epochs=1")
    with monkeypatch.context() as m:
        _disk_full_on(m, "best.pt")
        with pytest.raises((MedsegError, OSError)):
            train(cfg, folder_dir, run, progress=False)
    assert (run / "config.yaml").is_file() and (run / "split.json").is_file() and not (run / "last.pt").exists()
    (run / "notes.txt").write_text("mine")
    res = train(cfg, folder_dir, run, progress=False)
    assert res.epochs_run == 1 and load_checkpoint(run / "last.pt")["epoch"] == 1
    assert (run / "notes.txt").read_text() == "mine"
    assert len(list((run / "tb").glob("events.out.tfevents.*"))) == 1  # the failed start's events file went


def test_stale_temp_files_are_cleaned_on_resume(folder_dir, tmp_path, small_2d_overrides):
    """q19-stale-temp-cleaned: a SIGKILL mid-write leaves .last.pt.<random>.tmp.tmp; only medseg's temps go."""
    run = tmp_path / "r"
    train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    stale = [".last.pt.k2j4_x9a.tmp.tmp", ".best.pt.abc123.tmp.pt", ".history.csv.q1w2e3.tmp.csv", "history.tmp"]
    mine = [".mine.abc.tmp", "notes.tmp", ".last.pt.keep", "last.pt.bak"]
    for name in stale + mine:
        (run / name).write_bytes(b"x")
    train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, run, resume=True, progress=False)
    left = {p.name for p in run.iterdir()}
    assert not set(stale) & left
    assert set(mine) <= left


def test_checkpoint_temp_name_has_one_tmp(tmp_path, monkeypatch):
    """q19-temp-name: .last.pt.<random>.tmp.pt, not .last.pt.<random>.tmp.tmp"""
    from medseg import checkpoint

    seen = []
    real = checkpoint.atomic_write

    def spy(path, writer, *a, **k):
        return real(path, lambda tmp: (seen.append(os.path.basename(tmp)), writer(tmp)), *a, **k)

    monkeypatch.setattr(checkpoint, "atomic_write", spy)
    checkpoint.save_checkpoint({"epoch": 1}, tmp_path / "last.pt")
    assert len(seen) == 1 and seen[0].startswith(".last.pt.")
    assert seen[0].count(".tmp") == 1 and seen[0].endswith(".tmp.pt")


# ---------------------------------------------------------------------------------------------------------------
# q25: TensorBoard shows every validation, legibly, with the loss and the whole-foreground Dice
# ---------------------------------------------------------------------------------------------------------------


def _events(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    return acc


@pytest.mark.parametrize(
    "epochs, val_every, image_every, n_images",
    [
        pytest.param(3, 1, None, 3, id="q25-overlay-every-validation"),
        pytest.param(6, 2, 2, 2, id="q25-overlay-every-2nd-validation"),
    ],
)
def test_overlay_logged_per_validation(
    folder_dir, tmp_path, small_2d_overrides, epochs, val_every, image_every, n_images
):
    more = [f"train.epochs={epochs}", f"train.val_every={val_every}"]
    more += [f"train.image_log_every={image_every}"] if image_every else []
    run = tmp_path / "r"
    res = train(_cfg(small_2d_overrides, *more), folder_dir, run, progress=False)
    n_val = sum("val_mean_dice" in r for r in res.history)
    assert n_val == epochs // val_every
    acc = _events(run)
    images = acc.Images("val/overlay")
    assert len(images) == n_images
    assert min(images[0].height, images[0].width) >= 256  # the 48x64 slices are scaled up to be legible
    assert len(acc.Scalars("val/loss")) == n_val
    assert all("val_loss" in r for r in res.history if "val_mean_dice" in r)
    assert "val_loss" not in load_checkpoint(run / "best.pt")["val_metrics"]  # reports list these as Dice


def test_panel_is_legible_and_has_a_legend():
    """q25-panel-size-legend"""
    from medseg.engine.tensorboard import panel as _panel
    from medseg.viz import FN_COLOUR, FP_COLOUR, GT_COLOUR, PRED_COLOUR

    gt = np.zeros((48, 64), np.uint8)
    gt[10:30, 10:30] = 1
    pred = np.roll(gt, 5, axis=1)
    panel = _panel(
        {"image": np.random.default_rng(0).random((3, 48, 64)).astype(np.float32), "label": gt, "pred": pred}
    )
    assert panel.dtype == np.uint8 and panel.shape[2] == 3
    assert panel.shape[1] >= 256 * 64 // 48 and panel.shape[0] > 256
    strip = panel[48 * 6 :]  # below the image, scaled by ceil(256 / 48) = 6
    assert 0 < strip.shape[0] < 64
    for colour in (GT_COLOUR, PRED_COLOUR, FP_COLOUR, FN_COLOUR):  # a swatch of each overlay colour
        assert (strip == np.array(colour, np.uint8)).all(axis=2).any(), colour
    assert (strip > 200).all(axis=2).sum() > 50  # light text on the dark strip


class _LabelAsLogits(torch.nn.Module):
    """Multi-class logits that put class ``c`` wherever the second image channel holds ``c``."""

    def __init__(self, k):
        super().__init__()
        self.k = k

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 1].long(), self.k).movedim(-1, 1).float() * 10


def test_whole_foreground_dice_merges_the_classes():
    """q25-dice-whole: classes swapped inside the right region: per-class Dice 0, whole-foreground Dice 1."""
    from medseg.engine.losses import build_loss
    from medseg.engine.validation import validate

    cfg = load_config("demo", ["preprocess.spatial_size=[8,8]", "data.labels=[background,a,b]"])
    gt = np.zeros((8, 8))
    gt[:4, :4], gt[4:, 4:] = 1, 2
    pred = np.where(gt == 1, 2, np.where(gt == 2, 1, 0))
    items = [
        {
            "image": torch.tensor(np.stack([np.zeros((8, 8)), pred]), dtype=torch.float32),
            "label": torch.tensor(gt[None], dtype=torch.float32),
        }
    ]
    v = validate(_LabelAsLogits(3), items, cfg, torch.device("cpu"), build_loss(cfg))
    assert list(v.dice) == [0.0, 0.0]
    assert v.dice_whole == 1.0
    assert v.loss is not None and v.loss > 0


def test_multiclass_run_logs_whole_dice(brats_dir, tmp_path):
    """q25-dice-whole-logged"""
    cfg = load_config(
        "brats",
        [
            "preprocess.spacing=[2,2,2]",
            "train.patch_size=[16,16,16]",
            "infer.roi_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.epochs=1",
            "train.batch_size=2",
        ],
    )
    res = train(cfg, brats_dir, tmp_path / "b", progress=False)
    assert float(res.history[-1]["val_loss"]) > 0
    acc = _events(tmp_path / "b")
    assert len(acc.Scalars("val/dice_whole")) == 1 and len(acc.Images("val/overlay")) == 1
    # TensorBoard's whole-foreground Dice is the one in the history, not another score logged under its name
    whole = float(res.history[-1]["val_dice_whole"])
    assert acc.Scalars("val/dice_whole")[0].value == pytest.approx(whole, abs=1e-5)


# ---------------------------------------------------------------------------------------------------------------
# q27: quiet logs when the output is not a terminal
# ---------------------------------------------------------------------------------------------------------------


def test_progress_is_plain_lines_off_a_terminal(monkeypatch):
    """q27-progress-helper"""
    from medseg.progress import progress_bar

    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    bar = progress_bar(500, "demo", enabled=True, unit="steps")
    for i in range(500):
        bar.set_postfix(loss=f"{1 / (i + 1):.3f}")
        bar.update(1)
    bar.close()
    lines = err.getvalue().splitlines()
    assert "\r" not in err.getvalue()
    assert len(lines) == 10 and lines[-1].startswith("demo: 500/500 steps (100%)") and "loss 0.002" in lines[-1]
    err.truncate(0)
    quiet = progress_bar(500, "demo", enabled=False)
    quiet.update(500)
    assert err.getvalue() == ""
    from tqdm.auto import tqdm

    monkeypatch.setattr("medseg.progress.is_terminal", lambda stream=None: True)
    bar = progress_bar(5, "demo", enabled=True)
    assert isinstance(bar, tqdm)  # on a terminal, the usual bar
    bar.close()


def test_training_log_off_a_terminal_has_no_bars(folder_dir, tmp_path, small_2d_overrides, capsys, log_lines):
    """q27-train-log-plain: no carriage-return redraws, no unnamed MONAI 'Loading dataset' bar."""
    train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, tmp_path / "r", progress=True)
    out = capsys.readouterr()
    assert "\r" not in out.err and "Loading dataset" not in out.err + out.out
    assert 0 < len(out.err.splitlines()) <= 12
    assert any(re.fullmatch(r"caching \d+ training and \d+ validation samples\.\.\.", x) for x in log_lines)


def test_3d_pipeline_raises_no_monai_future_warning():
    """q27-no-monai-futurewarning: MONAI's Orientationd 'labels' default-change warning on every 3D command."""
    from medseg.data.transforms import train_transforms, val_transforms

    cfg = load_config("brats", [])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val_transforms(cfg)
        train_transforms(cfg)
    future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
    assert not future, future


def test_a_users_config_in_the_run_folder_is_never_replaced(folder_dir, tmp_path, small_2d_overrides):
    """x-user-config-in-out: `medseg train myexp/config.yaml --out myexp` must not delete the user's own file."""
    from medseg.engine.train import prepare_run_dir

    run = tmp_path / "myexp"
    run.mkdir()
    (run / "config.yaml").write_text("# my experiment\nname: mine\n")
    for force in (False, True):
        with pytest.raises(MedsegError, match=r"config.yaml: has a run file's name but was not written by medseg"):
            prepare_run_dir(run, resume=False, force=force)
        assert (run / "config.yaml").read_text() == "# my experiment\nname: mine\n"
    train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, tmp_path / "ok", progress=False)
    prepare_run_dir(tmp_path / "ok", resume=False, force=True)  # medseg's own config.yaml is replaced with --force
    assert not (tmp_path / "ok" / "config.yaml").exists()


def test_best_without_last_points_at_force(folder_dir, tmp_path, small_2d_overrides):
    """x-best-without-last: a run stopped between its first best.pt and last.pt cannot be resumed; the rerun says
    so and names --force, instead of 'pass --resume' followed by 'drop --resume'."""
    run = tmp_path / "r"
    train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    (run / "last.pt").unlink()
    with pytest.raises(MedsegError, match=r"cannot be resumed .*but no last.pt.*fix: pass --force"):
        train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    res = train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, force=True, progress=False)
    assert res.epochs_run == 1


def test_unresized_2d_images_must_batch_or_the_line_names_the_sizes(folder_dir, tmp_path, small_2d_overrides):
    """q18: with neither preprocess.spatial_size nor train.patch_size, 2D images go into batches as they are. The
    folder's 48x64 images do, until a quarter turn could make some 64x48: that is refused before the first batch,
    naming the size and the two keys that fix it, and no checkpoint is written."""
    base = [*small_2d_overrides, "preprocess.spatial_size=null", "model.strides=[2,2]"]
    train(_cfg(base, "augment.rot90_prob=0", "train.epochs=1"), folder_dir, tmp_path / "ok", progress=False)
    assert (tmp_path / "ok" / "best.pt").is_file()
    with pytest.raises(MedsegError, match=r"are not square and augment.rot90_prob turns them: 48x64 \(") as err:
        train(_cfg(base, "augment.rot90_prob=0.5", "train.epochs=1"), folder_dir, tmp_path / "turned", progress=False)
    assert "fix: set preprocess.spatial_size" in str(err.value) and "train.patch_size" in str(err.value)
    assert not (tmp_path / "turned" / "best.pt").exists()
    one = _cfg(base, "augment.rot90_prob=1", "train.batch_size=1", "train.epochs=1")  # one image stacks as it is
    train(one, folder_dir, tmp_path / "one", progress=False)
    assert (tmp_path / "one" / "best.pt").is_file()
