"""Loaders and training on the real files in ../shared/data (skipped when absent)."""

import numpy as np
import pytest

from medseg.api import check_from_cli
from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.data import load_samples
from medseg.data.lgg import group_by_volume, stack_patient
from medseg.train import train

from .conftest import shared

pytestmark = pytest.mark.realdata


def _quiet(*_a, **_k):
    pass


def test_ph2_real_layout():
    root = shared("ph2")
    res = load_samples("ph2", root)
    assert len(res.samples) == 150
    assert {s["image"].rsplit(".", 1)[1].lower() for s in res.samples} == {"bmp", "jpg"}
    assert sum(s["meta"]["diagnosis"] == 2 for s in res.samples) > 0
    assert any("no images on disk" in w for w in res.warnings)


def test_ph2_real_check_reads_every_file():
    report = check_from_cli("ph2", data_dir=shared("ph2"))
    assert report["n_cases"] == 150 and report["problems"] == []
    assert report["empty_masks"] == 0 and 0.05 < report["foreground_fraction_mean"] < 0.8


def test_lgg_real_layout_and_stacking():
    res = load_samples("lgg", shared("lgg"))
    vols = group_by_volume(res.samples)
    assert len(vols) == 20
    name, slices = next(iter(vols.items()))
    idx = [s["slice_index"] for s in slices]
    assert idx == sorted(idx) and idx[0] == 1
    img, mask = stack_patient(slices)
    assert img.shape[:2] == (256, 256) and img.shape[2] == len(slices) and img.shape[3] == 3
    assert mask.any()
    assert "neoplasm_histologic_grade" in slices[0]["meta"]


def test_brats_real_check():
    report = check_from_cli("brats", data_dir=shared("brats"))
    assert report["n_cases"] == 4 and report["problems"] == []
    assert report["label_values_found"] == [0, 1, 2, 3, 4]
    assert report["subsets"] == {"train": 2, "val": 2}


@pytest.mark.slow
def test_train_ph2_real(tmp_path):
    cfg = load_config("ph2", ["train.epochs=1", "train.max_steps_per_epoch=2", "preprocess.spatial_size=[96,128]",
                              "data.split.val_fraction=0.05"])
    res = train(cfg, shared("ph2"), tmp_path / "ph2", progress=False, log=_quiet)
    ck = load_checkpoint(tmp_path / "ph2" / "best.pt")
    assert ck["data"]["n_train"] + ck["data"]["n_val"] == 150 and res.epochs_run == 1


@pytest.mark.slow
def test_train_lgg_real_patient_split(tmp_path):
    cfg = load_config("lgg", ["train.epochs=1", "train.max_steps_per_epoch=2", "preprocess.spatial_size=[64,64]",
                              "data.split.val_fraction=0.1"])
    train(cfg, shared("lgg"), tmp_path / "lgg", progress=False, log=_quiet)
    split = load_checkpoint(tmp_path / "lgg" / "last.pt")["split"]
    pts = lambda ids: {"_".join(i.split("_")[:3]) for i in ids}  # noqa: E731
    assert pts(split["train"]).isdisjoint(pts(split["val"])) and len(pts(split["val"])) == 2


@pytest.mark.slow
def test_train_brats_real(tmp_path):
    cfg = load_config("brats", ["train.epochs=1", "preprocess.spacing=[4,4,4]", "train.patch_size=[32,32,32]",
                                "infer.roi_size=[32,32,32]"])
    res = train(cfg, shared("brats"), tmp_path / "brats", progress=False, log=_quiet)
    assert np.isfinite(res.history[0]["train_loss"])
    assert set(load_checkpoint(tmp_path / "brats" / "best.pt")["split"]["val"]) == {"brats_2013_pat0003_1", "brats_2013_pat0004_1"}
