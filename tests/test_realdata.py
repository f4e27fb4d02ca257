"""Loaders and training on the real files in ../shared/data (skipped when absent)."""

import numpy as np
import pytest

from medseg.api import check_from_cli
from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.data import load_samples
from medseg.data.lgg import group_by_volume, stack_patient
from medseg.engine.train import train
from medseg.inference.infer import infer

from .conftest import pdf_text, shared

pytestmark = pytest.mark.realdata


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
    _name, slices = next(iter(vols.items()))
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


@pytest.fixture(scope="module")
def ph2_model(tmp_path_factory):
    cfg = load_config(
        "ph2",
        [
            "train.epochs=1",
            "train.max_steps_per_epoch=2",
            "preprocess.spatial_size=[96,128]",
            "data.split.val_fraction=0.05",
        ],
    )
    out = tmp_path_factory.mktemp("ph2") / "run"
    res = train(cfg, shared("ph2"), out, progress=False)
    assert res.epochs_run == 1
    return out / "best.pt"


@pytest.fixture(scope="module")
def lgg_model(tmp_path_factory):
    cfg = load_config(
        "lgg",
        [
            "train.epochs=1",
            "train.max_steps_per_epoch=2",
            "preprocess.spatial_size=[64,64]",
            "data.split.val_fraction=0.1",
        ],
    )
    out = tmp_path_factory.mktemp("lgg") / "run"
    train(cfg, shared("lgg"), out, progress=False)
    return out / "best.pt"


@pytest.fixture(scope="module")
def brats_model(tmp_path_factory):
    cfg = load_config(
        "brats",
        ["train.epochs=1", "preprocess.spacing=[4,4,4]", "train.patch_size=[32,32,32]", "infer.roi_size=[32,32,32]"],
    )
    out = tmp_path_factory.mktemp("brats") / "run"
    res = train(cfg, shared("brats"), out, progress=False)
    assert np.isfinite(res.history[0]["train_loss"])
    return out / "best.pt"


@pytest.fixture(scope="module")
def radiomics_model(tmp_path_factory):
    """A 1-channel 3D model trained for one epoch on the pyradiomics NRRD pairs (for geometry checks)."""
    cfg = load_config(
        "brats",
        [
            "data.recipe=nifti",
            "data.labels=[background,lesion]",
            "data.channels=[mr]",
            "preprocess.spacing=[3,3,6]",
            "train.patch_size=[32,32,16]",
            "infer.roi_size=[32,32,16]",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "train.epochs=1",
            "data.split.use_predefined=false",
            "data.split.val_fraction=0.34",
        ],
    )
    out = tmp_path_factory.mktemp("rad") / "run"
    train(cfg, shared("volumes/pyradiomics"), out, progress=False)
    return out / "best.pt"


@pytest.mark.slow
def test_train_ph2_real(ph2_model):
    ck = load_checkpoint(ph2_model)
    assert ck["data"]["n_train"] + ck["data"]["n_val"] == 150


@pytest.mark.slow
def test_train_lgg_real_patient_split(lgg_model):
    split = load_checkpoint(lgg_model)["split"]
    pts = lambda ids: {"_".join(i.split("_")[:3]) for i in ids}
    assert pts(split["train"]).isdisjoint(pts(split["val"])) and len(pts(split["val"])) == 2


@pytest.mark.slow
def test_train_brats_real(brats_model):
    assert set(load_checkpoint(brats_model)["split"]["val"]) == {"brats_2013_pat0003_1", "brats_2013_pat0004_1"}


@pytest.mark.slow
def test_infer_real_brats_case_folder(brats_model, tmp_path):
    import nibabel as nib

    case = shared("brats") / "validation" / "brats_2013_pat0003_1"
    res = infer([str(case)], model=[str(brats_model)], out=tmp_path, progress=False).outputs[0]
    assert [p.split("/")[-1] for p in res["input"]] == ["Flair_subtrMeanDivStd.nii.gz", "T1c_subtrMeanDivStd.nii.gz"]
    seg, ref = nib.load(res["segmentation"]), nib.load(str(case / "Flair_subtrMeanDivStd.nii.gz"))
    assert seg.shape == ref.shape and np.allclose(seg.affine, ref.affine)
    assert set(res["classes"]) == {"necrosis", "oedema", "non_enhancing", "enhancing"}


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    [
        "pyradiomics/brain1_image.nrrd",
        "pyradiomics/breast1_image.nrrd",
        "totalsegmentator/example_ct_sm.nii.gz",
        "totalsegmentator/example_mr_sm.nii.gz",
    ],
)
def test_infer_real_volume_geometry(radiomics_model, tmp_path, name):
    import nibabel as nib
    import SimpleITK as sitk

    src = shared("volumes") / name
    res = infer([str(src)], model=[str(radiomics_model)], out=tmp_path, progress=False).outputs[0]
    a, b = sitk.ReadImage(str(src)), sitk.ReadImage(res["segmentation"])
    assert a.GetSize() == b.GetSize()
    assert np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-6) and np.allclose(
        a.GetOrigin(), b.GetOrigin(), atol=1e-4
    )
    assert np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-6)
    if name.endswith(".nii.gz"):
        x, y = nib.load(str(src)), nib.load(res["segmentation"])
        assert np.allclose(x.affine, y.affine)
        for code in ("qform_code", "sform_code"):
            assert int(x.header[code]) == int(y.header[code])


@pytest.mark.slow
def test_infer_real_2d(ph2_model, lgg_model, tmp_path):
    from PIL import Image

    ph2 = load_samples("ph2", shared("ph2")).samples
    jpg = next(s["image"] for s in ph2 if s["image"].endswith(".jpg"))
    bmp = next(s["image"] for s in ph2 if s["image"].endswith(".bmp"))
    infer([jpg, bmp], model=[str(ph2_model)], out=tmp_path / "ph2", progress=False)
    for src in (jpg, bmp):
        stem = src.rsplit("/", 1)[1].rsplit(".", 1)[0]
        assert Image.open(tmp_path / "ph2" / f"{stem}_seg.png").size == Image.open(src).size
    lgg = load_samples("lgg", shared("lgg")).samples[10]["image"]
    res = infer([lgg], model=[str(lgg_model)], out=tmp_path / "lgg", progress=False).outputs[0]
    assert Image.open(res["segmentation"]).size == (256, 256)


@pytest.mark.slow
def test_evaluate_and_report_real(ph2_model, lgg_model, brats_model, tmp_path):
    import pandas as pd

    from medseg.evaluation.evaluate import evaluate_model
    from medseg.reporting.case_report import case_report
    from medseg.reporting.cohort_report import cohort_report
    from medseg.reporting.figures import EvaluationFigures
    from medseg.reporting.pdf import fmt

    ph2 = evaluate_model(ph2_model, "ph2", shared("ph2"), tmp_path / "ph2", split="val", progress=False)
    assert len(ph2.metrics) == load_checkpoint(ph2_model)["data"]["n_val"]
    assert all("diagnosis" in c["meta"] for c in ph2.info["cases"].values())
    lgg = evaluate_model(lgg_model, "lgg", shared("lgg"), tmp_path / "lgg", split="val", progress=False)
    assert lgg.info["per_volume"] and len(lgg.metrics) == 2  # two validation patients, one row each
    brats = evaluate_model(
        brats_model,
        "brats",
        shared("brats"),
        tmp_path / "brats",
        split="val",
        progress=False,
        figures=EvaluationFigures(),
    )
    assert set(brats.metrics["class"]) == {"necrosis", "oedema", "non_enhancing", "enhancing", "all_foreground"}
    pdf = cohort_report(tmp_path / "brats")
    text = pdf_text(pdf)
    s = pd.read_csv(tmp_path / "brats" / "summary.csv")
    d = s[(s["class"] == "all_foreground") & (s["metric"] == "dice")].iloc[0]
    assert f"{fmt(d['mean'])} ± {fmt(d['std'])}" in text
    case = next(iter(ph2.info["cases"].values()))
    res = infer([case["image"]], model=[str(ph2_model)], out=tmp_path / "inf", progress=False).outputs[0]
    assert "diagnosis" in res["metadata"]  # looked up from PH2_dataset.txt
    single = case_report(res["findings_json"], gt=case["ground_truth"], out=tmp_path / "case.pdf")
    text = pdf_text(single)
    assert "Reference (PH2 annotation)" in text and "Agreement with ground truth" in text
