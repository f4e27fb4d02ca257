"""Units and evaluation faults: sizes nobody measured (q10) and evaluating a folder the model never saw (q23).

Every case here fails on the code before the fix: 2D images without a pixel spacing were reported in mm (1 mm per
pixel assumed), sizes carried six digits, there was no maximum diameter, and a folder of new cases stopped
evaluation with "use --split all"."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from medseg.errors import MedsegError
from medseg.evaluation.metrics import case_metrics
from medseg.inference.findings import lesion_findings
from medseg.io import Geometry, geometry_2d

LABELS = ["background", "lesion"]


def _block(shape=(30, 30), rows=(2, 12), cols=(3, 7)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    m[rows[0] : rows[1], cols[0] : cols[1]] = 1
    return m


def _lesion(f: dict) -> dict:
    return f["classes"]["lesion"]["lesions"][0]


# ----------------------------------------------------------------------------
# q10: findings in px without a pixel spacing, mm with one; sensible precision; maximum diameter
# ----------------------------------------------------------------------------


def test_q10_findings_without_spacing_are_pixel_counts():
    f = lesion_findings(_block(), geometry_2d("photo.jpg", (30, 30), None), LABELS)
    c = f["classes"]["lesion"]
    assert f["unit"] == "px2" and f["unit_label"] == "px²" and f["length_unit"] == "px" and f["spacing_known"] is False
    assert c["total_px2"] == 40 and isinstance(c["total_px2"], int) and c["largest_px2"] == 40
    assert "px" in f["coordinates"] and "mm" not in f["coordinates"]
    assert not [k for k in json.dumps(f).split('"') if k.endswith(("_mm", "_mm2"))]  # no key claims millimetres


def test_q10_findings_with_configured_spacing_are_mm_to_3_significant_figures():
    m = np.zeros((60, 60), np.uint8)
    m[5:42, 3:40] = 1  # 1369 px at 0.03 mm: 1.2321 mm²
    f = lesion_findings(m, geometry_2d("photo.jpg", (60, 60), [0.03, 0.03]), LABELS)
    assert f["unit"] == "mm2" and f["spacing_known"] is True
    assert f["classes"]["lesion"]["total_mm2"] == 1.23 and _lesion(f)["size_mm2"] == 1.23


def test_q10_volume_sizes_to_3_significant_figures():
    v = np.zeros((20, 20, 20), np.uint8)
    v[1:12, 1:11, 1:13] = 1  # 1320 voxels of 2.1 mm³: 2.772 mL, 2.77 to 3 significant figures
    g = Geometry((20, 20, 20), (1.0, 1.0, 2.1), np.diag([1.0, 1.0, 2.1, 1.0]), "nifti")
    f = lesion_findings(v, g, LABELS)
    assert f["unit"] == "ml" and f["classes"]["lesion"]["total_ml"] == 2.77  # 1320 * 2.1 / 1000 = 2.772


@pytest.mark.parametrize(
    "mask, spacing, expected",
    [
        pytest.param(_block(), None, math.hypot(10, 4), id="q10-diameter-10x4-block"),
        pytest.param(_block(rows=(5, 6), cols=(5, 6)), None, math.sqrt(2), id="q10-diameter-one-pixel"),
        pytest.param(_block(), [0.5, 2.0], math.hypot(10 * 0.5, 4 * 2.0), id="q10-diameter-anisotropic-mm"),
        pytest.param(
            _block(rows=(2, 3), cols=(3, 20)), [0.1, 0.1], math.hypot(0.1, 1.7), id="q10-diameter-thin-line-mm"
        ),
    ],
)
def test_q10_max_diameter_2d(mask, spacing, expected):
    """Pixel-corner convention: a lesion is the union of its pixel squares, so a 10x4 block is sqrt(10² + 4²) across."""
    f = lesion_findings(mask, geometry_2d("x.png", mask.shape, spacing), LABELS)
    key = f"max_diameter_{'mm' if spacing else 'px'}"
    assert _lesion(f)[key] == round(expected, 1)


def test_q10_max_diameter_3d_over_voxel_corners_in_mm():
    v = np.zeros((12, 12, 12), np.uint8)
    v[1:4, 2:6, 3:8] = 1  # 3 x 4 x 5 voxels of 1 x 1 x 2 mm: sqrt(3² + 4² + 10²) mm
    v[9, 9, 9] = 1  # a second, one-voxel lesion: sqrt(1 + 1 + 4) mm
    g = Geometry((12, 12, 12), (1.0, 1.0, 2.0), np.diag([1.0, 1.0, 2.0, 1.0]), "nifti")
    lesions = lesion_findings(v, g, LABELS)["classes"]["lesion"]["lesions"]
    assert [les["max_diameter_mm"] for les in lesions] == [round(math.sqrt(125), 1), round(math.sqrt(6), 1)]


def test_q10_case_metrics_without_spacing_are_in_pixels():
    g = _block(shape=(40, 40), rows=(5, 15), cols=(5, 15)).astype(bool)
    p = np.roll(g, 8, axis=1)
    m = case_metrics(p, g, None)
    assert "hd95_mm" not in m and "assd_mm" not in m
    assert m["hd95_px"] == pytest.approx(8.0) and m["gt_size"] == 100


def _png_masks(root, n=3):
    (root / "pred").mkdir(parents=True)
    (root / "gt").mkdir()
    for i in range(n):
        g = np.zeros((30, 40), np.uint8)
        g[5:15, 5:17] = 255
        Image.fromarray(g).save(root / "gt" / f"case{i}_mask.png")
        Image.fromarray(np.roll(g, i, axis=0)).save(root / "pred" / f"case{i}_seg.png")


def test_q10_evaluate_folders_of_png_masks_reports_pixels(tmp_path):
    from medseg.evaluation.evaluate import evaluate_folders

    _png_masks(tmp_path)
    res = evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", progress=False)
    cols = pd.read_csv(tmp_path / "ev" / "metrics.csv").columns
    assert {"hd95_px", "assd_px"} <= set(cols) and not {"hd95_mm", "assd_mm"} & set(cols)
    summary = pd.read_csv(tmp_path / "ev" / "summary.csv", keep_default_na=False).set_index("metric")
    assert summary.loc["hd95_px", "unit"] == "px" and summary.loc["gt_size", "unit"] == "px²"
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert info["spacing_known"] is False and info["size_unit"] == "px²" and info["length_unit"] == "px"
    assert res.metrics["gt_size"].tolist() == [120.0, 120.0, 120.0]


def test_q10_metrics_csv_volume_sizes_to_3_significant_figures(tmp_path):
    import nibabel as nib

    from medseg.evaluation.evaluate import evaluate_folders

    aff = np.diag([0.7, 0.9, 1.3, 1.0])  # 0.819 mm³ voxels
    gt = np.zeros((20, 20, 20), np.uint8)
    gt[2:13, 2:14, 2:12] = 1  # 1320 voxels: 1.08108 mL
    for sub, name in (("gt", "case0.nii.gz"), ("pred", "case0_seg.nii.gz")):
        (tmp_path / sub).mkdir()
        nib.save(nib.Nifti1Image(gt, aff), tmp_path / sub / name)
    evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", labels=LABELS, progress=False)
    row = pd.read_csv(tmp_path / "ev" / "metrics.csv").iloc[0]
    assert row["gt_size"] == 1.08 and row["pred_size"] == 1.08 and "hd95_mm" in row.index


def _panel_texts(spacing_known: bool) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from medseg.reporting.overlays import draw_panel

    fig, ax = plt.subplots()
    m = _block(shape=(60, 80))
    draw_panel(ax, np.zeros((60, 80, 3), np.uint8), m, m, LABELS, (1.0, 1.0), "", spacing_known=spacing_known)
    texts = [t.get_text() for t in ax.texts]
    plt.close(fig)
    return texts


def test_q10_no_mm_scale_bar_without_spacing():
    assert not [t for t in _panel_texts(False) if "mm" in t]
    assert [t for t in _panel_texts(True) if t.endswith(" mm")]  # a measured image keeps its bar


def test_q10_stacked_slices_get_no_mm_scale_bar(tmp_path, monkeypatch):
    """LGG slices stacked into a volume have no known spacing: their panels get no mm bar either."""
    import medseg.reporting.overlays as ov

    known = []
    real = ov.draw_panel
    monkeypatch.setattr(ov, "draw_panel", lambda *a, **k: known.append(k.get("spacing_known", True)) or real(*a, **k))
    vol = np.zeros((32, 32, 6), np.float32)
    gt = np.zeros(vol.shape, np.uint8)
    gt[10:20, 10:20, 2:4] = 1
    ov.render_volume(
        vol,
        gt,
        gt,
        (1.0, 1.0, 1.0),
        LABELS,
        tmp_path / "o.png",
        "",
        n_axial=2,
        through_plane=False,
        spacing_known=False,
    )
    assert known and not any(known)


# ----------------------------------------------------------------------------
# a trained model (2 epochs, tiny) for the infer log line and the evaluate cases
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from medseg.config import load_config
    from medseg.data import synthetic
    from medseg.engine.train import train

    root = tmp_path_factory.mktemp("units")
    data = synthetic.make_folder_2d(root / "data", n=6, size=(32, 48))
    cfg = load_config(
        "demo",
        [
            "data.recipe=folder",
            "preprocess.spatial_size=[32,48]",
            "train.epochs=1",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "model.num_res_units=1",
        ],
    )
    train(cfg, data, root / "run", progress=False)
    model = root / "run" / "best.pt"
    if not model.is_file():
        model = root / "run" / "last.pt"
    split = json.loads((root / "run" / "split.json").read_text())
    return {"data": data, "model": model, "split": split, "root": root}


def test_q10_infer_log_line_says_px_and_the_diameter(trained, tmp_path, log_lines):
    from medseg.inference.infer import infer

    res = infer(
        [str(trained["data"] / "images" / "case_000.png")],
        model=[str(trained["model"])],
        out=tmp_path / "inf",
        progress=False,
    ).outputs[0]
    line = next(s for s in log_lines if s.startswith("case_000:"))
    assert not re.search(r"\d mm", line)  # no millimetres that nobody measured
    assert "pixel spacing unknown" in line
    c = res["classes"]["lesion"]
    assert f"lesion: {c['total_px2']} px²" in line
    if c["lesions"]:
        assert f"largest {c['lesions'][0]['max_diameter_px']:.1f} px across" in line
    saved = json.loads(Path(res["findings_json"]).read_text())
    assert saved["spacing_known"] is False and saved["unit"] == "px2"


def _copy_cases(src, dst, ids, rename=lambda cid: cid):
    (dst / "images").mkdir(parents=True)
    (dst / "masks").mkdir()
    for cid in ids:
        shutil.copy(src / "images" / f"{cid}.png", dst / "images" / f"{rename(cid)}.png")
        shutil.copy(src / "masks" / f"{cid}_mask.png", dst / "masks" / f"{rename(cid)}_mask.png")


def test_q23_new_folder_is_scored_as_a_test_set(trained, tmp_path, log_lines):
    from medseg.evaluation.evaluate import evaluate_model

    ids = trained["split"]["train"] + trained["split"]["val"]
    new = tmp_path / "new"
    _copy_cases(trained["data"], new, ids[:3], rename=lambda cid: cid.replace("case", "new"))
    res = evaluate_model(trained["model"], "folder", new, tmp_path / "ev", split="val", device="cpu", progress=False)
    assert res.info["test_set"] is True and res.info["n_cases"] == 3 and res.info["split"] == "all"
    assert any(
        f"none of the model's training or validation cases are in {new}: scoring all 3 cases as a test set" in s
        for s in log_lines
    )
    assert json.loads((tmp_path / "ev" / "eval.json").read_text())["test_set"] is True


def test_q23_folder_with_training_cases_only_is_refused_not_scored(trained, tmp_path):
    from medseg.evaluation.evaluate import evaluate_model

    part = tmp_path / "part"
    _copy_cases(trained["data"], part, trained["split"]["train"][:2])
    with pytest.raises(MedsegError) as err:
        evaluate_model(trained["model"], "folder", part, tmp_path / "ev", split="val", device="cpu", progress=False)
    msg = str(err.value)
    assert "2 of its training or validation cases are" in msg
    assert "--split all" not in msg  # never advise scoring training cases
    assert not (tmp_path / "ev" / "metrics.csv").exists()


def test_q23_split_all_over_training_cases_warns(trained, tmp_path, log_lines):
    from medseg.evaluation.evaluate import evaluate_model

    res = evaluate_model(
        trained["model"],
        "folder",
        trained["data"],
        tmp_path / "ev",
        split="all",
        device="cpu",
        progress=False,
    )
    n_seen = len(trained["split"]["train"]) + len(trained["split"]["val"])
    assert res.info["training_cases_scored"] == n_seen
    assert any(s.startswith("warning:") and f"{n_seen} of the 6 cases" in s and "optimistic" in s for s in log_lines)


@pytest.mark.slow
@pytest.mark.realdata
def test_q10_q23_real_ph2_new_folder_in_pixels_as_a_test_set(tmp_path):
    """The issue's case on real PH2 photos: a model trained on 8 cases, evaluated on a folder of 3 others."""
    from typer.testing import CliRunner

    from medseg.cli import app
    from tests.conftest import shared

    images = shared("ph2") / "PH2 Dataset images"
    cases = sorted(p.name for p in images.iterdir() if p.is_dir())[:11]
    for sub, chosen in (("train", cases[:8]), ("new", cases[8:])):
        (tmp_path / sub / "PH2 Dataset images").mkdir(parents=True)
        for c in chosen:
            (tmp_path / sub / "PH2 Dataset images" / c).symlink_to(images / c)
    tiny = [
        "--set",
        "model.channels=[4,8,16]",
        "--set",
        "model.strides=[2,2]",
        "--set",
        "model.num_res_units=1",
        "--set",
        "preprocess.spatial_size=[64,96]",
        "--set",
        "model.deep_supervision=0",
    ]
    run = CliRunner().invoke(
        app,
        [
            "train",
            "ph2",
            "--data-dir",
            str(tmp_path / "train"),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--quiet",
            *tiny,
        ],
    )
    assert run.exit_code == 0, run.output
    ev = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--model",
            str(tmp_path / "run" / "best.pt"),
            "--data",
            "ph2",
            "--data-dir",
            str(tmp_path / "new"),
            "--out",
            str(tmp_path / "ev"),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert ev.exit_code == 0, ev.output
    assert "scoring all 3 cases as a test set" in ev.output
    cols = pd.read_csv(tmp_path / "ev" / "metrics.csv").columns
    assert "hd95_px" in cols and "hd95_mm" not in cols
    photo = next((images / cases[9] / f"{cases[9]}_Dermoscopic_Image").iterdir())
    inf = CliRunner().invoke(
        app,
        [
            "infer",
            str(photo),
            "--model",
            str(tmp_path / "run" / "best.pt"),
            "--out",
            str(tmp_path / "inf"),
            "--device",
            "cpu",
            "--quiet",
        ],
    )
    assert inf.exit_code == 0, inf.output
    assert f"{cases[9]}: lesion: " in inf.output and " px² in " in inf.output and "px across" in inf.output
    assert not re.search(r"\d mm", inf.output)


@pytest.mark.parametrize("seed", range(6))
def test_max_diameter_equals_the_farthest_pair_of_all_voxel_corners(seed):
    """The hull taken of boundary centres, grown by a voxel, against every pair of every voxel's corners."""
    import itertools

    from medseg.inference.findings import max_diameter

    rng = np.random.default_rng(seed)
    mask = rng.random((6, 5, 4) if seed % 2 else (7, 6)) < 0.35
    spacing = (0.7, 1.3, 2.1)[: mask.ndim]
    offsets = np.array(list(itertools.product([-0.5, 0.5], repeat=mask.ndim)))
    corners = (np.argwhere(mask)[:, None, :] + offsets[None]).reshape(-1, mask.ndim) * np.asarray(spacing)
    brute = np.sqrt(((corners[:, None] - corners[None]) ** 2).sum(-1).max())
    assert max_diameter(mask, spacing) == pytest.approx(brute, rel=1e-12)
