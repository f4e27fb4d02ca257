import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medseg.errors import MedsegError
from medseg.evaluation.evaluate import evaluate_folders
from medseg.evaluation.metrics import case_metrics
from medseg.reporting.case_report import case_report
from medseg.reporting.cohort_report import cohort_report
from medseg.reporting.figures import EvaluationFigures
from medseg.reporting.pdf import fmt
from tests.conftest import pdf_text


def _masks(tmp_path, n=4):
    rng = np.random.default_rng(0)
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    (tmp_path / "img").mkdir()
    truth = {}
    for i in range(n):
        g = np.zeros((30, 40), np.uint8)
        p = np.zeros((30, 40), np.uint8)
        r, c = rng.integers(5, 15, 2)
        g[r : r + 10, c : c + 12] = 255
        p[r + i : r + 10 + i, c : c + 12] = 255  # shifted by i rows: Dice falls with i
        Image.fromarray(g).save(tmp_path / "gt" / f"case{i}_mask.png")
        Image.fromarray(p).save(tmp_path / "pred" / f"case{i}_seg.png")
        Image.fromarray(rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)).save(tmp_path / "img" / f"case{i}.png")
        truth[f"case{i}"] = (p > 0, g > 0)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(tmp_path / "pred" / "orphan_seg.png")
    return truth


def test_evaluate_folders_tables(tmp_path, log_lines):
    truth = _masks(tmp_path)
    res = evaluate_folders(
        tmp_path / "pred",
        tmp_path / "gt",
        tmp_path / "ev",
        images=tmp_path / "img",
        progress=False,
        figures=EvaluationFigures(),
    )
    df = pd.read_csv(tmp_path / "ev" / "metrics.csv")
    assert list(df.columns[:4]) == ["case_id", "class", "dice", "jaccard"]
    # PNG masks carry no pixel spacing: distances are in px, and named so
    assert {"hd95_px", "assd_px", "gt_size", "pred_size", "lesions_gt", "lesions_pred", "lesions_detected"} <= set(
        df.columns
    )
    for cid, (p, g) in truth.items():
        row = df[df["case_id"] == cid].iloc[0]
        assert row["dice"] == pytest.approx(case_metrics(p, g, (1, 1))["dice"], abs=1e-5)
    assert df[df["case_id"] == "case0"]["dice"].iloc[0] == pytest.approx(1.0)
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv")
    dice = summary[(summary["metric"] == "dice")].iloc[0]
    assert dice["mean"] == pytest.approx(df["dice"].mean(), abs=1e-5) and dice["n"] == 4
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert info["predictions_without_gt"] == ["orphan"]  # reported, not silently dropped
    assert any(s.startswith("warning: 1 predictions have no ground truth") and "orphan" in s for s in log_lines)
    assert info["ranked"]["best"] == "case0" and info["ranked"]["worst"] == "case3"
    for f in ("boxplots.png", "dice_vs_size.png"):
        assert (tmp_path / "ev" / f).stat().st_size > 1000
    assert res.info["cases"]["case0"]["overlay"].endswith("case0.png")
    assert sorted(p.name for p in (tmp_path / "ev" / "overlays").glob("*.png")) == [f"case{i}.png" for i in range(4)]
    with pytest.raises(MedsegError, match="already holds an evaluation"):
        evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", progress=False)


def test_evaluate_shape_and_geometry_mismatch(tmp_path):
    for d in ("p", "g", "p2", "g2"):
        (tmp_path / d).mkdir()
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), str(tmp_path / "p" / "a_seg.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 5), np.uint8), np.eye(4)), str(tmp_path / "g" / "a.nii.gz"))
    with pytest.raises(MedsegError, match=r"a_seg.nii.gz and .*a.nii.gz: shapes differ"):
        evaluate_folders(tmp_path / "p", tmp_path / "g", tmp_path / "o", progress=False)
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.eye(4)), str(tmp_path / "p2" / "a_seg.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), np.uint8), np.diag([2, 1, 1, 1.0])), str(tmp_path / "g2" / "a.nii.gz"))
    with pytest.raises(MedsegError, match="geometry differs"):
        evaluate_folders(tmp_path / "p2", tmp_path / "g2", tmp_path / "o2", progress=False)


def test_evaluate_multiclass_3d_and_bad_labels(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    g = np.zeros((10, 10, 6), np.uint8)
    g[2:5, 2:5, 1:3] = 1
    g[6:9, 6:9, 2:5] = 2
    p = g.copy()
    p[6:9, 6:9, 4] = 0
    aff = np.diag([0.8, 0.8, 2.5, 1])
    nib.save(nib.Nifti1Image(g, aff), str(tmp_path / "g" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(p, aff), str(tmp_path / "p" / "v_seg.nii.gz"))
    res = evaluate_folders(
        tmp_path / "p",
        tmp_path / "g",
        tmp_path / "o",
        labels=["background", "core", "edema"],
        progress=False,
    )
    df = res.metrics.set_index("class")
    assert df.loc["core", "dice"] == pytest.approx(1.0)
    assert df.loc["edema", "dice"] == pytest.approx(2 * 18 / (18 + 27))
    assert df.loc["edema", "gt_size"] == pytest.approx(27 * 0.8 * 0.8 * 2.5 / 1000)
    assert "all_foreground" in df.index
    lesions = pd.read_csv(tmp_path / "o" / "lesions.csv").set_index(["class", "iou"])
    assert lesions.loc[("edema", 0.5), "tp"] == 1  # 18 of its 27 voxels found: IoU 2/3
    assert lesions.loc[("all_foreground", 0.1), "lesions_true"] == 2 and lesions.loc[("core", 0.1), "recall"] == 1
    assert lesions["ap"].isna().all()  # masks alone cannot rank their lesions
    assert res.info["lesion_detection"]["ranked_by_probability"] is False
    with pytest.raises(MedsegError, match=r"label values \[1, 2\] are outside"):
        evaluate_folders(tmp_path / "p", tmp_path / "g", tmp_path / "o2", labels=["background", "core"], progress=False)


def test_cohort_pdf_numbers_match_csv(tmp_path):
    _masks(tmp_path)
    evaluate_folders(
        tmp_path / "pred",
        tmp_path / "gt",
        tmp_path / "ev",
        images=tmp_path / "img",
        progress=False,
        figures=EvaluationFigures(),
    )
    pdf = cohort_report(tmp_path / "ev")
    assert pdf.parent.name == "reports"
    text = pdf_text(pdf)
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv")
    dice = summary[summary["metric"] == "dice"].iloc[0]
    assert f"{fmt(dice['mean'])} ± {fmt(dice['std'])}" in text
    assert f"{fmt(dice['ci95_low'])} - {fmt(dice['ci95_high'])}" in text
    for _, r in pd.read_csv(tmp_path / "ev" / "metrics.csv").iterrows():
        assert f"{r['case_id']} lesion {fmt(r['dice'])} {fmt(r['jaccard'])}" in text
    assert "Page 1" in text and "not a diagnosis" in text
    # every lesion overlaps its prediction by IoU 7/13 or more: all four found at 0.1 and 0.5, none false; masks
    # without probabilities cannot be ranked
    assert "Lesion-wise detection" in text and "cannot be ranked" in text
    for iou in ("0.1", "0.5"):
        assert f"lesion {iou} 4 4 0 0 1.000 1.000 n/a n/a n/a" in text
    with pytest.raises(MedsegError, match="already exists"):
        cohort_report(tmp_path / "ev")
    # a moved evaluation folder reports the plots beside its own metrics.csv, not the paths eval.json was written with
    n_images = pdf.read_bytes().count(b"/Subtype /Image")
    assert n_images >= 2
    (tmp_path / "ev").rename(tmp_path / "moved")
    moved = cohort_report(tmp_path / "moved", out=tmp_path / "moved.pdf")
    assert moved.read_bytes().count(b"/Subtype /Image") == n_images


def test_case_pdf_numbers_match_findings(tmp_path):
    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.engine.train import train
    from medseg.inference.infer import infer

    data = synthetic.make_folder_2d(tmp_path / "d", n=6, size=(32, 48))
    cfg = load_config(
        "demo",
        [
            "data.recipe=folder",
            "preprocess.spatial_size=[32,48]",
            "train.epochs=2",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
        ],
    )
    train(cfg, data, tmp_path / "run", progress=False)
    res = infer(
        [str(data / "images" / "case_000.png")],
        model=[str(tmp_path / "run" / "best.pt")],
        out=tmp_path / "inf",
        progress=False,
    ).outputs[0]
    pdf = case_report(res["findings_json"], gt=data / "masks" / "case_000_mask.png")
    assert pdf.parent.name == "reports"
    text = pdf_text(pdf)
    f = json.loads(Path(res["findings_json"]).read_text())
    c = f["classes"]["lesion"]
    assert f"lesion {c['n_lesions']} {c['total_px2']} {c['lesions'][0]['size_px2']}" in text  # no pixel spacing: px²
    assert "case_000.png" in text and "Agreement with ground truth" in text and "Model card" in text
    assert f["models"][0]["sha256_12"] in text


def test_volume_views_pick_lesion_slices_and_skip_strips_for_stacks():
    from medseg.reporting.overlays import _views

    vol = np.zeros((32, 32, 10), np.float32)
    gt = np.zeros_like(vol, dtype=np.uint8)
    for z, n in ((2, 4), (5, 9), (7, 2)):  # lesion area per slice: 16, 81, 4 pixels
        gt[10 : 10 + n, 10 : 10 + n, z] = 1
    full = _views(vol, gt, None, (1.0, 1.0, 3.0))
    assert [p[3] for p in full] == [
        "axial z=2",
        "axial z=5",
        "axial z=7",
        "sagittal x=14",
        "coronal y=14",
    ]  # centre of the 9x9 block
    assert full[3][4] == (3.0, 1.0)  # through-plane panels carry the slice thickness for the aspect ratio
    stack = _views(vol, gt, None, (1.0, 1.0, 1.0), n_axial=2, through_plane=False)
    assert [p[3] for p in stack] == ["axial z=2", "axial z=5"]  # the two largest, in slice order
    pred = gt.copy()
    pred[0:3, 0:3, 8] = 1  # a false lesion three slices below the last true one
    pred[10:12, 10:12, 7] = 0  # a missed lesion (false negatives only on this slice)
    err = _views(vol, gt, pred, (1.0, 1.0, 1.0), n_axial=2, through_plane=False)
    assert [p[3] for p in err] == [
        "axial z=2",
        "axial z=5",
        "axial z=7, most false negative",
        "axial z=8, most false positive",
    ]
    assert err[3][2].sum() == 9 and err[3][1].sum() == 0  # the panel carries that slice's prediction and truth


def test_2d_sizes_without_pixel_spacing_are_in_pixels(tmp_path):
    _masks(tmp_path)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", progress=False)
    assert res.info["spacing_known"] is False and res.info["size_unit"] == "px²" and res.info["length_unit"] == "px"
    pdf = cohort_report(tmp_path / "ev", out=tmp_path / "c.pdf")
    text = pdf_text(pdf)
    assert "carry no pixel spacing: sizes are pixel counts and distances are in pixels" in text
    assert "GT size (px²)" in text and "HD95 (px)" in text and "mm" not in text.split("Per-case results")[1]


def test_log_size_axis_has_short_labels():
    from medseg.reporting.plots import _compact_number

    assert [_compact_number(v) for v in (0.05, 2, 500, 2e4, 1.5e6)] == ["0.05", "2", "500", "20k", "1.5M"]


def test_boundary_is_the_inner_ring_and_not_the_image_edge():
    from medseg.viz import boundary

    m = np.zeros((5, 6), bool)
    m[1:4, 1:5] = True
    ring = m.copy()
    ring[2, 2:4] = False  # the two pixels whose four neighbours are all inside
    assert np.array_equal(boundary(m), ring)
    full = np.ones((3, 3), bool)
    assert not boundary(full).any()  # the image's edge is no outline
    corner = np.zeros((3, 3), bool)
    corner[0, 0] = True
    assert np.array_equal(boundary(corner), corner)


def test_evaluation_without_figures_writes_the_tables_only(tmp_path):
    """Evaluation draws nothing itself: without a figures object it writes metrics.csv, summary.csv and eval.json,
    and eval.json names no picture; a cohort report of that folder still has its tables."""
    _masks(tmp_path)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", images=tmp_path / "img", progress=False)
    assert sorted(p.name for p in (tmp_path / "ev").iterdir()) == [
        "eval.json",
        "lesions.csv",
        "metrics.csv",
        "summary.csv",
    ]
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert "plots" not in info and not any("overlay" in c for c in info["cases"].values())
    assert len(res.metrics) == 4
    text = pdf_text(cohort_report(tmp_path / "ev", out=tmp_path / "c.pdf"))
    assert "Per-case results" in text and "Distribution per class" not in text
