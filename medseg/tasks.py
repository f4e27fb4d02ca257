"""Tasks: what differs between kinds of segmentation, behind one interface.

A :class:`Task` says how a network's logits become probabilities, which loss trains it, how probabilities (or
logits) become a label map, and how validation scores a label map against the ground truth. Training, validation
and inference ask ``task_for(cfg)`` and never branch on the kind of task themselves.

- :class:`BinaryTask` (two labels): one sigmoid output channel, Dice + BCE, foreground where the probability is
  above ``infer.threshold``.
- :class:`MulticlassTask` (three or more labels): one softmax channel per class, Dice + cross-entropy, the most
  probable class wins; validation also scores all foreground classes as one region (BraTS' "whole tumour").
- :class:`InstanceTask` (``data.task: instances``): labels are instance maps (0 background, 1..N one value per
  object); the network learns background, object interior and object boundary, and a seeded watershed turns its
  probabilities into objects again.

A new kind of task is a subclass here plus an entry in :data:`TASKS` and in :func:`task_name`.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medseg.config import Config
from medseg.errors import MedsegError


def dice_from_counts(tp: float, fp: float, fn: float) -> float:
    """Dice from voxel counts (also counts pooled over slices); 1.0 when prediction and truth are both empty.

    Validation and evaluation both score with it, so a validation Dice and an evaluated Dice follow one rule; it
    lives here, the lower of the two layers."""
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def overlap_counts(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """True-positive, false-positive and false-negative voxel counts of two boolean masks, as float64."""
    tp = int(np.count_nonzero(pred & gt))
    return np.array([tp, int(np.count_nonzero(pred)) - tp, int(np.count_nonzero(gt)) - tp], dtype=np.float64)


class Task:
    """One kind of segmentation task, bound to its config (labels, threshold, loss settings)."""

    name = ""
    voxelwise_labels = True  # probabilities_to_labels looks at each voxel alone (so it can run slab by slab)

    def __init__(self, cfg: Config):
        self.cfg = cfg

    @property
    def out_channels(self) -> int:
        """Output channels of the network."""
        raise NotImplementedError

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, K, ...)`` logits -> ``(B, K, ...)`` probabilities."""
        raise NotImplementedError

    def loss(self) -> nn.Module:
        """The training loss: takes ``logits (B, K, ...)`` and ``label (B, 1, ...)`` class indices."""
        raise NotImplementedError

    def logits_to_labels(self, logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        """``(B, K, ...)`` logits -> ``(B, 1, ...)`` uint8 class map (validation)."""
        raise NotImplementedError

    def probabilities_to_labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """``(K, ...)`` probabilities of one case -> ``(...)`` uint8 class map (inference)."""
        raise NotImplementedError

    def background_probabilities(self, shape, dtype=torch.float32) -> torch.Tensor:
        """``(K, *spatial)`` probabilities of a region with nothing in it (what lies outside a crop)."""
        raise NotImplementedError

    def class_counts(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """``(K-1, 3)`` true-positive, false-positive and false-negative counts per foreground class."""
        return np.array([overlap_counts(pred == c, gt == c) for c in range(1, self.cfg.num_classes)])

    def whole_counts(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray | None:
        """Counts of all foreground classes as one region, or None where :meth:`class_counts` already holds them."""
        return None

    def clean(self, labels: np.ndarray, spacing, keep_largest: bool, min_size: float, fill_holes: bool) -> np.ndarray:
        """The clean-up inference applies to a label map (``min_size`` in mm² or mm³ on ``spacing``)."""
        from medseg.postprocess import postprocess

        return postprocess(
            labels,
            self.cfg.num_classes,
            spacing,
            keep_largest=keep_largest,
            min_size=min_size,
            fill_holes=fill_holes,
        )

    def threshold(self, threshold: float | None) -> float:
        return self.cfg.infer.threshold if threshold is None else float(threshold)

    def _dice_ce_loss(self, target=None, **activation) -> nn.Module:
        """MONAI's Dice + (B)CE loss; ``activation`` is how MONAI turns logits and labels into comparable maps.

        ``loss.batch_dice`` pools the Dice terms over the batch (nnU-Net's "batch Dice"): a slice with an empty
        mask then no longer contributes a near-maximal Dice loss of its own, which matters when most slices are
        empty. ``loss.fn_weight`` other than 0.5 replaces the Dice term by MONAI's Tversky loss (Salehi et al.
        2017), which weighs false negatives by ``fn_weight`` and false positives by ``1 - fn_weight``: above 0.5 it
        favours recall. With ``model.deep_supervision`` the network returns ``[full, 1/2, 1/4, ...]`` logits in
        training mode, and the loss is MONAI's ``DeepSupervisionLoss`` around the above: weights 1, 0.5, 0.25,
        labels nearest-downsampled.
        """
        from monai.losses import DeepSupervisionLoss, DiceCELoss, TverskyLoss

        lc = self.cfg.train.loss
        if not 0.0 < lc.fn_weight < 1.0:
            raise MedsegError(
                f"train.loss.fn_weight is {lc.fn_weight}; fix: use a value between 0 and 1 (0.5 = Dice, "
                "0.7 weighs missed foreground more than false alarms)"
            )
        common = dict(smooth_nr=1e-5, smooth_dr=1e-5, batch=lc.batch_dice, **activation)
        loss = DiceCELoss(lambda_dice=lc.dice_weight, lambda_ce=lc.ce_weight, **common)
        if lc.fn_weight != 0.5:
            # MONAI has no Tversky+CE pair; DiceCELoss calls its ``dice`` term and adds (B)CE itself, so swapping
            # that term keeps MONAI's target handling and weighting for both halves.
            loss.dice = TverskyLoss(alpha=1.0 - lc.fn_weight, beta=lc.fn_weight, **common)
        if target is not None:
            loss = _OnTargets(loss, target)
        return DeepSupervisionLoss(loss, weight_mode="exp") if self.cfg.model.deep_supervision else loss


class BinaryTask(Task):
    """Foreground against background: one sigmoid channel, a threshold on its probability."""

    name = "binary"

    @property
    def out_channels(self) -> int:
        return 1

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits)

    def loss(self) -> nn.Module:
        """Soft Dice + BCE-with-logits on the one sigmoid channel."""
        return self._dice_ce_loss(sigmoid=True)

    def logits_to_labels(self, logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        return (torch.sigmoid(logits) > self.threshold(threshold)).to(torch.uint8)

    def probabilities_to_labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        return (probs[0] > self.threshold(threshold)).astype(np.uint8)

    def background_probabilities(self, shape, dtype=torch.float32) -> torch.Tensor:
        return torch.zeros(tuple(shape), dtype=dtype)


class MulticlassTask(Task):
    """Three or more classes: one softmax channel per class, the most probable class wins."""

    name = "multiclass"

    @property
    def out_channels(self) -> int:
        return self.cfg.num_classes

    def activation(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.softmax(logits, dim=1)

    def loss(self) -> nn.Module:
        """Soft Dice (background excluded unless ``loss.include_background``) + cross-entropy over the classes."""
        return self._dice_ce_loss(
            softmax=True, to_onehot_y=True, include_background=self.cfg.train.loss.include_background
        )

    def logits_to_labels(self, logits: torch.Tensor, threshold: float | None = None) -> torch.Tensor:
        return logits.argmax(dim=1, keepdim=True).to(torch.uint8)

    def probabilities_to_labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        return probs.argmax(axis=0).astype(np.uint8)

    def background_probabilities(self, shape, dtype=torch.float32) -> torch.Tensor:
        out = torch.zeros(tuple(shape), dtype=dtype)
        out[0] = 1.0  # all probability on class 0, the background
        return out

    def whole_counts(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        return overlap_counts(pred > 0, gt > 0)


INSTANCE_CLASSES = ("background", "interior", "boundary")


def instance_classes(ids: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)`` instance ids -> ``(B, 1, ...)`` classes: 0 background, 1 object interior, 2 object boundary.

    A boundary pixel is an object pixel with another value (background or a neighbouring object) among its 3x3
    (3x3x3) neighbours, so two touching objects are parted by a line two pixels wide: the seam a watershed needs
    to split them again. Computed on the fly from the (augmented, resized) ids, so the seam is always one pixel
    per side at the resolution the network sees."""
    pool = F.max_pool2d if ids.ndim == 4 else F.max_pool3d
    ids = ids.float()
    above = pool(ids, 3, stride=1, padding=1)
    below = -pool(-ids, 3, stride=1, padding=1)
    seam = (above != ids) | (below != ids)
    classes = torch.where(seam, 2.0, 1.0)
    return torch.where(ids > 0, classes, torch.zeros_like(classes))


class _OnTargets(nn.Module):
    """A loss scored on ``target(label)`` instead of the label itself (instance ids -> classes)."""

    def __init__(self, loss: nn.Module, target):
        super().__init__()
        self.loss, self.target = loss, target

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        return self.loss(logits, self.target(label))


class InstanceTask(MulticlassTask):
    """Objects of one class as an instance map: the network's three softmax channels are background, interior and
    boundary (the three-class U-Net of the Data Science Bowl 2018, Caicedo et al. 2019); inference thresholds the
    foreground, seeds one object per connected interior and floods the rest of the foreground from the seeds
    (:func:`medseg.objects.instances_from_probabilities`). Validation scores the foreground Dice."""

    name = "instances"
    voxelwise_labels = False  # the watershed floods across the whole map

    @property
    def out_channels(self) -> int:
        return len(INSTANCE_CLASSES)

    def loss(self) -> nn.Module:
        """Soft Dice (interior and boundary) + cross-entropy over the three classes, on :func:`instance_classes`."""
        return self._dice_ce_loss(
            target=instance_classes,
            softmax=True,
            to_onehot_y=True,
            include_background=self.cfg.train.loss.include_background,
        )

    def probabilities_to_labels(self, probs: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """The instance map of one case (uint16; int32 beyond 65535 objects)."""
        from medseg.objects import instances_from_probabilities

        seed = self.cfg.infer.seed_threshold
        t = self.threshold(threshold)
        return instances_from_probabilities(probs, t, seed_threshold=t if seed is None else float(seed))

    def class_counts(self, pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
        """The foreground's counts: any object pixel (validation's arg-max map holds 0 background, 1 interior,
        2 boundary) against any object pixel (any id)."""
        return overlap_counts(pred > 0, gt > 0)[None]

    def whole_counts(self, pred: np.ndarray, gt: np.ndarray) -> None:
        return None  # the one object class is the whole foreground

    def clean(self, labels: np.ndarray, spacing, keep_largest: bool, min_size: float, fill_holes: bool) -> np.ndarray:
        """With ``fill_holes`` each object's holes become its own; objects under ``min_size`` (mm², mm³) are
        dropped and the rest renumbered 1..N. ``keep_largest`` does not apply to objects (it would keep one nucleus
        of hundreds) and is ignored."""
        from medseg.objects import drop_small_objects, fill_object_holes

        if fill_holes:
            labels = fill_object_holes(labels)
        return drop_small_objects(labels, min_size / float(np.prod(spacing)) if min_size > 0 else 0)


TASKS: dict[str, type[Task]] = {"binary": BinaryTask, "multiclass": MulticlassTask, "instances": InstanceTask}


def task_name(cfg: Config) -> str:
    """Which entry of :data:`TASKS` a config trains: instances when ``data.task`` says so, binary with two labels,
    else multi-class."""
    if cfg.instances:
        return "instances"
    return "binary" if cfg.binary else "multiclass"


def task_for(cfg: Config) -> Task:
    """The task ``cfg`` describes, bound to it."""
    return TASKS[task_name(cfg)](cfg)
