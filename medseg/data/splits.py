"""Deterministic, seeded splits that keep every group (patient) on one side.

Fractions and k-fold folds are drawn per stratum (e.g. PH2 diagnosis) so each
side keeps the class balance. The split is saved as ``split.json`` in the run.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from medseg.config import SplitConfig
from medseg.data.base import Recipe
from medseg.errors import MedsegError


def _strata(samples: list[dict], key: str | None, recipe: Recipe) -> dict[str, list[str]]:
    """Map stratum -> sorted unique groups (a group's stratum is that of its first sample)."""
    out: dict[str, list[str]] = {}
    seen = set()
    for s in samples:
        g = recipe.split_group(s)
        if g in seen:
            continue
        seen.add(g)
        out.setdefault(str(recipe.stratum(s, key)), []).append(g)
    return {k: sorted(v) for k, v in sorted(out.items())}


def make_split(samples: list[dict], cfg: SplitConfig, recipe: Recipe | None = None) -> dict:
    """Return ``{"train": [...], "val": [...], "test": [...]}`` lists of case ids plus how they were made.

    ``recipe`` says which samples stay together (:meth:`Recipe.split_group`) and what they are stratified by
    (:meth:`Recipe.stratum`); without one, a sample's ``group`` and its ``meta[cfg.stratify]``."""
    recipe = recipe or Recipe()
    if cfg.max_train_groups < 0:
        raise MedsegError(
            f"split.max_train_groups={cfg.max_train_groups} must be >= 0; fix: --set data.split.max_train_groups=0"
        )
    subsets = {s.get("subset") for s in samples}
    if cfg.use_predefined and cfg.folds <= 1 and {"train", "val"} <= subsets:
        if cfg.max_train_groups:
            raise MedsegError(
                "split.max_train_groups needs a drawn split, but the data has its own train/val folders; "
                "fix: --set data.split.use_predefined=false"
            )
        out = {k: [s["case_id"] for s in samples if s.get("subset") == k] for k in ("train", "val", "test")}
        out["train"] += [s["case_id"] for s in samples if s.get("subset") is None]
        out["method"] = "predefined folders"
        return out
    rng = np.random.default_rng(cfg.seed)
    strata = _strata(samples, cfg.stratify, recipe)
    n_groups = sum(len(v) for v in strata.values())
    side: dict[str, str] = {}
    if cfg.folds > 1:
        if not 0 <= cfg.fold < cfg.folds:
            raise MedsegError(f"split.fold={cfg.fold} is outside 0..{cfg.folds - 1}; fix: --set data.split.fold=0")
        if n_groups < cfg.folds:
            raise MedsegError(f"{n_groups} groups cannot make {cfg.folds} folds; fix: lower data.split.folds")
        offset = 0
        for groups in strata.values():
            order = [groups[i] for i in rng.permutation(len(groups))]
            for i, g in enumerate(order):
                side[g] = "val" if (i + offset) % cfg.folds == cfg.fold else "train"
            offset += len(order)
        method = f"{cfg.folds}-fold, fold {cfg.fold}"
    else:
        if cfg.val_fraction + cfg.test_fraction >= 1:
            raise MedsegError("split.val_fraction + split.test_fraction must be < 1; fix: lower one of them")
        for groups in strata.values():
            order = [groups[i] for i in rng.permutation(len(groups))]
            n_test = round(len(order) * cfg.test_fraction)
            n_val = round(len(order) * cfg.val_fraction)
            for i, g in enumerate(order):
                side[g] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        if cfg.val_fraction > 0 and "val" not in side.values() and n_groups > 1:
            first_train = next(g for g in sorted(side) if side[g] == "train")
            side[first_train] = "val"
        method = f"random val={cfg.val_fraction} test={cfg.test_fraction}"
    if cfg.max_train_groups:
        # A seeded order of the training groups, independent of the fold's draw, so that the subsets of one fold are
        # nested (the 8 groups of a smaller run are among the 12 of a larger one) and a learning curve adds data only.
        train_groups = sorted(g for g in side if side[g] == "train")
        order = [train_groups[i] for i in np.random.default_rng([cfg.seed, 1]).permutation(len(train_groups))]
        for g in order[cfg.max_train_groups :]:
            side[g] = "unused"
        method += f", {min(cfg.max_train_groups, len(order))} of {len(order)} training groups"
    out = {k: [s["case_id"] for s in samples if side[recipe.split_group(s)] == k] for k in ("train", "val", "test")}
    if cfg.stratify and set(strata) == {"None"}:
        method += f", not stratified (no case has a {cfg.stratify})"
    elif cfg.stratify:
        method += f", stratified by {cfg.stratify}"
    out["method"] = method + f", seed {cfg.seed}"
    if not out["train"]:
        raise MedsegError(
            f"the split left no training cases ({n_groups} groups); fix: add data or lower val/test fractions"
        )
    return out


def select(samples: list[dict], ids: list[str]) -> list[dict]:
    wanted = set(ids)
    return [s for s in samples if s["case_id"] in wanted]


def save_split(split: dict, path: str | Path) -> None:
    Path(path).write_text(json.dumps(split, indent=1))
