"""Typed configuration: one dataclass tree loaded from ``configs/*.yaml`` and checked in one place.

- :mod:`medseg.config.schema`: the sections, their keys, types and defaults;
- :mod:`medseg.config.loading`: recipe names and YAML files, ``--set`` overrides, type coercion;
- :mod:`medseg.config.rules`: every key's value range and names, and the rules that tie keys together.
"""

from medseg.config.loading import (
    add_recipe_names,
    apply_overrides,
    config_from_dict,
    config_search_dirs,
    did_you_mean,
    known_config_names,
    load_config,
    load_yaml,
    resolve_config_path,
    save_config,
)
from medseg.config.rules import CHOICES, RULES, check_choice, check_value, validate_config
from medseg.config.schema import (
    AugmentConfig,
    Config,
    DataConfig,
    InferConfig,
    LossConfig,
    ModelConfig,
    PreprocessConfig,
    SplitConfig,
    TrainConfig,
)

__all__ = [
    "CHOICES",
    "RULES",
    "AugmentConfig",
    "Config",
    "DataConfig",
    "InferConfig",
    "LossConfig",
    "ModelConfig",
    "PreprocessConfig",
    "SplitConfig",
    "TrainConfig",
    "add_recipe_names",
    "apply_overrides",
    "check_choice",
    "check_value",
    "config_from_dict",
    "config_search_dirs",
    "did_you_mean",
    "known_config_names",
    "load_config",
    "load_yaml",
    "resolve_config_path",
    "save_config",
    "validate_config",
]
