"""Typed configuration: one dataclass tree loaded from ``configs/*.yaml``.

Every key can be overridden from the CLI with ``--set section.key=value``
(the value is parsed as YAML, so ``--set train.lr=3e-4`` and
``--set model.channels=[8,16,32]`` both work). The resolved config is saved
into every run directory, checkpoint and report.
"""

from __future__ import annotations

import copy
import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import MedsegError, fail


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
    labels: list[str] = field(default_factory=lambda: ["background", "lesion"])
    channels: list[str] = field(default_factory=lambda: ["image"])
    stored_channels: list[str] | None = None  # 2D: the channels each file holds, by name; channels picks from them
    spatial_dims: int = 2
    pixel_spacing_mm: list[float] | None = None  # 2D only: physical pixel size if known
    context_slices: int = 0  # 2D slices of a volume: neighbours on each side fed as extra channels (2.5D)
    options: dict[str, Any] = field(default_factory=dict)  # recipe-specific
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class PreprocessConfig:
    spatial_size: list[int] | None = None  # 2D: resize every image to this (H, W)
    spacing: list[float] | None = None  # 3D: resample to this voxel size (mm)
    orientation: str = "RAS"  # 3D: reorient to these axis codes
    intensity: str = "zscore"  # zscore (per image) | volume (per scan) | scale (per-image min-max) | fixed | none
    intensity_range: list[float] = field(default_factory=lambda: [0.0, 255.0])  # for intensity: fixed
    volume_percentiles: list[float] = field(default_factory=lambda: [10.0, 99.0])  # for intensity: volume (clip)
    nonzero: bool = False  # zscore over non-zero voxels only (skull-stripped MRI)
    channel_wise: bool = True  # zscore/scale each channel alone; false: one mean/std over all (keeps hue)
    crop_foreground: bool = False  # 3D: crop to the box of non-zero voxels (before normalisation; also at inference)


@dataclass
class AugmentConfig:
    flip_prob: float = 0.5
    rot90_prob: float = 0.0
    affine_prob: float = 0.3
    rotate_deg: float = 15.0
    scale_range: float = 0.1
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
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class LossConfig:
    dice_weight: float = 1.0
    ce_weight: float = 1.0  # BCE for binary, CE for multi-class
    include_background: bool = False  # multi-class Dice term only
    batch_dice: bool = False  # Dice over the whole batch, not per sample (2D slices that are often empty)
    fn_weight: float = 0.5  # overlap term as a Tversky loss: weight of false negatives (false positives: 1 - it); 0.5 = Dice


@dataclass
class TrainConfig:
    epochs: int = 50
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-5
    optimizer: str = "adamw"  # adamw | adam | sgd
    scheduler: str = "cosine"  # cosine | poly | constant
    warmup_epochs: int = 0
    patch_size: list[int] | None = None  # 3D: random patch size
    samples_per_volume: int = 2  # 3D: patches drawn per volume per step
    pos_fraction: float = 0.67  # 3D: share of patches centred on foreground
    pos_slice_fraction: float | None = None  # 2D: expected share of drawn samples whose mask is not empty
    val_every: int = 1
    amp: bool = True  # mixed precision: float16 on CUDA, bfloat16 on CPUs with native bfloat16, else off
    num_workers: int = 0
    cache: bool = True
    max_steps_per_epoch: int | None = None
    ema: float | None = None  # decay of an exponential moving average of the weights, e.g. 0.99; validated and saved
    loss: LossConfig = field(default_factory=LossConfig)
    seed: int = 0
    image_log_every: int = 5  # epochs between TensorBoard image panels


@dataclass
class InferConfig:
    roi_size: list[int] | None = None  # sliding window; defaults to patch/spatial size
    overlap: float = 0.25
    sw_batch_size: int = 4
    threshold: float = 0.5
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
    def binary(self) -> bool:
        """Binary tasks use one sigmoid output; others one softmax output per class."""
        return self.num_classes == 2

    @property
    def out_channels(self) -> int:
        return 1 if self.binary else self.num_classes

    @property
    def channel_select(self) -> list[int] | None:
        """Indices of ``data.channels`` among ``data.stored_channels`` (None: no names stored, channels as stored)."""
        stored = self.data.stored_channels
        if not stored:
            return None
        missing = [c for c in self.data.channels if c not in stored]
        if missing:
            raise MedsegError(f"data.channels {missing} are not among data.stored_channels {stored}; fix: pick "
                              f"channels from {stored}, e.g. --set 'data.channels=[{stored[0]}]'")
        return [stored.index(c) for c in self.data.channels]

    @property
    def in_channels(self) -> int:
        """Network inputs: the channels, times (2 * context_slices + 1) slices in 2.5D."""
        ctx = self.data.context_slices if self.data.spatial_dims == 2 else 0
        return len(self.data.channels) * (2 * ctx + 1)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------

def _build(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise MedsegError(f"{source}: '{where or 'config'}' must be a mapping, got {type(data).__name__}; fix: use 'key: value' lines")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise fail(source, f"unknown config key '{where + '.' if where else ''}{key}'",
                       f"use one of {sorted(names)}")
        hint = hints[key]
        sub = where + "." + key if where else key
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value or {}, sub, source)
        else:
            kwargs[key] = _coerce(value, hint, sub, source)
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, where: str, source: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if value is None:
        if type(None) in args or hint is Any:
            return None
        raise fail(source, f"config key '{where}' may not be empty", "give it a value")
    if origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _coerce(value, inner[0], where, source)
        for hint_i in inner:  # e.g. bool | int: the first type that takes the value wins
            try:
                return _coerce(value, hint_i, where, source)
            except MedsegError:
                pass
        names = " or ".join(getattr(h, "__name__", str(h)) for h in inner)
        raise fail(source, f"config key '{where}' = {value!r} is not a valid {names}", "correct the value's type")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
        try:
            return float(value)
        except ValueError:
            pass
    if hint is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if hint is bool and isinstance(value, bool):
        return value
    if hint is str and isinstance(value, (str, int, float)):
        return str(value)
    if origin is list and isinstance(value, (list, tuple)):
        return [_coerce(v, args[0], where, source) for v in value] if args else list(value)
    if origin is dict and isinstance(value, dict):
        return dict(value)
    if hint is Any:
        return value
    raise fail(source, f"config key '{where}' = {value!r} is not a valid {getattr(hint, '__name__', hint)}",
               "correct the value's type")


def config_from_dict(data: dict, source: str = "config") -> Config:
    return _build(Config, copy.deepcopy(data), "", source)


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    """Apply ``a.b.c=value`` strings to a nested dict (value parsed as YAML)."""
    data = copy.deepcopy(data)
    for item in overrides or []:
        if "=" not in item:
            raise MedsegError(f"override '{item}' has no '='; fix: write it as section.key=value, e.g. train.lr=3e-4")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise MedsegError(f"override '{item}': '{part}' is not a section; fix: check the key path")
        node[parts[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise fail(path, "config file not found", "pass an existing YAML file or a recipe name such as ph2")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise fail(path, f"is not valid YAML{f' (line {line + 1})' if line is not None else ''}",
                   "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise fail(path, "does not contain a YAML mapping", "start the file with 'name: ...' style keys")
    return data


def config_search_dirs() -> list[Path]:
    """Where recipe names are looked up: ./configs, then the source checkout's configs/."""
    import os

    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parent.parent / "configs"]
    if os.environ.get("MEDSEG_CONFIG_DIR"):
        dirs.insert(1, Path(os.environ["MEDSEG_CONFIG_DIR"]))
    out = []
    for d in dirs:
        if d not in out:
            out.append(d)
    return out


def resolve_config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.is_file():
        if not p.is_file():
            raise fail(p, "config file not found", "check the path or use a recipe name such as ph2, lgg, brats or demo")
        return p
    for d in config_search_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = sorted({c.stem for d in config_search_dirs() if d.is_dir() for c in d.glob("*.yaml")})
    raise MedsegError(f"no config named '{name_or_path}'; fix: use one of {known} or pass a path to a YAML file")


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a recipe name (``ph2``) or a YAML path and apply ``--set`` overrides."""
    path = resolve_config_path(name_or_path)
    data = apply_overrides(load_yaml(path), overrides)
    data.setdefault("name", path.stem)
    return config_from_dict(data, source=str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
