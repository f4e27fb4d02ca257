"""The encoder families: ``encoder_unet`` and the FCNs on segmentation_models.pytorch encoders."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("segmentation_models_pytorch", exc_type=ImportError)

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.models import build_model, check_model_config, model_family, model_spec
from medseg.models.encoders import FCN
from tests.conftest import small_spec

pytestmark = pytest.mark.usefixtures("one_thread")


FAMILIES = [
    ("encoder_unet", {}),
    ("encoder_unet", {"encoder": "resnet18", "norm": "batch"}),
    ("encoder_unet", {"encoder": "mobilenet_v3", "dropout": 0.1}),
    ("fcn", {}),
    ("fcn16s", {"encoder": "mobilenet_v2"}),
    ("fcn32s", {"encoder": "efficientnet-b0"}),
]


@pytest.mark.parametrize("name,extra", FAMILIES)
def test_each_family_returns_logits_of_the_input_size(name, extra):
    s = small_spec(name, **extra)
    model_family(name).check(s["kwargs"])
    net = build_model(s).eval()
    with torch.no_grad():
        out = net(torch.randn(2, 3, 64, 96))
    assert out.shape == (2, 2, 64, 96)


def test_the_spec_names_the_default_encoder_so_a_checkpoint_rebuilds_it():
    cfg = load_config("ph2", ["model.name=encoder_unet", "preprocess.spatial_size=[64,64]"])
    assert model_spec(cfg)["kwargs"]["encoder"] == "efficientnet-lite0"
    cfg = load_config("ph2", ["model.name=fcn", "model.encoder=resnet34", "preprocess.spatial_size=[64,64]"])
    assert model_spec(cfg)["kwargs"]["encoder"] == "resnet34"


def test_encoder_unet_depth_and_widths_follow_model_channels():
    net = build_model(small_spec("encoder_unet", channels=[8, 16, 32, 64]))
    widths = [b.conv2[0].out_channels for b in net.decoder.blocks]
    assert widths == [64, 32, 16, 8]  # deepest first
    assert model_family("encoder_unet").stride({"channels": [8, 16, 32, 64]}) == 16


def test_deep_supervision_scores_the_decoder_levels_below_the_top_in_training_only():
    net = build_model(small_spec("encoder_unet", channels=[8, 16, 32, 64], deep_supervision=2))
    net.train()
    outs = net(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape[2:]) for o in outs] == [(64, 64), (32, 32), (16, 16)]
    net.eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)


def test_the_fcn_skip_scores_start_at_zero_so_training_starts_from_the_deepest_scores():
    import torch.nn.functional as F

    torch.manual_seed(0)
    fcn8 = build_model(small_spec("fcn", encoder="resnet18")).eval()
    x = torch.randn(1, 3, 64, 64)

    def deep_scores_only():
        feats = fcn8.encoder(x)
        s = fcn8.head(feats[-1])
        for f in (feats[-2], feats[-3]):
            s = F.interpolate(s, size=f.shape[2:], mode="bilinear", align_corners=False)
        return F.interpolate(s, size=x.shape[2:], mode="bilinear", align_corners=False)

    with torch.no_grad():
        assert torch.allclose(fcn8(x), deep_scores_only(), atol=1e-6)
        fcn8.skips[0].bias.fill_(1.0)  # a learnt skip changes the output
        assert not torch.allclose(fcn8(x), deep_scores_only(), atol=1e-3)
    fcn32 = build_model(small_spec("fcn32s", encoder="resnet18"))
    assert isinstance(fcn8, FCN) and len(fcn8.skips) == 2 and len(fcn32.skips) == 0


@pytest.mark.parametrize(
    "name,extra,words",
    [
        ("encoder_unet", {"spatial_dims": 3}, "2D"),
        ("fcn", {"spatial_dims": 3}, "2D"),
        ("encoder_unet", {"encoder": "resnet1234"}, "unknown encoder"),
        ("encoder_unet", {"channels": [8, 16]}, "3 to 5 levels"),
        ("encoder_unet", {"norm": "group"}, "decoder norm"),
        ("encoder_unet", {"deep_supervision": 3}, "deep_supervision"),
        ("fcn", {"deep_supervision": 1}, "no decoder levels"),
        ("encoder_unet", {"head_width": 3}, "head_width"),
    ],
)
def test_check_refuses_what_the_builder_cannot_make(name, extra, words):
    with pytest.raises((ValueError, TypeError), match=words):
        model_family(name).check(small_spec(name, **extra)["kwargs"])


def test_a_size_that_is_no_multiple_of_the_encoder_stride_is_refused_with_the_fix():
    cfg = load_config("ph2", ["model.name=fcn", "preprocess.spatial_size=[48,64]"])
    with pytest.raises(MedsegError, match=r"multiple of 32.*\[64, 64\]"):
        check_model_config(cfg)


@pytest.mark.parametrize("name,extra", FAMILIES)
def test_each_family_learns_a_bright_square(name, extra):
    """A few Adam steps on one synthetic problem: the loss must fall clearly (each network's gradients reach its
    weights)."""
    torch.manual_seed(0)
    x = torch.randn(4, 3, 64, 64) * 0.3
    y = torch.zeros(4, 1, 64, 64)
    for i in range(4):
        r, c = 8 + 8 * i, 40 - 6 * i
        x[i, :, r : r + 16, c : c + 16] += 2.0
        y[i, 0, r : r + 16, c : c + 16] = 1.0
    net = build_model(small_spec(name, **{**extra, "out_channels": 1}))
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert min(losses[-5:]) < 0.6 * losses[0]
