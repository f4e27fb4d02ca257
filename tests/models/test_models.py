"""The model registry: a new family registered from outside the package trains, saves and infers through the public
functions, and a config is judged by the family's stride and check without building a network."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from medseg import models
from medseg.config import load_config
from medseg.engine.checks import check_config
from medseg.errors import MedsegError
from tests.conftest import run_cli


class TinyFCN(nn.Module):
    """A fully convolutional network that downsamples once: convolution, strided convolution, transposed
    convolution back up, and a 1x1 convolution to the output channels."""

    def __init__(self, spatial_dims, in_channels, out_channels, channels, **_unused):
        super().__init__()
        conv, up = (nn.Conv2d, nn.ConvTranspose2d) if spatial_dims == 2 else (nn.Conv3d, nn.ConvTranspose3d)
        width = channels[0]
        self.body = nn.Sequential(
            conv(in_channels, width, 3, padding=1),
            nn.ReLU(),
            conv(width, width, 3, stride=2, padding=1),
            nn.ReLU(),
            up(width, width, 2, stride=2),
            nn.ReLU(),
            conv(width, out_channels, 1),
        )

    def forward(self, x):
        return self.body(x)


def check_tiny_fcn(kwargs: dict) -> None:
    if len(kwargs["channels"]) != 1:
        raise ValueError("tiny_fcn takes one width in model.channels")


TINY = ["model.name=tiny_fcn", "model.channels=[4]", "model.strides=[]", "preprocess.spatial_size=[48,64]"]


@pytest.fixture()
def tiny_fcn():
    family = models.register_model("tiny_fcn", TinyFCN, stride_fn=lambda kwargs: 2, check_fn=check_tiny_fcn)
    yield family
    models.unregister_model("tiny_fcn")
    assert "tiny_fcn" not in models.list_models()


def test_a_registered_family_is_judged_by_its_own_stride_and_check(tiny_fcn):
    assert "tiny_fcn" in models.list_models() and models.model_family("tiny_fcn") is tiny_fcn
    cfg = load_config("demo", TINY)
    check_config(cfg)
    assert models.size_divisor(models.model_spec(cfg)) == 2  # the family's, not the product of no strides (1)
    with pytest.raises(MedsegError, match=r"\[47, 64\] must be a multiple of 2 .*fix: use \[48, 64\]"):
        check_config(load_config("demo", TINY[:-1] + ["preprocess.spatial_size=[47,64]"]))
    with pytest.raises(MedsegError, match="model 'tiny_fcn' cannot be built .*tiny_fcn takes one width"):
        check_config(load_config("demo", TINY[:2] + ["model.channels=[4,8]", "model.strides=[2]"]))


def test_a_registered_family_trains_one_step_and_infers(tiny_fcn, folder_dir, tmp_path):
    from medseg.checkpoint import load_checkpoint
    from medseg.engine.train import train

    steps = ["data.recipe=folder", "train.epochs=1", "train.max_steps_per_epoch=1", "train.batch_size=2"]
    cfg = load_config("demo", TINY + steps)
    res = train(cfg, folder_dir, tmp_path / "run", progress=False)
    assert res.epochs_run == 1 and np.isfinite(res.history[0]["train_loss"]) and res.history[0]["train_loss"] > 0
    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["model"]["name"] == "tiny_fcn"
    net = models.build_model(ck["model"])
    assert isinstance(net, TinyFCN)
    net.load_state_dict(ck["state_dict"])  # the saved arguments rebuild the trained network
    image = min((folder_dir / "images").glob("*.png"))
    r = run_cli("infer", image, "-m", tmp_path / "run" / "last.pt", "--out", tmp_path / "inf", "--device", "cpu")
    assert r.exit_code == 0, r.output
    seg = np.asarray(Image.open(tmp_path / "inf" / f"{image.stem}_seg.png"))
    assert seg.shape == np.asarray(Image.open(image)).shape[:2]


def test_check_builds_no_network(monkeypatch):
    """The config check asks the family; a builder called during it would be a dry run."""

    def no_build(**kwargs):
        raise AssertionError("the config check built the network")

    monkeypatch.setitem(models.registry._FAMILIES, "unet", models.ModelFamily("unet", no_build))
    check_config(load_config("demo"))
    with pytest.raises(MedsegError, match="the config check built the network"):  # the real build calls it
        models.build_model(models.model_spec(load_config("demo")))


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.norm=foo"], "Unsupported option 'FOO'"),
        (["model.extra={foo: 1}"], "UNet.__init__() got an unexpected keyword argument 'foo'"),
        (["model.channels=[8]", "model.strides=[]"], "the length of `channels` should be no less than 2."),
        (["model.strides=[2,2]"], "model.strides must have one entry fewer than model.channels"),
        (["model.name=attention_unet", "model.strides=[2,2]"], "model.strides must have one entry fewer"),
        (["model.name=basicunet"], "Sequence must have length 6, got 4."),
        (["model.name=segresnet", "model.extra={bar: 2}"], "SegResNet.__init__() got an unexpected keyword"),
        (["model.head=4", "model.deep_supervision=3"], "deep_supervision must be between 1 and 2 for 4 levels"),
        (["model.name=nope"], "unknown model 'nope'; fix: set model.name to one of"),
    ],
)
def test_each_family_refuses_what_its_build_would(overrides, message):
    cfg = load_config("demo", overrides)
    with pytest.raises(MedsegError) as err:
        check_config(cfg)
    assert message in str(err.value)
    if "cannot be built" in str(err.value):  # the check found what the real build refuses, in the same words
        with pytest.raises(MedsegError) as built:
            models.build_model(models.model_spec(cfg))
        assert str(built.value) == str(err.value)


@pytest.mark.parametrize(
    "overrides",
    [
        [],
        ["model.head=true", "model.deep_supervision=2"],
        ["model.name=attention_unet"],
        ["model.name=basicunet", "model.channels=[8,16,32,64,128]", "model.strides=[2,2,2,2]"],
        ["model.name=segresnet"],
    ],
)
def test_what_each_family_checks_it_also_builds(overrides):
    cfg = load_config("demo", overrides)
    check_config(cfg)
    net = models.build_model(models.model_spec(cfg)).eval()
    assert net(torch.zeros(1, 3, 32, 32)).shape == (1, 1, 32, 32)
