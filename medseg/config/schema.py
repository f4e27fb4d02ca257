"""The config's shape: one dataclass per section, with each key's type and default.

The types are enforced when a config is loaded (:mod:`medseg.config.loading`) and the value ranges right after
(:mod:`medseg.config.rules`), so code that receives a :class:`Config` can trust every value in it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from medseg.errors import MedsegError


def value_classes(labels: list[str], label_values: dict | None) -> dict[int, int] | None:
    """Each label-map value on disk -> its class index, from ``data.label_values`` (class name -> values; 0 is
    background unless listed under a class); None when the values are the class indices themselves."""
    if not label_values:
        return None
    out = {0: 0}
    for name, values in label_values.items():
        listed = values if isinstance(values, (list, tuple)) else [values]
        out.update({int(v): list(labels).index(name) for v in listed})
    return out


@dataclass
class SplitConfig:
    """How cases are split. Fractions are of groups (patients), never slices."""

    val_fraction: float = 0.2
    test_fraction: float = 0.0
    folds: int = 0  # >1: k-fold cross-validation, ``fold`` is the validation fold
    fold: int = 0
    seed: int = 0
    stratify: str | None = None  # metadata key to stratify by (e.g. "diagnosis")
    use_predefined: bool = True  # honour a recipe's own train/validation folders
    max_train_groups: int = 0  # >0: train on only this many of the training groups (learning curves); 0 = all


@dataclass
class DataConfig:
    recipe: str = "demo"
    task: str = "semantic"  # semantic: one class per pixel | instances: one value per object (instance label maps)
    labels: list[str] = field(default_factory=lambda: ["background", "lesion"])
    channels: list[str] = field(default_factory=lambda: ["image"])
    stored_channels: list[str] | None = None  # 2D: the channels each file holds, by name; channels picks from them
    spatial_dims: int = 2
    pixel_spacing_mm: list[float] | None = None  # 2D only: physical pixel size if known
    context_slices: int = 0  # 2D slices of a volume: neighbours on each side fed as extra channels (2.5D)
    options: dict[str, Any] = field(default_factory=dict)  # recipe-specific
    # class name -> the label-map values on disk that make it, to merge values into one class (BraTS' whole
    # tumour: {tumour: [1, 2, 3, 4]}) or drop them into background; None: value i is class i
    label_values: dict[str, list[int]] | None = None
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class PreprocessConfig:
    spatial_size: list[int] | None = None  # 2D: resize every image to this (H, W)
    spacing: list[float] | None = None  # 3D: resample to this voxel size (mm)
    orientation: str = "RAS"  # 3D: reorient to these axis codes
    intensity: str = "zscore"  # zscore (per image) | volume (per scan) | scale (per-image min-max) | fixed | imagenet
    intensity_range: list[float] = field(default_factory=lambda: [0.0, 255.0])  # for intensity: fixed, imagenet
    volume_percentiles: list[float] = field(default_factory=lambda: [10.0, 99.0])  # for intensity: volume (clip)
    nonzero: bool = False  # zscore over non-zero voxels only (skull-stripped MRI)
    channel_wise: bool = True  # zscore/scale each channel alone; false: one mean/std over all (keeps hue)
    crop_foreground: bool = False  # 3D: crop to the box of non-zero voxels (before normalisation; also at inference)


@dataclass
class AugmentConfig:
    flip_prob: float = 0.5
    flip_axes: list[int] | None = None  # spatial axes flipped, in training and by TTA (None: every axis; [1]: 2D W)
    rot90_prob: float = 0.0
    affine_prob: float = 0.3
    rotate_deg: float = 15.0
    scale_range: float = 0.1
    shift_range: float = 0.0  # affine translation up to this fraction of the image (2D) or patch (3D) size per axis
    shear_range: float = 0.0  # affine shear factor up to this, per axis pair
    affine_padding: str = "zeros"  # what fills pixels the affine brings in: zeros | border (Keras' "nearest")
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    intensity_shift: float = 0.1
    contrast_prob: float = 0.0
    noise_prob: float = 0.0
    noise_std: float = 0.05
    blur_prob: float = 0.0  # Gaussian blur per image, sigma drawn per axis from blur_sigma (in voxels)
    blur_sigma: list[float] = field(default_factory=lambda: [0.5, 1.0])
    lowres_prob: float = 0.0  # simulated lower resolution: down by a factor drawn from lowres_zoom, back up
    lowres_zoom: list[float] = field(default_factory=lambda: [0.5, 1.0])


@dataclass
class ModelConfig:
    name: str = "unet"
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 256])
    strides: list[int] = field(default_factory=lambda: [2, 2, 2, 2])
    num_res_units: int = 2
    dropout: float = 0.0
    dropout_mode: str = "element"  # element: single activations | channel: whole feature maps (far cheaper on a CPU)
    norm: str = "instance"
    head: bool | int = False  # unet: keep channels[0] (true) or this many feature maps at the top + a 1x1 output conv
    deep_supervision: int = 0  # unet: also score the decoder's outputs at this many lower resolutions in training
    encoder: str | None = None  # encoder_unet, fcn: the image encoder (efficientnet-lite0, resnet34, ...)
    pretrained: str | None = None  # encoder weights to start from: imagenet, or a state-dict / checkpoint file
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0  # BCE for binary, CE for multi-class
    include_background: bool = False  # multi-class Dice term only
    batch_dice: bool = False  # Dice over the whole batch, not per sample (2D slices that are often empty)
    fn_weight: float = (
        0.5  # overlap term as a Tversky loss: weight of false negatives (false positives: 1 - it); 0.5 = Dice
    )


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"  # adamw | adam | sgd
    scheduler: str = "cosine"  # cosine | poly | constant
    warmup_epochs: int = 0
    patch_size: list[int] | None = None  # random patches of this size (3D; 2D: at the images' own or resized size)
    samples_per_volume: int = 2  # with patch_size: patches drawn per image or volume per step
    pos_fraction: float = 0.67  # with patch_size: share of patches centred on foreground
    pos_slice_fraction: float | None = None  # 2D: expected share of drawn samples whose mask is not empty
    val_every: int = 1
    amp: bool = True  # mixed precision: float16 on CUDA, bfloat16 on CPUs with native bfloat16, else off
    num_workers: int = 0
    cache: bool = True
    max_steps_per_epoch: int | None = None
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.99; validated and saved
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    freeze_encoder_epochs: int = 0  # train only the decoder for this many epochs (model.pretrained encoders)
    encoder_lr_scale: float = 1.0  # the encoder's learning rate is train.lr times this (discriminative rates)
    image_log_every: int = 1  # validations (not epochs) between TensorBoard image panels; 1: at every one


@dataclass
class InferConfig:
    roi_size: list[int] | None = None  # sliding window; defaults to patch/spatial size
    overlap: float = 0.25
    sw_batch_size: int = 4
    threshold: float = 0.5
    seed_threshold: float | None = None  # instances: interior probability that seeds an object (None: threshold)
    keep_largest: bool = False
    min_size: float = 0.0  # drop components smaller than this (mm^3 in 3D, mm^2 in 2D)
    fill_holes: bool = False
    tta: bool = False


@dataclass
class Config:
    name: str = "demo"
    data: DataConfig = field(default_factory=DataConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    # -- derived ---------------------------------------------------------
    @property
    def num_classes(self) -> int:
        return len(self.data.labels)

    @property
    def value_classes(self) -> dict[int, int] | None:
        """Each label-map value on disk -> its class index (:func:`value_classes`)."""
        return value_classes(self.data.labels, self.data.label_values)

    @property
    def binary(self) -> bool:
        """Binary tasks use one sigmoid output; others one softmax output per class."""
        return self.num_classes == 2

    @property
    def instances(self) -> bool:
        """Objects, not only classes: the ground truth is an instance label map and so is the prediction."""
        return self.data.task == "instances"

    @property
    def out_channels(self) -> int:
        """Network outputs: one sigmoid channel (binary), one per class, or background/interior/boundary for
        instances (:class:`medseg.tasks.InstanceTask`)."""
        if self.instances:
            return 3
        return 1 if self.binary else self.num_classes

    @property
    def channel_select(self) -> list[int] | None:
        """Indices of ``data.channels`` among ``data.stored_channels`` (None: no names stored, channels as stored)."""
        stored = self.data.stored_channels
        if not stored:
            return None
        missing = [c for c in self.data.channels if c not in stored]
        if missing:
            raise MedsegError(
                f"data.channels {missing} are not among data.stored_channels {stored}; fix: pick "
                f"channels from {stored}, e.g. --set 'data.channels=[{stored[0]}]'"
            )
        return [stored.index(c) for c in self.data.channels]

    @property
    def in_channels(self) -> int:
        """Network inputs: the channels, times (2 * context_slices + 1) slices in 2.5D."""
        ctx = self.data.context_slices if self.data.spatial_dims == 2 else 0
        return len(self.data.channels) * (2 * ctx + 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
