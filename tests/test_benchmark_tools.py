"""The benchmark scripts: each medseg name they use exists with the arguments they pass, cv_compare.py and
cv_table.py read what medseg cv writes, and the resize round trip of resize_ceiling.py on masks worked out by hand."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).parents[1] / "benchmarks"


def _load(name: str):
    """A benchmark script as a module, with its folder on sys.path as ``python benchmarks/NAME.py`` has it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(BENCH))
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module


cv_compare = _load("cv_compare")
cv_table = _load("cv_table")
resize_ceiling = _load("resize_ceiling")


def _medseg_names(tree: ast.AST, script: str) -> dict:
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "medseg":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{script}: {node.module} has no {alias.name}"
                names[alias.asname or alias.name] = getattr(module, alias.name)
    return names


@pytest.mark.parametrize("script", sorted(p.name for p in BENCH.glob("*.py")))
def test_benchmarks_call_medseg_as_it_is(script):
    """Scripts import medseg inside their functions, so a renamed function or a dropped keyword would only show
    when someone runs an hour-long benchmark: check both here."""
    source = (BENCH / script).read_text()
    assert "sys.path.insert" not in source  # a script's own folder is on sys.path when it runs
    tree = ast.parse(source)
    names = _medseg_names(tree, script)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in names):
            continue
        params = inspect.signature(names[node.func.id]).parameters
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
            continue
        for kw in node.keywords:
            assert kw.arg is None or kw.arg in params, f"{script}:{node.lineno}: {node.func.id}() takes no {kw.arg}="


def _fold_runs(root: Path, folds: dict[int, dict[str, float]]) -> Path:
    for fold, scores in folds.items():
        d = root / f"fold{fold}" / "eval-last"
        d.mkdir(parents=True)
        rows = ["case_id,class,dice"] + [f"{case},tumour,{dice}" for case, dice in scores.items()]
        (d / "metrics.csv").write_text("\n".join(rows) + "\n")
    return root


def test_cv_compare_prints_the_lever_and_the_noise_floor(tmp_path, capsys):
    b0 = _fold_runs(tmp_path / "b0", {0: {"a": 0.5, "b": 0.8}, 1: {"c": 0.6}})
    b1 = _fold_runs(tmp_path / "b1", {0: {"a": 0.7, "b": 0.8}, 1: {"c": 0.6}})
    l0 = _fold_runs(tmp_path / "l0", {0: {"a": 0.6, "b": 0.7}, 1: {"c": 0.9}})
    l1 = _fold_runs(tmp_path / "l1", {0: {"a": 0.8, "b": 0.7}, 1: {"c": 0.7}})
    lever, noise = cv_compare.main(["--base", str(b0), str(b1), "--lever", str(l0), str(l1), "--boot", "2000"])
    out, err = capsys.readouterr()
    printed = [json.loads(x) for x in out.splitlines()]
    assert [p["metric"] for p in printed] == ["dice: lever - default", "dice: default, second seed - first seed"]
    assert printed[0]["mean_diff"] == lever["mean_diff"] == pytest.approx(0.2 / 3, abs=1e-4)
    assert noise["mean_diff"] == pytest.approx(0.2 / 3, abs=1e-4)
    assert "lever - default: 3 cases, 0.6667 -> 0.7333 (+0.0667" in err
    with pytest.raises(SystemExit, match="^error: .*one run per base run"):
        cv_compare.main(["--base", str(b0), str(b1), "--lever", str(l0)])


def test_cv_table_reads_both_cv_json_layouts(tmp_path):
    fold = {"dice": 0.9, "jaccard": 0.8, "dice_best_pt": None, "train_minutes": 5.0}
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"setup": {}, "folds": {"0": fold, "1": {**fold, "dice": 0.8}}}))
    old = tmp_path / "old.json"  # written by the benchmark scripts before medseg cv
    old.write_text(json.dumps({"0": fold, "1": {**fold, "dice": 0.8}}))
    assert cv_table.table(new) == cv_table.table(old)
    assert "| **mean** | **0.8500** | **0.8000** | - | 5.0 |" in cv_table.table(new)


def test_resize_round_trip_keeps_an_aligned_half_and_loses_a_lone_pixel():
    half = np.zeros((8, 8), bool)
    half[:, :4] = True  # 8x8 -> 2x2 by area is [[1, 0], [1, 0]]; bilinear back puts 0.625 at column 3, 0.375 at 4
    assert np.array_equal(resize_ceiling.round_trip(half, (2, 2)), half)
    dot = np.zeros((8, 8), bool)
    dot[5, 2] = True  # averages to 1/16 in its 4x4 block: nothing comes back above 0.5
    assert not resize_ceiling.round_trip(dot, (2, 2)).any()
    assert np.array_equal(resize_ceiling.round_trip(dot, (8, 8)), dot)


def test_resize_ceiling_pools_the_slices_of_a_volume(tmp_path):
    from PIL import Image

    masks = {"s1": np.zeros((8, 8), np.uint8), "s2": np.zeros((8, 8), np.uint8), "solo": np.zeros((8, 8), np.uint8)}
    masks["s1"][:, :4] = 255  # 32 pixels, kept whole
    masks["s2"][1, 1] = 255  # 1 pixel, lost
    masks["solo"][6, 6] = 255
    samples = []
    for name, m in masks.items():
        Image.fromarray(m).save(tmp_path / f"{name}.png")
        s = {"label": str(tmp_path / f"{name}.png"), "case_id": name}
        if name != "solo":
            s["volume_id"] = "patient"
        samples.append(s)
    d = resize_ceiling.ceiling(samples, (2, 2))
    assert d["patient"] == pytest.approx(2 * 32 / (2 * 32 + 1))  # tp 32, fn 1 over both slices
    assert d["solo"] == 0.0
