"""Loading a config: a recipe name or YAML file, then ``--set`` overrides, then types and ranges.

Every key can be overridden from the CLI with ``--set section.key=value`` (the value is parsed as YAML, so
``--set train.lr=3e-4`` and ``--set model.channels=[8,16,32]`` both work). The resolved config is saved into every
run directory, checkpoint and report.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from medseg.config.rules import validate_config
from medseg.config.schema import Config
from medseg.errors import MedsegError, fail


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
    _encoder_intensity(cfg, data)
    validate_config(cfg, source, overridden={item.split("=", 1)[0].strip() for item in overrides or []})
    return cfg


def _encoder_intensity(cfg: Config, data: dict) -> None:
    """An ImageNet encoder was trained on ImageNet-normalised RGB: feed it the same unless the config says
    otherwise. Set here, the choice is written into the run's config, so inference and export repeat it. (A weight
    file of unknown origin leaves preprocess.intensity as the config has it.)"""
    given = "intensity" in (data.get("preprocess") or {})
    if cfg.model.pretrained == "imagenet" and not given and cfg.data.spatial_dims == 2:
        cfg.preprocess.intensity = "imagenet"


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
    dirs = [Path.cwd() / "configs", Path(__file__).resolve().parents[2] / "configs"]
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


_recipe_sources: list[Callable[[], Iterable[str]]] = []


def add_recipe_names(source: Callable[[], Iterable[str]]) -> None:
    """Let the names ``source()`` returns load as configs without a YAML file of their own.

    The data layer passes its recipe registry here, so a recipe registered in code (a user's own) loads by name
    from the defaults; the config layer itself knows no recipe."""
    if source not in _recipe_sources:
        _recipe_sources.append(source)


def _recipe_names() -> set[str]:
    return {name for source in _recipe_sources for name in source()}


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a recipe name (``ph2``) or a YAML path and apply ``--set`` overrides.

    A data recipe without a config file of its own is built from the defaults with ``data.recipe`` set to it."""
    try:
        path = resolve_config_path(name_or_path)
    except MedsegError:
        if name_or_path not in _recipe_names():
            raise
        data = apply_overrides({"name": name_or_path, "data": {"recipe": name_or_path}}, overrides)
        return config_from_dict(data, source=f"recipe '{name_or_path}' defaults", overrides=overrides)
    data = apply_overrides(load_yaml(path), overrides)
    data.setdefault("name", path.stem)
    return config_from_dict(data, source=str(path), overrides=overrides)


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))
