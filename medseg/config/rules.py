"""Every key's value range, and the rules that tie two keys together, checked once when a config is loaded.

A bad value stops here with one line that names the key, where it came from (the config file, or ``KEY from --set``)
and a valid example, before any data is read or a run folder is made. The builders downstream (optimiser, schedule,
weight average, loss, sampler, normalisation) can then take their values as given. What only a model family knows
(its total stride, its levels) is checked by :func:`medseg.models.check_model_config`, also without building it.
"""

from __future__ import annotations

from medseg.config.schema import Config
from medseg.errors import MedsegError, fail


def _sizes(v) -> bool:
    return len(v) > 0 and all(s > 0 for s in v)


def _unique_names(n: int):
    return lambda v: len(v) >= n and len(set(v)) == len(v) and all(str(x).strip() for x in v)


def _low_high(v, low=float("-inf"), high=float("inf")) -> bool:
    return len(v) == 2 and low <= v[0] < v[1] <= high


def _draw_range(v, high=float("inf")) -> bool:
    """[low, high] to draw a value from, both above 0 and low <= high (a single value when equal)."""
    return len(v) == 2 and 0 < v[0] <= v[1] <= high


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
    "augment.flip_axes": (
        lambda v: len(v) > 0 and all(a >= 0 for a in v) and len(set(v)) == len(v),
        "must be distinct spatial axes from 0 (2D: 0 is height, 1 is width)",
        "[1]",
    ),
    "augment.rotate_deg": _non_negative("15"),
    "augment.scale_range": _fraction("0.1"),
    "augment.shift_range": _fraction("0.05"),
    "augment.shear_range": _fraction("0.05"),
    "augment.intensity_scale": _non_negative("0.1"),
    "augment.intensity_shift": _non_negative("0.1"),
    "augment.noise_std": _non_negative("0.05"),
    "augment.blur_sigma": (_draw_range, "must be [low, high] with 0 < low <= high", "[0.5, 1.0]"),
    "augment.lowres_zoom": (
        lambda v: _draw_range(v, 1.0),
        "must be [low, high] with 0 < low <= high <= 1",
        "[0.5, 1.0]",
    ),
    "model.channels": (_sizes, "must be a non-empty list of feature counts greater than 0", "[16, 32, 64]"),
    "model.strides": (lambda v: all(s > 0 for s in v), "must be strides greater than 0", "[2, 2]"),
    "model.num_res_units": _non_negative("1"),
    "model.dropout": _fraction("0.1"),
    "model.head": (lambda v: v >= 0, "must be true, false or a number of feature maps", "true"),
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
    "train.freeze_encoder_epochs": _non_negative("3"),
    "train.encoder_lr_scale": (lambda v: 0 < v <= 10, "must be a factor between 0 (exclusive) and 10", "0.1"),
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
    "infer.seed_threshold": (lambda v: 0 < v < 1, "must be between 0 and 1 (exclusive)", "0.6"),
    "infer.min_size": _non_negative("0"),
}

# key: (the names it may take, the problem and the fix as one line each; {value} is the name given)
CHOICES: dict[str, tuple[tuple[str, ...], str, str]] = {
    "data.task": (
        ("semantic", "instances"),
        "data.task '{value}' is unknown",
        "use semantic (a class per pixel) or instances (a value per object, e.g. nuclei)",
    ),
    "preprocess.intensity": (
        ("zscore", "volume", "scale", "fixed", "imagenet", "none"),
        "preprocess.intensity '{value}' is unknown",
        "use zscore, volume, scale, fixed, imagenet or none",
    ),
    "augment.affine_padding": (
        ("zeros", "border", "reflection"),
        "augment.affine_padding '{value}' is unknown",
        "use zeros, border (repeat the edge pixel) or reflection",
    ),
    "model.dropout_mode": (("element", "channel"), "model.dropout_mode is '{value}'", "use 'element' or 'channel'"),
    "train.optimizer": (("adamw", "adam", "sgd"), "train.optimizer '{value}' is unknown", "use adamw, adam or sgd"),
    "train.scheduler": (
        ("cosine", "poly", "constant"),
        "train.scheduler '{value}' is unknown",
        "use cosine, poly or constant",
    ),
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


def check_choice(key: str, value: str, where: str | None = None) -> None:
    """Raise a one-line MedsegError when ``value`` is not one of the names ``key`` takes."""
    names, problem, fix = CHOICES[key]
    if value not in names:
        raise fail(where, problem.format(value=value), fix)


def _check_lengths(cfg: Config, source: str) -> None:
    """Sizes and spacings have one value per axis of the data they apply to (2D: H, W; 3D: x, y, z)."""
    dims = cfg.data.spatial_dims
    per_axis = {"infer.roi_size": dims}
    if dims == 2:
        per_axis.update({"preprocess.spatial_size": 2, "data.pixel_spacing_mm": 2, "train.patch_size": 2})
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
    """Every key's range and names, and the few rules that tie two keys together (``overridden``: keys set with
    --set, which a bad value of theirs is blamed on)."""

    def where(key: str) -> str:
        return f"{key} from --set" if key in overridden else source

    for key in RULES:
        check_value(key, _get(cfg, key), where(key))
    for key in CHOICES:
        check_choice(key, _get(cfg, key), where(key))
    _check_lengths(cfg, source)
    _check_split(cfg.data.split, source)
    _check_context(cfg, source)
    _check_loss_weights(cfg, source)
    _check_shift_size(cfg, source)
    _check_quarter_turns(cfg, source)
    _check_instances(cfg, source)
    _check_label_values(cfg, source)


def _check_split(split, source: str) -> None:
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


def _check_context(cfg: Config, source: str) -> None:
    """Neighbouring slices as extra channels exist only for 2D slices of a volume."""
    if cfg.data.context_slices and cfg.data.spatial_dims != 2:
        raise fail(
            source,
            f"data.context_slices {cfg.data.context_slices} applies to 2D slices only and must be >= 0",
            "0 (no context), or 1-2 for slices of a volume (e.g. lgg)",
        )


def _check_loss_weights(cfg: Config, source: str) -> None:
    loss = cfg.train.loss
    if loss.dice_weight + loss.ce_weight <= 0:
        raise fail(
            source,
            "train.loss.dice_weight and ce_weight are both 0, so nothing is learnt",
            "give one of them a weight, e.g. --set train.loss.dice_weight=1",
        )


def _check_shift_size(cfg: Config, source: str) -> None:
    """A shift is a fraction of the image size, so the size must be known before the data are read."""
    if not cfg.augment.shift_range:
        return
    key = "preprocess.spatial_size" if cfg.data.spatial_dims == 2 else "train.patch_size"
    if _get(cfg, key) is None and cfg.train.patch_size is None:
        raise fail(
            source,
            f"augment.shift_range {cfg.augment.shift_range} is a fraction of the image size, but {key} is not set",
            f"set {key} (e.g. {'[256, 256]' if cfg.data.spatial_dims == 2 else '[96, 96, 96]'}) or shift_range 0",
        )


def _check_quarter_turns(cfg: Config, source: str) -> None:
    """A quarter turn swaps the first two sides of an image or patch: on a non-square one, a batch then holds two
    shapes and cannot be stacked (one image per batch can)."""
    if cfg.augment.rot90_prob <= 0:
        return
    key = "train.patch_size" if cfg.train.patch_size else "preprocess.spatial_size"
    shape = cfg.train.patch_size or (cfg.preprocess.spatial_size if cfg.data.spatial_dims == 2 else None)
    per_batch = cfg.train.batch_size * (cfg.train.samples_per_volume if cfg.train.patch_size else 1)
    if not shape or len(shape) < 2 or shape[0] == shape[1] or per_batch < 2:
        return
    square = [max(shape[:2])] * 2 + list(shape[2:])
    raise fail(
        source,
        f"augment.rot90_prob {cfg.augment.rot90_prob} turns the {_show(shape)} {key} a quarter turn, which swaps "
        "its first two sides, so a batch would mix two shapes",
        f"make it square (e.g. --set '{key}={_show(square)}') or --set augment.rot90_prob=0",
    )


def _check_instances(cfg: Config, source: str) -> None:
    """Instance maps number objects of one kind: one foreground class (a class per object is not read yet)."""
    if cfg.instances and cfg.num_classes != 2:
        raise fail(
            source,
            f"data.task instances needs one object class, but data.labels has {cfg.num_classes - 1}",
            "e.g. --set 'data.labels=[background, nucleus]'",
        )


def _check_label_values(cfg: Config, source: str) -> None:
    if cfg.data.label_values:
        check_label_values(cfg.data.labels, cfg.data.label_values, cfg.instances, source)


def check_label_values(labels: list[str], lv: dict, instances: bool, source: str) -> None:
    """``data.label_values`` names classes of ``data.labels``, lists whole values, gives each value one class and
    every foreground class at least one value."""
    example = "e.g. --set 'data.labels=[background, tumour]' --set 'data.label_values={tumour: [1, 2, 3, 4]}'"
    if not isinstance(lv, dict):
        raise fail(source, "data.label_values must map class names to lists of label values", example)
    if instances:
        raise fail(source, "data.label_values maps class values, but data.task is instances", "remove label_values")
    unknown = [k for k in lv if k not in labels]
    if unknown:
        raise fail(source, f"data.label_values names {unknown}, which are not in data.labels {list(labels)}", example)
    seen: dict[int, str] = {}
    for name, values in lv.items():
        values = values if isinstance(values, (list, tuple)) else [values]
        if not values or not all(isinstance(v, (int, float)) and float(v).is_integer() for v in values):
            raise fail(source, f"data.label_values.{name} must be a list of whole label values", example)
        for v in values:
            if int(v) in seen and seen[int(v)] != name:
                raise fail(source, f"data.label_values gives value {int(v)} to both {seen[int(v)]} and {name}", example)
            seen[int(v)] = name
    missing = [c for c in labels[1:] if c not in lv]
    if missing:
        raise fail(source, f"data.label_values lists no values for {missing}", example)
