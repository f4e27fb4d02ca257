import numpy as np
import pytest
import torch

from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.models import build_model
from tests.conftest import best_validation, csv_rows


def _cfg(overrides, *more):
    return load_config("demo", ["data.recipe=folder", *overrides, *more])


def test_train_2d_outputs(folder_dir, tmp_path, small_2d_overrides):
    res = train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for f in ("best.pt", "last.pt", "config.yaml", "split.json", "history.csv"):
        assert (run / f).is_file(), f
    assert list((run / "tb").glob("events.out.tfevents.*"))
    assert res.epochs_run == 2
    assert (res.best_epoch, res.best_metric) == pytest.approx(best_validation(res.history), abs=1e-5)
    ck = torch.load(run / "best.pt", map_location="cpu", weights_only=True)  # safe path works
    for key in ("model", "state_dict", "config", "labels", "channels", "roi_size", "split", "data", "medseg_version"):
        assert key in ck
    assert not {"preprocess", "infer", "intensity_stats"} & set(ck)  # never read: the config holds them
    assert ck["labels"] == ["background", "lesion"] and ck["channels"] == ["red", "green", "blue"]
    model = build_model(ck["model"])
    model.load_state_dict(ck["state_dict"])  # rebuilt from the file alone
    assert "optimizer" in load_checkpoint(run / "last.pt")
    rows = csv_rows(run / "history.csv")
    assert [r["epoch"] for r in rows] == ["1", "2"] and "val_dice_lesion" in rows[0]
    assert float(rows[0]["validation_seconds"]) > 0  # the validation pass is timed apart from the training epoch
    assert "validation_seconds" not in ck["val_metrics"]


def test_final_model_on_every_case_tracks_the_training_loss(folder_dir, tmp_path, small_2d_overrides, log_lines):
    # after cross-validation, the model to ship trains on every case: no validation split at all
    lines = log_lines
    res = train(
        _cfg(small_2d_overrides, "train.epochs=3", "data.split.val_fraction=0"),
        folder_dir,
        tmp_path / "run",
        progress=False,
    )
    import json

    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == [] and len(split["train"]) == len(list((folder_dir / "images").iterdir()))
    losses = [float(r["train_loss"]) for r in res.history]
    assert not any(k.startswith("val_") for r in res.history for k in r)
    assert res.best_epoch == 1 + int(np.argmin(losses)) and res.best_metric == pytest.approx(-min(losses), abs=1e-5)
    assert load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == res.best_epoch
    assert "no validation cases" in lines[0] and f"lowest training loss {min(losses):.4f}" in lines[-1]


def test_checkpoints_with_the_keys_older_versions_wrote_still_load_and_resume(folder_dir, tmp_path, small_2d_overrides):
    from medseg.checkpoint import save_checkpoint, validate_checkpoint

    run = tmp_path / "run"
    train(_cfg(small_2d_overrides, "train.epochs=1"), folder_dir, run, progress=False)
    old_keys = {
        "preprocess": {"spatial_size": [48, 64], "spacing": None},
        "infer": {"threshold": 0.5},
        "intensity_stats": {"mean": [0.5, 0.5, 0.5], "std": [0.2, 0.2, 0.2], "n_images": 3},
    }
    for name in ("best.pt", "last.pt"):
        ck = load_checkpoint(run / name)
        save_checkpoint({**{k: v for k, v in ck.items() if k != "format"}, **old_keys}, run / name)
    ck = load_checkpoint(run / "best.pt")
    assert ck["intensity_stats"]["n_images"] == 3
    cfg = validate_checkpoint(ck, run / "best.pt")
    assert cfg.data.labels == ["background", "lesion"]
    volume_patch = {**ck["config"], "train": {**ck["config"]["train"], "patch_size": [64, 64, 64]}}
    assert validate_checkpoint({**ck, "config": volume_patch}, run / "best.pt").train.patch_size is None
    build_model(ck["model"]).load_state_dict(ck["state_dict"])
    res = train(_cfg(small_2d_overrides, "train.epochs=2"), folder_dir, run, resume=True, progress=False)
    assert [r["epoch"] for r in res.history] == [1, 2]
    assert "preprocess" not in load_checkpoint(run / "last.pt")  # what the resumed run wrote is the new layout


def test_a_trainer_subclass_changes_how_the_best_epoch_is_picked(folder_dir, tmp_path, small_2d_overrides):
    from medseg.engine.trainer import Trainer

    class FirstEpochIsBest(Trainer):
        steps = 0

        def train_step(self, batch, epoch):
            self.steps += 1
            return super().train_step(batch, epoch)

        def validate(self, epoch, row):
            super().validate(epoch, row)  # the Dice still goes into the history
            return 1.0 - epoch

    cfg = _cfg(small_2d_overrides, "train.epochs=3", "train.val_every=1")
    trainer = FirstEpochIsBest(cfg, folder_dir, tmp_path / "run", device="cpu", progress=False)
    res = trainer.fit()
    assert res.best_epoch == 1 and load_checkpoint(tmp_path / "run" / "best.pt")["epoch"] == 1
    assert load_checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 3
    assert trainer.steps == 3 * trainer.steps_per_epoch > 0
    assert all("val_dice_lesion" in r for r in res.history)


def test_a_trainer_without_an_optimiser_step_saves_its_initial_weights(folder_dir, tmp_path, small_2d_overrides):
    from medseg.engine.trainer import Trainer

    class Frozen(Trainer):
        def train_step(self, batch, epoch):
            return 0.5

    cfg = _cfg(small_2d_overrides, "train.epochs=2")
    res = Frozen(cfg, folder_dir, tmp_path / "frozen", device="cpu", progress=False).fit()
    assert [r["train_loss"] for r in res.history] == [0.5, 0.5]
    fresh = Trainer(cfg, folder_dir, tmp_path / "fresh", device="cpu", progress=False)
    fresh.setup()  # the same seed builds the same network
    saved = load_checkpoint(tmp_path / "frozen" / "last.pt")["state_dict"]
    assert all(torch.equal(saved[k], v) for k, v in fresh.net.state_dict().items())
    trained = train(cfg, folder_dir, tmp_path / "trained", device="cpu", progress=False)
    assert trained.history[0]["train_loss"] != 0.5
    assert not torch.equal(_weights(tmp_path / "trained" / "last.pt")[next(iter(saved))], next(iter(saved.values())))


def _weights(path):
    return load_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("ema", [None, 0.9])
def test_resume_matches_uninterrupted_run(folder_dir, tmp_path, small_2d_overrides, ema):
    cfg = _cfg(small_2d_overrides, "train.epochs=3", f"train.ema={'null' if ema is None else ema}")
    train(cfg, folder_dir, tmp_path / "straight", progress=False)

    def kill_after_first_epoch(epoch, row):
        if epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, folder_dir, tmp_path / "split", progress=False, on_epoch_end=kill_after_first_epoch)
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 1
    train(cfg, folder_dir, tmp_path / "split", resume=True, progress=False)
    a, b = _weights(tmp_path / "straight" / "last.pt"), _weights(tmp_path / "split" / "last.pt")
    assert load_checkpoint(tmp_path / "split" / "last.pt")["epoch"] == 3
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in a)
    assert diff < 1e-5


def test_ema_weights_are_the_saved_model(folder_dir, tmp_path, small_2d_overrides):
    """Decay 0.5 over two steps: the first update copies w1, the second gives 0.5 * w1 + 0.5 * w2."""
    one_step = [*small_2d_overrides, "train.max_steps_per_epoch=1", "train.scheduler=constant"]
    train(_cfg(one_step, "train.epochs=1"), folder_dir, tmp_path / "plain", progress=False)
    train(_cfg(one_step, "train.epochs=2", "train.ema=0.5"), folder_dir, tmp_path / "ema", progress=False)
    w1 = _weights(tmp_path / "plain" / "last.pt")
    last = load_checkpoint(tmp_path / "ema" / "last.pt")
    w2, saved = last["train_state_dict"], last["state_dict"]
    assert last["ema_updates"] == 2
    assert any(not torch.equal(w1[k], w2[k]) for k in w1)  # the second step moved the weights
    for k in w1:
        assert torch.allclose(saved[k].float(), 0.5 * w1[k].float() + 0.5 * w2[k].float(), atol=1e-6), k
    best = load_checkpoint(tmp_path / "ema" / "best.pt")
    assert "train_state_dict" not in best and "optimizer" not in best
    build_model(best["model"]).load_state_dict(best["state_dict"])
    with pytest.raises(MedsegError, match="train.ema.*between 0 and 1"):
        train(_cfg(one_step, "train.ema=1.5"), folder_dir, tmp_path / "bad", progress=False)


def test_seed_changes_and_reproduces(folder_dir, tmp_path, small_2d_overrides):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train(
            _cfg(small_2d_overrides, "train.epochs=1", f"train.seed={seed}"),
            folder_dir,
            tmp_path / name,
            progress=False,
        )
    a, b, c = (_weights(tmp_path / n / "last.pt") for n in "abc")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_existing_run_needs_resume_or_force(folder_dir, tmp_path, small_2d_overrides):
    cfg = _cfg(small_2d_overrides, "train.epochs=1")
    train(cfg, folder_dir, tmp_path / "r", progress=False)
    (tmp_path / "r" / "notes.txt").write_text("mine")
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(MedsegError, match="already holds a run.*--resume.*--force"):
        train(cfg, folder_dir, tmp_path / "r", progress=False)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before
    train(cfg, folder_dir, tmp_path / "r", force=True, progress=False)
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"  # --force only replaces medseg's files


@pytest.mark.slow  # 60 epochs: about 150 CPU-seconds
def test_demo_model_learns(folder_dir, tmp_path):
    cfg = _cfg(["preprocess.spatial_size=[48,64]", "train.epochs=60", "train.batch_size=2", "train.val_every=60"])
    res = train(cfg, folder_dir, tmp_path / "learn", progress=False)
    assert res.best_metric > 0.8


def test_train_3d_multiclass(brats_dir, tmp_path):
    cfg = load_config(
        "brats",
        [
            "preprocess.spacing=[2,2,2]",
            "train.patch_size=[16,16,16]",
            "infer.roi_size=[16,16,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.epochs=2",
            "train.batch_size=2",
        ],
    )
    res = train(cfg, brats_dir, tmp_path / "b3", progress=False)
    ck = load_checkpoint(tmp_path / "b3" / "best.pt")
    assert ck["model"]["kwargs"]["out_channels"] == 5 and ck["model"]["kwargs"]["spatial_dims"] == 3
    assert ck["split"]["val"] == ["brats_2013_pat0004_1"]  # the validation/ folder
    assert len(res.history) == 2 and "val_dice_enhancing" in res.history[-1]


def test_bad_patch_size_says_the_fix(brats_dir, tmp_path):
    cfg = load_config("brats", ["train.patch_size=[20,20,20]"])
    with pytest.raises(MedsegError, match=r"multiple of 8.*\[24, 24, 24\]"):
        train(cfg, brats_dir, tmp_path / "x", progress=False)


def test_label_outside_classes_stops_training(tmp_path):
    import nibabel as nib

    from medseg.data import synthetic

    root = synthetic.make_brats(tmp_path / "bad", n_train=2, n_val=1, shape=(16, 16, 12))
    lab = next(root.glob("train/*/OTMultiClass.nii.gz"))
    img = nib.load(str(lab))
    arr = np.asarray(img.dataobj).copy()
    arr[0, 0, 0] = 9
    nib.save(nib.Nifti1Image(arr, img.affine), str(lab))
    cfg = load_config("brats", ["train.patch_size=[16,16,16]", "model.channels=[4,8,16]", "model.strides=[2,2]"])
    with pytest.raises(MedsegError, match=r"OTMultiClass.nii.gz: label values \[9\] are outside"):
        train(cfg, root, tmp_path / "r", progress=False)


def test_positive_weights_hand_case():
    from medseg.engine.loading import positive_weights

    w = positive_weights([True, False, False, False], 0.5)
    assert w == pytest.approx([0.5, 1 / 6, 1 / 6, 1 / 6])  # positives drawn half the time, 1 in 4 otherwise
    assert positive_weights([True, True], 0.5) is None and positive_weights([True, False], None) is None
    with pytest.raises(MedsegError, match="pos_slice_fraction"):
        positive_weights([True, False], 1.5)


def test_weighted_loader_draws_the_asked_share_of_positives():
    from medseg.engine.loading import make_loader, positive_weights

    flags = [i < 10 for i in range(100)]  # 10% positive
    ds = [{"image": torch.zeros(1, 2, 2), "label": torch.full((1, 2, 2), float(f))} for f in flags]
    loader = make_loader(ds, 10, 0, torch.Generator().manual_seed(0), positive_weights(flags, 0.6))
    drawn = [bool(b["label"][j].any()) for _ in range(5) for b in loader for j in range(len(b["label"]))]
    assert len(drawn) == 500
    assert 0.5 < np.mean(drawn) < 0.7


class _LabelAsLogits(torch.nn.Module):
    """Predicts whatever the second image channel says (positive = foreground)."""

    def forward(self, x):
        return x[:, 1:2]


def test_validation_pools_slices_per_volume():
    from medseg.engine.validation import validate

    cfg = load_config("demo", ["preprocess.spatial_size=[4,4]"])
    gt = [np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))]
    gt[1][:2, :2] = 1  # 4 true pixels in slice 1 of volume "a"
    pr = [np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 4))]
    pr[0][0, 0] = 1  # 1 false positive on an otherwise empty slice
    pr[1][:2, :2] = 1
    pr[2][3, 3] = 1  # volume "b": one false positive, no truth -> Dice 0
    items = [
        {
            "image": torch.tensor(np.stack([np.zeros((4, 4)), np.where(p > 0, 10.0, -10.0)]), dtype=torch.float32),
            "label": torch.tensor(g[None], dtype=torch.float32),
            "volume_id": v,
        }
        for p, g, v in zip(pr, gt, "aab")
    ]
    dice = validate(_LabelAsLogits(), items, cfg, torch.device("cpu")).dice
    # volume a: tp 4, pred 5, true 4 -> 8/9; volume b: 0; mean 4/9 (per slice it would be (0 + 1 + 0) / 3)
    assert dice[0] == pytest.approx((8 / 9 + 0) / 2)


def test_validation_batches_same_size_slices_without_changing_the_score():
    from medseg.engine.validation import validate

    rng = np.random.default_rng(0)
    items = []
    for k in range(7):  # 4x4 slices (one model call per 2 with batch_size 2) and an 8x8 one (sliding window)
        n = 8 if k == 3 else 4
        logit = np.where(rng.random((n, n)) > 0.6, 10.0, -10.0)
        gt = (rng.random((n, n)) > 0.5).astype(np.float32)
        items.append(
            {
                "image": torch.tensor(np.stack([np.zeros((n, n)), logit]), dtype=torch.float32),
                "label": torch.tensor(gt[None]),
                "volume_id": "ab"[k % 2],
            }
        )
    expect = []
    for v in "ab":
        tp = fp = fn = 0
        for it in items:
            if it["volume_id"] == v:
                p, g = it["image"][1].numpy() > 0, it["label"][0].numpy() > 0
                tp, fp, fn = tp + (p & g).sum(), fp + (p & ~g).sum(), fn + (~p & g).sum()
        expect.append(2 * tp / (2 * tp + fp + fn))
    for batch in (1, 2, 16):
        cfg = load_config("demo", ["preprocess.spatial_size=[4,4]", f"train.batch_size={batch}"])
        v = validate(_LabelAsLogits(), items, cfg, torch.device("cpu"))
        dice, example = v.dice, v.example
        assert dice[0] == pytest.approx(np.mean(expect))
        assert example["image"].shape == (2, 8, 8)  # the item with the most foreground is the 8x8 one


def test_one_window_inputs_skip_the_sliding_window_with_the_same_logits():
    from monai.inferers import sliding_window_inference

    from medseg.inference.predictor import predict_logits
    from medseg.models import build_model, model_spec

    cfg = load_config("demo", ["train.amp=false", "preprocess.spatial_size=[32,32]"])
    torch.manual_seed(0)
    net = build_model(model_spec(cfg)).eval()
    calls = []
    net.register_forward_hook(lambda _m, inp, _o: calls.append(tuple(inp[0].shape)))
    x = torch.randn(3, len(cfg.data.channels), 32, 32)
    with torch.no_grad():
        fast = predict_logits(net, x, cfg, torch.device("cpu"))
        assert calls == [(3, len(cfg.data.channels), 32, 32)]  # one call for the batch
        slow = sliding_window_inference(x, [32, 32], 1, net, mode="gaussian")
    assert torch.allclose(fast, slow, atol=1e-5)


def test_batch_dice_option_reaches_the_loss():
    from medseg.engine.losses import build_loss

    assert build_loss(load_config("demo", ["train.loss.batch_dice=true"])).dice.batch is True
    assert build_loss(load_config("demo")).dice.batch is False


def test_fn_weight_turns_the_dice_term_into_tversky():
    from medseg.engine.losses import build_loss

    gt = torch.zeros(1, 1, 4, 4)
    gt[0, 0, 0, :] = 1  # four foreground pixels
    under = torch.full((1, 1, 4, 4), -20.0)
    under[0, 0, 0, :2] = 20.0  # finds 2 of them: TP 2, FN 2
    under[0, 0, 3, 3] = 20.0  # and one false alarm: FP 1
    over = torch.full((1, 1, 4, 4), -20.0)
    over[0, 0, 0, :3] = 20.0  # TP 3, FN 1
    over[0, 0, 3, 2:] = 20.0  # FP 2
    dice = build_loss(load_config("demo", ["train.loss.ce_weight=0"]))
    tv = build_loss(load_config("demo", ["train.loss.ce_weight=0", "train.loss.fn_weight=0.7"]))
    # Dice: 1 - 2TP / (2TP + FP + FN); Tversky: 1 - TP / (TP + 0.3 FP + 0.7 FN)
    assert dice(under, gt).item() == pytest.approx(1 - 4 / 7, abs=1e-4)
    assert dice(over, gt).item() == pytest.approx(1 - 6 / 9, abs=1e-4)
    assert tv(under, gt).item() == pytest.approx(1 - 2 / 3.7, abs=1e-4)
    assert tv(over, gt).item() == pytest.approx(1 - 3 / 4.3, abs=1e-4)
    # the (B)CE half is MONAI's and unchanged
    both = build_loss(load_config("demo", ["train.loss.fn_weight=0.7"]))
    assert both(under, gt).item() > tv(under, gt).item()
    # multi-class: softmax Tversky over the foreground classes + CE, as for Dice
    mc = build_loss(load_config("demo", ["data.labels=[bg,a,b]", "train.loss.fn_weight=0.7"]))
    logits = torch.randn(2, 3, 8, 8, requires_grad=True)
    mc(logits, torch.randint(0, 3, (2, 1, 8, 8))).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(MedsegError, match="fn_weight"):
        build_loss(load_config("demo", ["train.loss.fn_weight=1.5"]))


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.loss.fn_weight=1.5", "fn_weight 1.5 must be between 0 and 1"),
        ("model.dropout_mode=spatial", "dropout_mode is 'spatial'"),
        ("model.deep_supervision=5", "deep_supervision must be between 1 and 2"),
        ("model.name=basicunet", "Sequence must have length 6"),
        ("train.optimizer=lion", "optimizer 'lion' is unknown"),
        ("train.scheduler=step", "scheduler 'step' is unknown"),
        ("train.ema=1.5", "ema 1.5 must be a decay"),
        ("train.pos_slice_fraction=0", "pos_slice_fraction 0.0 must be between 0 and 1"),
        ("augment.blur_sigma=[1.0,0.5]", r"augment.blur_sigma \[1.0, 0.5\] must be \[low, high\]"),
        ("augment.lowres_zoom=[0.5,2]", r"augment.lowres_zoom .* <= 1"),
    ],
)
def test_bad_setting_fails_before_any_data_work(tmp_path, override, message):
    # the data folder does not exist: the config error must come first, and the run folder is not even created
    with pytest.raises(MedsegError, match=message):
        train(load_config("demo", [override]), tmp_path / "no-data", tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


def test_config_check_builds_nothing_real_and_draws_no_random_numbers():
    from medseg.engine.checks import check_config

    torch.manual_seed(3)
    state = torch.get_rng_state().clone()
    check_config(load_config("lgg"))  # asks the model registry; builds nothing
    assert torch.equal(state, torch.get_rng_state())


def test_unet_head_keeps_feature_maps_at_the_top():
    from medseg.models import model_spec

    plain = build_model(model_spec(load_config("demo", ["model.channels=[8,16,32]", "model.strides=[2,2]"])))
    cfg = load_config("demo", ["model.channels=[8,16,32]", "model.strides=[2,2]", "model.head=true"])
    spec = model_spec(cfg)
    assert spec["kwargs"]["head"] is True
    net = build_model(spec)
    last = list(net.modules())[-1]
    assert isinstance(last, torch.nn.Conv2d) and (last.in_channels, last.out_channels, last.kernel_size) == (
        8,
        1,
        (1, 1),
    )
    plain_last = [m for m in plain.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert plain_last.in_channels == 1  # MONAI's UNet: a one-channel top block for a binary task
    x = torch.randn(2, 3, 32, 32)
    assert net(x).shape == (2, 1, 32, 32)
    assert "head" not in model_spec(load_config("demo"))["kwargs"]  # older checkpoints' specs still rebuild


def test_unet_head_width_can_be_set_apart_from_the_first_level():
    from medseg.errors import MedsegError
    from medseg.models import model_spec

    cfg = load_config("demo", ["model.channels=[8,16,32]", "model.strides=[2,2]", "model.head=4"])
    assert cfg.model.head == 4 and model_spec(cfg)["kwargs"]["head"] == 4
    net = build_model(model_spec(cfg))
    last = list(net.modules())[-1]
    assert (last.in_channels, last.out_channels) == (4, 1)
    assert net(torch.randn(1, 3, 32, 32)).shape == (1, 1, 32, 32)
    assert load_config("demo", ["model.head=false"]).model.head is False
    with pytest.raises(MedsegError, match="'model.head' = 'wide' is not a valid bool or int"):
        load_config("demo", ["model.head=wide"])


@pytest.mark.parametrize("dims", [2, 3])
def test_channel_dropout_zeroes_whole_feature_maps(dims):
    from medseg.errors import MedsegError
    from medseg.models import model_spec

    base = ["model.channels=[8,16,32]", "model.strides=[2,2]", "model.dropout=0.5"] + (
        ["data.spatial_dims=3"] if dims == 3 else []
    )
    element = build_model(model_spec(load_config("demo", base)))
    spec = model_spec(load_config("demo", base + ["model.dropout_mode=channel"]))
    assert (
        spec["kwargs"]["dropout_mode"] == "channel"
        and "dropout_mode" not in model_spec(load_config("demo", base))["kwargs"]
    )
    net = build_model(spec)
    kind = torch.nn.Dropout2d if dims == 2 else torch.nn.Dropout3d
    swapped = [m for m in net.modules() if isinstance(m, kind)]
    assert len(swapped) == sum(type(m) is torch.nn.Dropout for m in element.modules()) > 0
    assert not any(type(m) is torch.nn.Dropout for m in net.modules()) and all(m.p == 0.5 for m in swapped)
    torch.manual_seed(0)
    out = swapped[0].train()(torch.ones((4, 16) + (6,) * dims))
    per_map = out.flatten(2)
    assert ((per_map == 0).all(-1) | (per_map == 2.0).all(-1)).all()  # each map kept (scaled 1/(1-p)) or dropped whole
    assert 0 < (per_map[..., 0] == 0).float().mean() < 1
    x = torch.randn((1, 3) + (16,) * dims)
    net.eval()
    assert torch.equal(net(x), net(x))  # no dropout at inference
    element.load_state_dict(net.state_dict())  # same parameters: checkpoints move between the two modes
    with pytest.raises(MedsegError, match="dropout_mode is 'pixel'"):
        build_model({**spec, "kwargs": {**spec["kwargs"], "dropout_mode": "pixel"}})


def test_deep_supervision_outputs_and_loss():
    """Training mode returns the full-resolution logits plus one per supervised decoder level (1/2, 1/4); evaluation
    mode returns the full-resolution logits alone."""
    from monai.losses import DeepSupervisionLoss

    from medseg.engine.losses import build_loss
    from medseg.models import model_spec

    cfg = load_config(
        "demo",
        [
            "model.channels=[8,16,32,64]",
            "model.strides=[2,2,2]",
            "model.head=4",
            "model.deep_supervision=2",
            "model.norm=batch",
        ],
    )
    spec = model_spec(cfg)
    assert (
        spec["kwargs"]["deep_supervision"] == 2 and "deep_supervision" not in model_spec(load_config("demo"))["kwargs"]
    )
    assert isinstance(build_loss(cfg), DeepSupervisionLoss) and not isinstance(
        build_loss(load_config("demo")), DeepSupervisionLoss
    )
    net = build_model(spec)
    x = torch.randn(2, 3, 32, 48)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 1, 32, 48), (2, 1, 16, 24), (2, 1, 8, 12)]
    assert [h.in_channels for h in net.heads] == [8, 16]  # decoder widths one and two levels below the top
    ev = net.eval()(x)
    assert torch.is_tensor(ev) and ev.shape == (2, 1, 32, 48)
    assert all(t.kept is None for t in net.taps)  # nothing is kept outside training
    # the loss: exp weights 1, 0.5, 0.25 over the three outputs, labels nearest-downsampled (worked by hand: a
    # constant loss of 1 per output gives 1.75)
    y = (torch.rand(2, 1, 32, 48) > 0.5).float()
    base = lambda o, t: (o * 0 + 1).mean() + 0 * t.mean()
    assert DeepSupervisionLoss(base, weight_mode="exp")(outs, y).item() == pytest.approx(1.75)
    loss = DeepSupervisionLoss(torch.nn.BCEWithLogitsLoss(), weight_mode="exp")(outs, y)
    loss.backward()
    assert all(h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in net.heads)
    with pytest.raises(MedsegError, match="deep_supervision must be between 1 and 2"):
        build_model(
            model_spec(
                load_config(
                    "demo", ["model.channels=[8,16,32,64]", "model.strides=[2,2,2]", "model.deep_supervision=3"]
                )
            )
        )


def test_deep_supervision_trains_and_infers(folder_dir, tmp_path, small_2d_overrides):
    """A deeply supervised run trains with EMA (a copy of the network with its own taps), saves, and its checkpoint
    rebuilds a network whose evaluation output is one tensor."""
    res = train(
        _cfg(small_2d_overrides, "train.epochs=2", "model.deep_supervision=1", "train.ema=0.9"),
        folder_dir,
        tmp_path / "run",
        progress=False,
    )
    assert res.epochs_run == 2
    assert (res.best_epoch, res.best_metric) == pytest.approx(best_validation(res.history), abs=1e-5)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["model"]["kwargs"]["deep_supervision"] == 1
    net = build_model(ck["model"])
    net.load_state_dict(ck["state_dict"])
    assert any(k.startswith("heads.0.") for k in ck["state_dict"])
    out = net.eval()(torch.randn(1, 3, 32, 32))
    assert torch.is_tensor(out) and out.shape == (1, 1, 32, 32)


def test_amp_dtype_per_device(monkeypatch):
    import medseg.runtime as R

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert R.amp_dtype(cuda) == torch.float16 and R.amp_dtype(cuda, enabled=False) is None
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    assert R.amp_dtype(cpu) == torch.bfloat16 and R.amp_dtype(cpu, enabled=False) is None
    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: False)  # emulated bfloat16 is >10x slower: stay in float32
    assert R.amp_dtype(cpu) is None
    assert R.amp_dtype(torch.device("mps")) is None


def test_threads_follow_omp_num_threads_then_the_cpus_the_process_is_pinned_to(monkeypatch):
    import medseg.runtime as R
    from medseg.parallel import rank_threads

    monkeypatch.setattr(R.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert R.usable_cpus() == 6 and rank_threads(4) == 1 and rank_threads(2) == 3
    # torchrun sets OMP_NUM_THREADS=1 for each rank: it is already one process's count, never divided again,
    # and it does not shrink the cores the cache loader's threads may use
    monkeypatch.setenv("OMP_NUM_THREADS", "5")
    assert R.usable_cpus() == 6 and rank_threads(2) == 5 and rank_threads(1) == 5
    monkeypatch.setenv("OMP_NUM_THREADS", "junk")  # not a count: ignored, as OpenMP ignores it
    assert R.asked_threads() is None and rank_threads(2) == 3
    before = torch.get_num_threads()
    try:
        R.configure_cpu_threads(num_workers=2)
        assert torch.get_num_threads() == 4
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        R.configure_cpu_threads(num_workers=2)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("amp", [True, False])
def test_cpu_bfloat16_training(folder_dir, tmp_path, small_2d_overrides, monkeypatch, amp, log_lines):
    """With native bfloat16 (forced here, so the test runs on any CPU) the network computes in bfloat16, the loss and
    the saved weights stay float32; train.amp=false keeps everything in float32."""
    import medseg.engine.trainer as T
    import medseg.runtime as R

    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    seen, original = [], T.build_model

    def recording_model(spec):
        net = original(spec)
        net.register_forward_hook(
            lambda m, i, o: seen.append((o[0] if isinstance(o, list) else o).dtype) if m.training else None
        )
        return net

    monkeypatch.setattr(T, "build_model", recording_model)
    res = train(
        _cfg(small_2d_overrides, "train.epochs=2", f"train.amp={str(amp).lower()}"),
        folder_dir,
        tmp_path / "run",
        progress=False,
    )
    assert seen and set(seen) == {torch.bfloat16 if amp else torch.float32}
    assert any("mixed precision: bfloat16 on cpu" in m for m in log_lines) == amp
    assert np.isfinite(res.history[-1]["train_loss"])
    assert (res.best_epoch, res.best_metric) == pytest.approx(best_validation(res.history), abs=1e-5)
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert all(v.dtype == torch.float32 for v in ck["state_dict"].values() if v.is_floating_point())


def test_cpu_bfloat16_inference_tracks_float32(monkeypatch):
    """Sliding-window logits in bfloat16 autocast stay close to float32 ones (and differ, so the path really ran);
    a checkpoint config with train.amp=false is inferred in float32."""
    import medseg.inference.predictor as P
    import medseg.runtime as R
    from medseg.models import model_spec

    monkeypatch.setattr(R, "cpu_has_native_bf16", lambda: True)
    cfg = load_config("demo", ["model.channels=[4,8,16]", "model.strides=[2,2]", "preprocess.spatial_size=[32,32]"])
    torch.manual_seed(0)
    net = build_model(model_spec(cfg)).eval()
    x, cpu = torch.randn(1, 3, 40, 48), torch.device("cpu")
    a = P.predict_logits(net, x, cfg, cpu, roi=[32, 32])
    b = P.predict_logits(net, x, cfg, cpu, roi=[32, 32], amp=False)
    assert a.dtype == b.dtype == torch.float32 and a.shape == b.shape == (1, 1, 40, 48)
    assert not torch.equal(a, b)
    assert (a - b).abs().max().item() < 0.05 * max(1.0, b.abs().max().item())
    off = load_config("demo", ["model.channels=[4,8,16]", "model.strides=[2,2]", "train.amp=false"])
    assert torch.equal(P.predict_logits(net, x, off, cpu, roi=[32, 32]), b)


def test_config_check_builds_no_model_so_one_needing_real_values_passes_it(monkeypatch):
    from medseg import models
    from medseg.engine.checks import check_config

    def value_dependent(spatial_dims, in_channels, out_channels, channels, strides, **kw):
        scale = torch.ones(1).item()  # needs real values: fails on the meta device
        return torch.nn.Conv2d(in_channels, out_channels, 1, bias=scale > 0)

    family = models.ModelFamily("value_dependent", value_dependent)
    monkeypatch.setitem(models.registry._FAMILIES, "value_dependent", family)
    cfg = load_config("demo", ["model.name=value_dependent"])
    with pytest.raises(RuntimeError), torch.device("meta"):
        models.build_model(models.model_spec(cfg))
    check_config(cfg)  # no error: the real build after the data work judges this model
    assert isinstance(models.build_model(models.model_spec(cfg)), torch.nn.Conv2d)
