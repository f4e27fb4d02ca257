"""The instance task end to end on a synthetic Data Science Bowl twin: train, infer (16-bit instance map in the
image's own size, per-object CSV and findings) and evaluate (object-wise scores)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medseg.data import synthetic
from medseg.data.loading import LoadImage2Dd
from medseg.errors import MedsegError

from ..conftest import csv_rows, pdf_text, schema_valid, train_tiny

INSTANCE_RUN = ["data.task=instances", "train.epochs=3", "preprocess.spatial_size=[48,48]", "model.deep_supervision=0"]


@pytest.fixture(scope="module")
def nuclei_dir(tmp_path_factory):
    return synthetic.make_nuclei(tmp_path_factory.mktemp("nuclei"), n=8, sizes=((40, 48), (56, 40)))


@pytest.fixture(scope="module")
def instance_model(nuclei_dir, tmp_path_factory):
    return train_tiny("nuclei", nuclei_dir, tmp_path_factory.mktemp("run"), *INSTANCE_RUN)


def test_the_loader_keeps_object_ids_and_refuses_negative_ones(tmp_path):
    img, lab = tmp_path / "a.png", tmp_path / "a_mask.tif"
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(img)
    ids = np.zeros((4, 5), np.int32)
    ids[1, 1], ids[2, 3] = 300, 7
    Image.fromarray(ids).save(lab)
    out = LoadImage2Dd(3, 2, instances=True)({"image": str(img), "label": str(lab)})
    assert sorted(np.unique(out["label"]).tolist()) == [0, 7, 300]
    ids[0, 0] = -1
    Image.fromarray(ids).save(lab)
    with pytest.raises(MedsegError, match="a_mask.tif: instance map has negative or non-integer values"):
        LoadImage2Dd(3, 2, instances=True)({"image": str(img), "label": str(lab)})


@pytest.mark.slow
def test_infer_writes_a_16_bit_instance_map_objects_csv_and_findings(instance_model, nuclei_dir, tmp_path):
    from medseg.inference.infer import infer

    image = next((nuclei_dir / "stage1_train").glob("*/images/*.png"))
    summary = infer([str(image)], model=[str(instance_model)], out=tmp_path / "out", progress=False)
    res = summary.outputs[0]
    seg = np.array(Image.open(res["segmentation"]))
    assert seg.shape == np.array(Image.open(image)).shape[:2]  # the image's own size, not the training size
    assert Image.open(res["segmentation"]).mode.startswith("I;16")
    found = schema_valid("findings", res["findings_json"])
    objects = found["objects"]
    ids = sorted(int(v) for v in np.unique(seg) if v)
    assert [o["id"] for o in objects] == ids == list(range(1, len(ids) + 1))
    assert all(o["voxels"] == int((seg == o["id"]).sum()) for o in objects)
    assert found["classes"]["nucleus"]["n_lesions"] == len(ids) and found["unit"] == "px2"
    table = tmp_path / "out" / f"{res['case_id']}_objects.csv"
    assert [int(r["id"]) for r in csv_rows(table)] == ids
    header = table.read_text().splitlines()[0].split(",")
    assert header[:4] == ["id", "class", "size_px2", "max_diameter_px"] and header[-1] == "score"
    assert "centroid_row_px" in header and "bbox_max_col_px" in header
    assert not (tmp_path / "out" / "labels.ctbl").exists()  # ids are objects, not classes a table could name


def test_patches_at_full_resolution_train_validate_and_segment_images_of_any_size(nuclei_dir, tmp_path):
    """Trained on 32x32 patches cut from the images as they are (no resize), validated and applied by sliding
    windows over each whole image: the instance map has the image's size."""
    from medseg.inference.infer import infer

    patches = ["preprocess.spatial_size=null", "train.patch_size=[32,32]", "train.val_every=1"]
    model = train_tiny("nuclei", nuclei_dir, tmp_path / "run", *INSTANCE_RUN, *patches)
    history = csv_rows(tmp_path / "run" / "history.csv")
    assert all(r["val_mean_dice"] not in ("", None) for r in history)  # validated on whole images of two sizes
    image = next((nuclei_dir / "stage1_train").glob("*/images/*.png"))
    res = infer([str(image)], model=[str(model)], out=tmp_path / "out", progress=False).outputs[0]
    assert np.array(Image.open(res["segmentation"])).shape == np.array(Image.open(image)).shape[:2]
    with pytest.raises(MedsegError, match=r"training images differ in size: .* fix: set preprocess.spatial_size") as e:
        train_tiny("nuclei", nuclei_dir, tmp_path / "run2", *INSTANCE_RUN, "preprocess.spatial_size=null")
    assert "40x48 (" in str(e.value) and "56x40 (" in str(e.value)  # each size with a file that has it


@pytest.mark.slow
def test_evaluate_scores_objects_and_writes_instances_csv(instance_model, nuclei_dir, tmp_path):
    from medseg.evaluation.evaluate import evaluate_model
    from medseg.reporting.cohort_report import cohort_report
    from medseg.reporting.figures import EvaluationFigures

    ev = evaluate_model(
        instance_model, "nuclei", nuclei_dir, tmp_path / "ev", split="all", progress=False, figures=EvaluationFigures()
    )
    inst = ev.info["instances"]
    rows = csv_rows(tmp_path / "ev" / "instances.csv")
    assert len(rows) == inst["cases"] == 8
    assert inst["objects_true"] == sum(int(r["n_true"]) for r in rows)
    assert 0.0 <= inst["dsb_mean"] <= 1.0 and inst["ranked_by_probability"]
    lesions = csv_rows(tmp_path / "ev" / "lesions.csv")
    assert int(lesions[0]["lesions_true"]) == inst["objects_true"]  # the objects themselves, not components
    assert Path(ev.info["plots"]["pr_curve"]).is_file()
    text = pdf_text(cohort_report(tmp_path / "ev", tmp_path / "cohort.pdf"))
    assert "DSB 2018" in text and "Object-wise detection" in text and "Precision-recall of the objects" in text


def test_folders_of_instance_maps_are_scored_and_ranked_by_the_objects_csv(tmp_path):
    from medseg.evaluation.evaluate import evaluate_folders

    truth = np.zeros((10, 12), np.uint16)
    truth[1:4, 1:4], truth[6:9, 6:9], truth[1:4, 8:11] = 1, 2, 3
    pred = np.where(truth == 3, 0, truth).astype(np.uint16)  # the third object missed
    pred[7, 1] = 5  # and a one-pixel false object
    for d in ("gt", "pred"):
        (tmp_path / d).mkdir()
    Image.fromarray(truth).save(tmp_path / "gt" / "a.png")
    Image.fromarray(pred).save(tmp_path / "pred" / "a_seg.png")
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", instances=True, progress=False)
    inst = ev.info["instances"]
    assert (inst["objects_true"], inst["objects_pred"], inst["count_error_mean"]) == (3, 3, 0.0)
    assert inst["dsb_mean"] == pytest.approx(2 / 4)  # TP 2, FP 1, FN 1 at every threshold
    assert not inst["ranked_by_probability"] and np.isnan(inst["ap50"])
    # the false object scored lowest: ranked, AP50 = precision 1 up to recall 2/3 (67 of 101 steps)
    (tmp_path / "pred" / "a_objects.csv").write_text("id,score\n1,0.9\n2,0.8\n5,0.1\n")
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", instances=True, force=True,
                          progress=False)  # fmt: skip
    assert ev.info["instances"]["ap50"] == pytest.approx(67 / 101)
    assert ev.info["instances"]["ranked_by_probability"]
    # a table that leaves an object out would rank it first: the objects go unranked instead
    (tmp_path / "pred" / "a_objects.csv").write_text("id,score\n1,0.9\n2,0.8\n")
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", instances=True, force=True,
                          progress=False)  # fmt: skip
    assert not ev.info["instances"]["ranked_by_probability"]


def test_a_binary_mask_given_as_instances_is_warned_about(log_lines):
    from medseg.evaluation.instance_cohort import InstanceCohort

    gt = np.zeros((6, 6), np.uint8)
    gt[0:2, 0:2], gt[4:6, 4:6] = 255, 255  # two regions, one value
    InstanceCohort("nucleus").add("a", gt, gt, None)
    assert any("one value for several separate regions" in line for line in log_lines)


@pytest.mark.slow
def test_mask_rcnn_trains_through_the_engine_and_writes_the_same_outputs(nuclei_dir, tmp_path):
    from medseg.inference.infer import infer

    run = ["data.task=instances", "model.name=maskrcnn", "model.deep_supervision=0", "train.lr=0.0003"]
    model = train_tiny("nuclei", nuclei_dir, tmp_path / "run", *run, "preprocess.spatial_size=[64,64]")
    image = next((nuclei_dir / "stage1_train").glob("*/images/*.png"))
    res = infer([str(image)], model=[str(model)], out=tmp_path / "out", progress=False).outputs[0]
    seg = Image.open(res["segmentation"])
    assert seg.mode.startswith("I;16") and seg.size == Image.open(image).size
    assert (tmp_path / "out" / f"{res['case_id']}_objects.csv").is_file()
    assert "maskrcnn" in json.loads(Path(res["findings_json"]).read_text())["models"][0]["description"]


def test_instance_volumes_are_scored_in_3d_with_their_spacing(tmp_path):
    import nibabel as nib

    from medseg.evaluation.evaluate import evaluate_folders
    from medseg.reporting.figures import EvaluationFigures

    truth = np.zeros((12, 12, 8), np.uint16)
    truth[1:5, 1:5, 1:5], truth[6:10, 6:10, 2:6] = 1, 2  # two cubes of 64 voxels
    pred = truth.copy()
    pred[6:10, 6:10, 2:6] = 0  # the second one missed
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    for d, arr in (("gt", truth), ("pred", pred)):
        (tmp_path / d).mkdir()
        nib.save(nib.Nifti1Image(arr, affine), tmp_path / d / ("v_seg.nii.gz" if d == "pred" else "v.nii.gz"))
    ev = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", instances=True, progress=False,
                          figures=EvaluationFigures())  # fmt: skip
    inst = ev.info["instances"]
    assert (inst["objects_true"], inst["objects_pred"], inst["dsb_mean"]) == (2, 1, 0.5)
    row = ev.metrics.iloc[0]
    # 128 voxels of 2 x 2 x 3 mm: 1.536 mL, to 3 significant figures
    assert row["gt_size"] == pytest.approx(1.54) and ev.info["size_unit"] == "mL"
    assert Path(ev.info["cases"]["v"]["overlay"]).is_file()
