"""SegNet: shapes in 2D and 3D, upsampling by the encoder's pooling indices, deep supervision, the checks made
without building, the registry, and a few training steps that learn a synthetic square."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from medseg import models
from medseg.config import load_config
from medseg.engine.checks import check_config
from medseg.errors import MedsegError
from medseg.models import segnet

KW = {"spatial_dims": 2, "in_channels": 1, "out_channels": 2, "channels": [4, 8, 16], "strides": [2, 2]}


pytestmark = pytest.mark.usefixtures("one_thread")


def _net(**over) -> nn.Module:
    torch.manual_seed(0)
    return segnet.build(**{**KW, **over})


@pytest.mark.parametrize(
    ("dims", "size"),
    [(2, (32, 24)), (2, (10, 14)), (3, (16, 8, 12))],  # 10x14: odd sides below the top, which unpooling restores
)
def test_the_output_has_the_input_size_in_2d_and_3d(dims, size):
    net = _net(spatial_dims=dims, in_channels=3, out_channels=2, norm="instance").eval()
    with torch.no_grad():
        y = net(torch.randn(2, 3, *size))
    assert y.shape == (2, 2, *size)
    assert sum(isinstance(m, (nn.MaxUnpool2d, nn.MaxUnpool3d)) for m in net.modules()) == 2


def test_the_decoder_unpools_to_where_the_encoder_found_each_maximum():
    net = _net(channels=[4, 8, 16, 16], strides=[2, 2, 2]).eval()
    seen = {}
    net.encoder[0].register_forward_hook(lambda m, i, o: seen.setdefault("top", o))
    net.decoder[0].register_forward_pre_hook(lambda m, i: seen.setdefault("unpooled", i[0]))  # what the top receives
    with torch.no_grad():
        net(torch.randn(1, 1, 32, 32))
    top, unpooled = seen["top"], seen["unpooled"]
    assert unpooled.shape == top.shape
    window_max = F.interpolate(F.max_pool2d(top, 2), scale_factor=2, mode="nearest")
    placed = unpooled != 0
    assert placed.float().mean() > 0.05  # the decoder hands something up
    assert not (placed & (top != window_max)).any()  # ... only at each 2x2 window's maximum
    per_window = F.avg_pool2d(placed.float(), 2) * 4
    assert per_window.max() == 1  # one value per window, not a copy into all four (as plain upsampling would)


def test_deep_supervision_returns_every_level_in_training_and_the_full_logits_in_evaluation():
    net = _net(channels=[4, 8, 16, 16], strides=[2, 2, 2], deep_supervision=2)
    x = torch.randn(2, 1, 32, 32)
    outs = net.train()(x)
    assert [tuple(o.shape) for o in outs] == [(2, 2, 32, 32), (2, 2, 16, 16), (2, 2, 8, 8)]
    with torch.no_grad():
        full = net.eval()(x)
    assert isinstance(full, torch.Tensor) and full.shape == (2, 2, 32, 32)
    assert isinstance(_net().train()(x), torch.Tensor)  # without it, a tensor in training too


def test_head_sets_the_width_of_the_top_decoder_block_and_dropout_follows_each_decoder_block():
    net = _net(head=6, dropout=0.2)
    assert net.out.in_channels == 6 and net.decoder[0][0][-1].conv.out_channels == 6
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 3
    assert _net().out.in_channels == 4 and not any(isinstance(m, nn.Dropout) for m in _net().modules())


@pytest.mark.parametrize(
    ("over", "error", "words"),
    [
        ({"strides": [2, 1]}, ValueError, "strides must all be 2; fix: use \\[2, 2\\]"),
        ({"norm": "nonesuch"}, ValueError, "(?i)unsupported option .nonesuch"),
        ({"num_res_units": 0}, ValueError, "at least one convolution"),
        ({"deep_supervision": 2}, ValueError, "between 1 and 1"),
        ({"head": -1}, ValueError, "positive width"),
        ({"kernel": 5}, TypeError, "kernel"),
        ({"strides": [2]}, MedsegError, "one entry fewer"),
    ],
)
def test_check_finds_what_build_would_refuse(over, error, words):
    kwargs = {**KW, **over}
    with pytest.raises(error, match=words):
        segnet.check(kwargs)
    with pytest.raises(error, match=words):
        segnet.build(**kwargs)


def test_check_accepts_what_build_takes():
    segnet.check({**KW, "num_res_units": 1, "norm": "instance", "head": True, "deep_supervision": 1})


def test_the_registry_builds_it_and_judges_a_config():
    net = models.build_model({"name": "segnet", "kwargs": {**KW, "norm": "instance"}})
    assert isinstance(net, segnet.SegNet)
    segnet_cfg = ["model.name=segnet", "model.channels=[8,16,32,64]", "model.strides=[2,2,2]"]
    check_config(load_config("demo", segnet_cfg))
    with pytest.raises(MedsegError, match="model 'segnet' cannot be built .*strides must all be 2"):
        check_config(load_config("demo", segnet_cfg[:2] + ["model.strides=[2,2,1]"]))


def test_a_few_adam_steps_learn_a_bright_square_on_noise():
    torch.manual_seed(0)
    x = torch.randn(4, 1, 32, 32) * 0.5
    y = torch.zeros(4, 1, 32, 32)
    for b, (r, c) in enumerate([(4, 6), (14, 3), (8, 18), (20, 20)]):
        y[b, :, r : r + 10, c : c + 10] = 1
    x = x + 2 * y
    net = _net(out_channels=1, channels=[8, 16, 32], num_res_units=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = F.binary_cross_entropy_with_logits(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0], losses
