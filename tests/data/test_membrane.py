"""The membrane recipe (ISBI 2012 as the Keras U-Net ships it): its twin, the foreground choice, the real slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medseg.api import check_from_cli
from medseg.config import load_config
from medseg.data import get_recipe, load_samples
from medseg.data.synthetic import make_membrane
from medseg.errors import MedsegError
from medseg.io import read_image_2d

from ..conftest import shared


@pytest.fixture()
def twin(tmp_path) -> Path:
    return make_membrane(tmp_path / "membrane", n=6, n_test=2)


def _mask(path) -> np.ndarray:
    m = read_image_2d(path, kind="mask")
    return m[..., 0] if m.ndim == 3 else m


def test_twin_pairs_the_labelled_sections_in_natural_order(twin):
    res = load_samples("membrane", twin)
    assert [s["case_id"] for s in res.samples] == ["0", "1", "2", "3", "4", "5"]
    assert all(Path(s["image"]).parent == twin / "train" / "image" for s in res.samples)
    assert all(Path(s["label_source"]) == twin / "train" / "label" / f"{s['case_id']}.png" for s in res.samples)
    assert res.problems == [] and res.warnings == []


@pytest.mark.parametrize("below", ["", "data", "unet"])
def test_the_keras_repository_above_the_membrane_folder_is_accepted(tmp_path, below):
    """The data directory may be the membrane folder, the Keras repo's data/ or the repo's root."""
    root = tmp_path / "unet"
    make_membrane(root / "data" / "membrane", n=3, n_test=1)
    data_dir = {"": root / "data" / "membrane", "data": root / "data", "unet": root}[below]
    assert len(load_samples("membrane", data_dir).samples) == 3


def test_the_default_foreground_is_the_cell_interior(twin):
    assert get_recipe("membrane").default_options == {"foreground_values": [255]}
    for s in load_samples("membrane", twin).samples:
        raw = _mask(s["label_source"])
        assert set(np.unique(raw)) == {0, 255}
        assert np.array_equal(_mask(s["label"]) > 0, raw == 255)


def test_foreground_values_0_segments_the_membranes(twin):
    cells = load_samples("membrane", twin).samples
    membranes = load_samples("membrane", twin, {"foreground_values": [0]}).samples
    for c, m in zip(cells, membranes):
        raw = _mask(m["label_source"])
        assert np.array_equal(_mask(m["label"]) > 0, raw == 0)
        assert not (_mask(m["label"]) > 0)[_mask(c["label"]) > 0].any()  # the two choices never overlap


def test_a_section_without_label_is_one_problem_naming_it(twin):
    (twin / "train" / "label" / "3.png").unlink()
    with pytest.raises(MedsegError, match=r"3\.png: section has no label; fix: add train/label/3\.png"):
        load_samples("membrane", twin)
    report = check_from_cli("membrane", data_dir=twin)
    assert report["n_cases"] == 5 and len(report["problems"]) == 1


def test_a_folder_without_the_layout_says_what_is_expected(tmp_path):
    (tmp_path / "images").mkdir()
    with pytest.raises(MedsegError, match="no membrane cases found.*train/image/<n>.png and train/label/<n>.png"):
        load_samples("membrane", tmp_path)


def test_datasets_check_reads_the_twin_with_either_foreground(twin):
    cells = check_from_cli("membrane", data_dir=twin)
    membranes = check_from_cli("membrane", data_dir=twin, overrides=["data.options.foreground_values=[0]"])
    assert cells["n_cases"] == 6 and cells["problems"] == [] and cells["empty_masks"] == 0
    assert cells["classes"] == ["background", "cell"]
    assert cells["foreground_fraction_mean"] > 0.8  # Voronoi cells with 1-2 px membranes
    assert cells["foreground_fraction_mean"] + membranes["foreground_fraction_mean"] == pytest.approx(1, abs=1e-4)


def test_the_shipped_config_is_the_keras_augmentation():
    cfg = load_config("membrane")
    a = cfg.augment
    assert (a.rotate_deg, a.scale_range, a.shift_range, a.shear_range) == (0.2, 0.05, 0.05, 0.05)
    assert a.affine_padding == "border" and a.affine_prob == 1.0
    assert cfg.data.options["foreground_values"] == [255] and cfg.preprocess.spatial_size == [512, 512]
    assert cfg.infer.keep_largest is False  # many cells per section


@pytest.mark.realdata
def test_real_membrane_slices():
    root = shared("membrane")
    res = load_samples("membrane", root)
    assert len(res.samples) == 20 and res.problems == []
    assert {s["case_id"] for s in res.samples}.isdisjoint({"2", "4"})  # 20 of the 30: 2 and 4 are not shipped here
    report = check_from_cli("membrane", data_dir=root)
    assert report["problems"] == [] and report["image_sizes"] == {"512x512": 20}
    assert report["label_values_found"] == [0, 255] and report["empty_masks"] == 0
    assert 0.7 < report["foreground_fraction_mean"] < 0.85  # cell interior: about 79% of each section


def test_evaluating_a_model_on_membranes_adds_the_isbi_scores(twin, tmp_path):
    """A one-step model is enough: the columns, not the scores, are under test."""
    from medseg.evaluation.evaluate import evaluate_model

    from ..conftest import csv_rows, train_tiny

    model = train_tiny(
        "membrane",
        twin,
        tmp_path / "run",
        "preprocess.spatial_size=[64,64]",
        "model.deep_supervision=0",
        "train.max_steps_per_epoch=1",
        "infer.tta=false",
    )
    res = evaluate_model(model, "membrane", twin, tmp_path / "ev", split="val", device="cpu", progress=False)
    rows = csv_rows(tmp_path / "ev" / "metrics.csv")
    assert rows and all(0 <= float(r["pixel_error"]) <= 1 and r["rand_error"] != "" for r in rows)
    assert {"pixel_error", "rand_error", "vi_split", "vi_merge"} <= set(res.summary["metric"])
    assert res.info["extra_metrics"] == ["pixel_error", "regions"]
    from medseg.inference.infer import infer

    segmented = infer([str(twin / "test")], model=[str(model)], out=tmp_path / "test", device="cpu", progress=False)
    assert len(segmented.outputs) == 2 and not segmented.failures  # the unlabelled sections, for medseg infer
