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

from medseg.errors import MedsegError, fail


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
    image_log_every: int = 1  # validations (not epochs) between TensorBoard image panels; 1: at every one


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


# ----------------------------------------------------------------------------
# loading
# ----------------------------------------------------------------------------


def _build(cls, data: Any, where: str, source: str):
    if not isinstance(data, dict):
        raise MedsegError(
            f"{source}: '{where or 'config'}' must be a mapping, got {type(data).__name__}; fix: use 'key: value' lines"
        )
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        if key not in names:
            raise fail(
                source, f"unknown config key '{where + '.' if where else ''}{key}'", f"use one of {sorted(names)}"
            )
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
    raise fail(
        source,
        f"config key '{where}' = {value!r} is not a valid {getattr(hint, '__name__', hint)}",
        "correct the value's type",
    )


def config_from_dict(data: dict, source: str = "config", overrides: list[str] | None = None) -> Config:
    """Build and validate a Config: a bad value stops here, before any data is read or a run folder is made.

    ``overrides`` are the ``--set`` items already applied to ``data``: a bad value among them is blamed on the
    command line, not on the config file."""
    cfg = _build(Config, copy.deepcopy(data), "", source)
    validate_config(cfg, source, overridden={item.split("=", 1)[0].strip() for item in overrides or []})
    return cfg


# ----------------------------------------------------------------------------
# validation: the value ranges every key must respect (model-dependent checks live in engine.checks.check_config)
# ----------------------------------------------------------------------------


def _sizes(v) -> bool:
    return len(v) > 0 and all(s > 0 for s in v)


def _unique_names(n: int):
    return lambda v: len(v) >= n and len(set(v)) == len(v) and all(str(x).strip() for x in v)


def _low_high(v, low=float("-inf"), high=float("inf")) -> bool:
    return len(v) == 2 and low <= v[0] < v[1] <= high


def _rule(test, requirement: str):
    """A rule maker: ``rule(example)`` is (test, requirement, a valid example for the fix)."""
    return lambda example: (test, requirement, example)


_probability = _rule(lambda v: 0 <= v <= 1, "must be a probability between 0 and 1")
_fraction = _rule(lambda v: 0 <= v < 1, "must be a fraction from 0 up to (not including) 1")
_open_unit = _rule(lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)")
_non_negative = _rule(lambda v: v >= 0, "must be 0 or more")
_at_least_1 = _rule(lambda v: v >= 1, "must be at least 1")
_positive = _rule(lambda v: v > 0, "must be greater than 0")
_positive_sizes = _rule(_sizes, "must be a list of sizes greater than 0")

# key: (test, requirement, example); None values of optional keys are not tested
RULES: dict[str, tuple] = {
    "data.labels": (
        _unique_names(2),
        "needs at least 2 distinct class names, background first",
        "[background, lesion]",
    ),
    "data.channels": (_unique_names(1), "needs at least one channel name, each named once", "[image]"),
    "data.stored_channels": (
        _unique_names(1),
        "needs at least one channel name, each named once",
        "[red, green, blue]",
    ),
    "data.spatial_dims": (lambda v: v in (2, 3), "must be 2 or 3", "2"),
    "data.pixel_spacing_mm": (_sizes, "must be pixel sizes in mm greater than 0", "[0.1, 0.1]"),
    "data.context_slices": _non_negative("0"),
    "data.split.val_fraction": _fraction("0.2"),
    "data.split.test_fraction": _fraction("0.0"),
    "data.split.folds": (lambda v: v >= 0, "must be 0 (no cross-validation) or the number of folds", "5"),
    "data.split.fold": _non_negative("0"),
    "data.split.max_train_groups": _non_negative("0"),
    "data.split.seed": (lambda v: 0 <= v < 2**32, "must be from 0 to 2**32 - 1 (NumPy's seed range)", "0"),
    "preprocess.spatial_size": _positive_sizes("[192, 256]"),
    "preprocess.spacing": (_sizes, "must be voxel sizes in mm greater than 0", "[1.5, 1.5, 1.5]"),
    "preprocess.intensity_range": (_low_high, "must be [low, high] with low < high", "[0, 255]"),
    "preprocess.volume_percentiles": (
        lambda v: _low_high(v, 0, 100),
        "must be [low, high] percentiles, 0 <= low < high <= 100",
        "[10, 99]",
    ),
    **{
        f"augment.{k}": _probability("0.5")
        for k in (
            "flip_prob",
            "rot90_prob",
            "affine_prob",
            "intensity_prob",
            "contrast_prob",
            "noise_prob",
            "blur_prob",
            "lowres_prob",
        )
    },
    "augment.rotate_deg": _non_negative("15"),
    "augment.scale_range": _fraction("0.1"),
    "augment.intensity_scale": _non_negative("0.1"),
    "augment.intensity_shift": _non_negative("0.1"),
    "augment.noise_std": _non_negative("0.05"),
    "model.channels": (_sizes, "must be a non-empty list of feature counts greater than 0", "[16, 32, 64]"),
    "model.strides": (lambda v: all(s > 0 for s in v), "must be strides greater than 0", "[2, 2]"),
    "model.num_res_units": _non_negative("1"),
    "model.dropout": _fraction("0.1"),
    "model.deep_supervision": _non_negative("0"),
    "train.epochs": _at_least_1("50"),
    "train.batch_size": _at_least_1("8"),
    "train.lr": _positive("0.001"),
    "train.weight_decay": _non_negative("1e-5"),
    "train.warmup_epochs": _non_negative("0"),
    "train.patch_size": _positive_sizes("[64, 64, 64]"),
    "train.samples_per_volume": _at_least_1("2"),
    "train.pos_fraction": _probability("0.67"),
    "train.pos_slice_fraction": _open_unit("0.5"),
    "train.val_every": _at_least_1("1"),
    "train.num_workers": _non_negative("0"),
    "train.max_steps_per_epoch": _at_least_1("100"),
    "train.ema": (lambda v: 0 < v < 1, "must be a decay between 0 and 1 (exclusive)", "0.99"),
    "train.image_log_every": _non_negative("5"),
    "train.seed": (lambda v: 0 <= v < 2**32, "must be from 0 to 2**32 - 1 (NumPy's seed range)", "0"),
    "train.loss.dice_weight": _non_negative("1.0"),
    "train.loss.ce_weight": _non_negative("1.0"),
    "train.loss.fn_weight": (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive; 0.5 = Dice)", "0.5"),
    "infer.roi_size": _positive_sizes("[96, 96, 96]"),
    "infer.overlap": _fraction("0.25"),
    "infer.sw_batch_size": _at_least_1("4"),
    "infer.threshold": (
        lambda v: 0 < v < 1,
        "must be between 0 and 1 (exclusive: 0 or 1 would mark every pixel or none)",
        "0.5",
    ),
    "infer.min_size": _non_negative("0"),
}


def _get(cfg: Config, key: str):
    node = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


def _show(value) -> str:
    return "[" + ", ".join(_show(v) for v in value) + "]" if isinstance(value, list) else str(value)


def check_value(key: str, value, where: str | None = None) -> None:
    """Raise a one-line MedsegError when ``value`` is outside ``key``'s range (``where``: the config file or a flag)."""
    if value is None:
        return
    test, requirement, example = RULES[key]
    if test(value):
        return
    if where and where.startswith("--"):  # a command-line flag that stands for this key
        raise MedsegError(f"{where} {_show(value)} {requirement}; fix: e.g. {where} {example}")
    raise fail(where, f"{key} {_show(value)} {requirement}", f"e.g. --set '{key}={example}'")


def _check_lengths(cfg: Config, source: str) -> None:
    """Sizes and spacings have one value per axis of the data they apply to (2D: H, W; 3D: x, y, z)."""
    dims = cfg.data.spatial_dims
    per_axis = {"infer.roi_size": dims}
    if dims == 2:
        per_axis.update({"preprocess.spatial_size": 2, "data.pixel_spacing_mm": 2})
    else:
        per_axis.update({"train.patch_size": 3, "preprocess.spacing": 3})
    for key, n in per_axis.items():
        value = _get(cfg, key)
        if value is not None and len(value) != n:
            raise fail(
                source,
                f"{key} {_show(value)} needs {n} values, one per axis of the {dims}D data",
                f"e.g. --set '{key}={_show([value[0]] * n)}'",
            )


def validate_config(cfg: Config, source: str = "config", overridden: set[str] | frozenset = frozenset()) -> None:
    """Every key's range, and the few rules that tie two keys together (``overridden``: keys set with --set)."""
    for key in RULES:
        check_value(key, _get(cfg, key), f"{key} from --set" if key in overridden else source)
    _check_lengths(cfg, source)
    split = cfg.data.split
    if split.val_fraction + split.test_fraction >= 1:
        raise fail(
            source,
            f"data.split.val_fraction {split.val_fraction} + test_fraction {split.test_fraction} leave "
            "nothing to train on",
            "keep their sum below 1, e.g. val_fraction 0.2, test_fraction 0.1",
        )
    if split.folds > 1 and not split.fold < split.folds:
        raise fail(
            source, f"data.split.fold {split.fold} is outside 0..{split.folds - 1}", "e.g. --set data.split.fold=0"
        )
    loss = cfg.train.loss
    if loss.dice_weight + loss.ce_weight <= 0:
        raise fail(
            source,
            "train.loss.dice_weight and ce_weight are both 0, so nothing is learnt",
            "give one of them a weight, e.g. --set train.loss.dice_weight=1",
        )


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
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise fail(
            path,
            "is not a text file (not UTF-8), so not a YAML config",
            "pass a YAML config such as configs/ph2.yaml, or a recipe name such as ph2",
        ) from None
    except yaml.YAMLError as exc:
        line = getattr(getattr(exc, "problem_mark", None), "line", None)
        raise fail(
            path, f"is not valid YAML{f' (line {line + 1})' if line is not None else ''}", "fix the YAML syntax"
        ) from None
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


def known_config_names() -> list[str]:
    return sorted({c.stem for d in config_search_dirs() if d.is_dir() for c in d.glob("*.yaml")})


def did_you_mean(name: str, known) -> str:
    """' (did you mean 'ph2'?)' for a near miss, case-insensitively; '' when nothing is close."""
    import difflib

    by_lower = {k.lower(): k for k in known}
    if name.lower() in by_lower:
        return f" (did you mean '{by_lower[name.lower()]}'?)"
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=1, cutoff=0.6)
    return f" (did you mean '{by_lower[close[0]]}'?)" if close else ""


def resolve_config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.is_file():
        if not p.is_file():
            raise fail(
                p, "config file not found", "check the path or use a recipe name such as ph2, lgg, brats or demo"
            )
        return p
    for d in config_search_dirs():
        cand = d / f"{name_or_path}.yaml"
        if cand.is_file():
            return cand
    known = known_config_names()
    raise MedsegError(
        f"no config named '{name_or_path}'{did_you_mean(name_or_path, known)}; "
        f"fix: use one of {known} or pass a path to a YAML file"
    )


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a recipe name (``ph2``) or a YAML path and apply ``--set`` overrides.

    A data recipe without a config file of its own is built from the defaults with ``data.recipe`` set to it."""
    try:
        path = resolve_config_path(name_or_path)
    except MedsegError:
        from medseg.data import list_recipes

        if name_or_path not in list_recipes():
            raise
        data = apply_overrides({"name": name_or_path, "data": {"recipe": name_or_path}}, overrides)
        return config_from_dict(data, source=f"recipe '{name_or_path}' defaults", overrides=overrides)
    data = apply_overrides(load_yaml(path), overrides)
    data.setdefault("name", path.stem)
    return config_from_dict(data, source=str(path), overrides=overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
