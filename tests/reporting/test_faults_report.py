"""PDF reports and overlays under bad input: degenerate shapes, scripts no font has, failures that must leave nothing
behind, and the reports read as a clinician would (one page per 2D case, reference annotations labelled so)."""

import json
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from medseg.errors import MedsegError
from medseg.inference.findings import lesion_findings
from medseg.io import Geometry
from medseg.reporting.case_report import case_report
from medseg.reporting.cohort_report import cohort_report
from tests.conftest import pdf_text, train_tiny

LABELS = ["background", "lesion"]


def _pages(pdf) -> int:
    from pypdf import PdfReader

    return len(PdfReader(str(pdf)).pages)


def _findings_case(folder: Path, shape, case_id="c1", meta=None) -> Path:
    """A 2D case as medseg infer leaves it (image, mask, findings JSON), without a model: the report's own inputs."""
    folder.mkdir(parents=True, exist_ok=True)
    img = np.random.default_rng(0).integers(0, 255, (*shape, 3)).astype(np.uint8)
    mask = np.zeros(shape, np.uint8)
    mask[: max(1, shape[0] // 2), : max(1, shape[1] // 2)] = 1
    Image.fromarray(img).save(folder / "image.png")
    Image.fromarray(mask * 255).save(folder / "seg.png")
    geom = Geometry(tuple(shape), (1.0, 1.0), np.eye(3), "2d", str(folder / "image.png"))
    f = {
        "case_id": case_id,
        "input": [str(folder / "image.png")],
        "segmentation": str(folder / "seg.png"),
        "geometry": geom.summary(),
        "spacing_assumed": True,
        "metadata": meta or {},
        "labels": LABELS,
        "channels": ["red", "green", "blue"],
        **lesion_findings(mask, geom, LABELS),
        "models": [],
        "postprocess": {"threshold": 0.5, "keep_largest": True},
        "tta": False,
        "device": "cpu",
        "timings": {"total_s": 0.1},
    }
    path = folder / "findings.json"
    path.write_text(json.dumps(f))
    return path


# ----------------------------------------------------------------------------
# 15: degenerate shapes
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape", [(1, 1), (1, 700), (700, 1)], ids=["q15-shape-1x1", "q15-shape-1x700", "q15-shape-700x1"]
)
def test_report_on_degenerate_2d_shapes(tmp_path, shape):
    fj = _findings_case(tmp_path / "case", shape)
    pdf = case_report(fj, out=tmp_path / "r.pdf", gt=tmp_path / "case" / "seg.png")
    text = pdf_text(pdf)
    assert f"{shape[1]} × {shape[0]} px (width × height)" in text
    assert "Agreement with ground truth" in text and _pages(pdf) == 1


@pytest.mark.parametrize("shape", [(16, 16, 1), (1, 16, 8)], ids=["q15-volume-one-slice", "q15-volume-one-column"])
def test_overlay_of_degenerate_volumes(tmp_path, shape):
    from medseg.reporting.overlays import save_case_overlay

    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[:8, :8, :1] = 1
    for name, arr in (("vol", vol), ("mask", mask)):
        nib.save(nib.Nifti1Image(arr, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp_path / f"{name}.nii.gz"))
    out = save_case_overlay(
        str(tmp_path / "vol.nii.gz"),
        str(tmp_path / "mask.nii.gz"),
        str(tmp_path / "mask.nii.gz"),
        LABELS,
        tmp_path / "o.png",
    )
    assert Image.open(out).size[0] > 50


def test_infer_report_batch_goes_on_past_a_failed_report(tmp_path, monkeypatch):
    """q15-infer-report-batch: one case's report fails; the next case still gets its PDF, the failure is one line
    naming the case, and the command exits non-zero at the end."""
    import medseg.inference.infer
    from medseg.cli import app
    from medseg.inference.infer import InferSummary

    bad = _findings_case(tmp_path / "bad", (20, 30), case_id="bad_case")
    (tmp_path / "bad" / "seg.png").unlink()  # its mask is gone: that report cannot be drawn
    good = _findings_case(tmp_path / "good", (20, 30), case_id="good_case")
    out = tmp_path / "out"
    out.mkdir()
    outputs = [{"case_id": "bad_case", "findings_json": str(bad)}, {"case_id": "good_case", "findings_json": str(good)}]
    monkeypatch.setattr(medseg.inference.infer, "infer", lambda *a, **k: InferSummary(out, outputs=list(outputs)))
    result = CliRunner().invoke(app, ["infer", "x.png", "--model", "m.pt", "--out", str(out), "--report"])
    assert (out / "good_case_report.pdf").is_file()
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert "bad_case" in last and "report" in last and "Traceback" not in result.output


def test_infer_report_still_written_when_another_input_failed(tmp_path, monkeypatch):
    """q15-infer-report-after-failed-input: infer raises at the end for a bad input; the cases it did segment still
    get their PDFs before that one-line error is shown."""
    import medseg.inference.infer
    from medseg.api import infer_from_cli
    from medseg.inference.infer import InferSummary

    good = _findings_case(tmp_path / "good", (20, 30), case_id="good_case")
    out = tmp_path / "out"
    out.mkdir()

    def failing_infer(*_a, **_k):
        err = MedsegError("1 of 2 inputs failed (first: bad.png: unreadable); the others were written to out")
        err.summary = InferSummary(out, outputs=[{"case_id": "good_case", "findings_json": str(good)}])
        raise err

    monkeypatch.setattr(medseg.inference.infer, "infer", failing_infer)
    with pytest.raises(MedsegError, match="1 of 2 inputs failed"):
        infer_from_cli(["good.png", "bad.png"], model=["m.pt"], out=out, report=True, progress=False)
    assert (out / "good_case_report.pdf").is_file()


# ----------------------------------------------------------------------------
# 20: characters Helvetica lacks
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "case_id,font",
    [("病例一", b"STSong-Light"), ("Ærøskøbing-Ωμέγα", b"DejaVuSans"), ("a&b<c", b"DejaVuSans")],
    ids=["q20-cjk-case-name", "q20-accents-greek", "q20-markup-characters"],
)
def test_case_names_print_in_the_pdf(tmp_path, case_id, font):
    from medseg.reporting.fonts import embedded_cjk_codepoints

    if font == b"STSong-Light" and ord(case_id[0]) in embedded_cjk_codepoints():
        font = _embedded_cjk_font_name()  # an installed CJK TrueType font is embedded instead of the viewer's CID font
    pdf = case_report(_findings_case(tmp_path / "case", (20, 30), case_id=case_id), out=tmp_path / "r.pdf")
    assert f"Case {case_id}" in pdf_text(pdf)
    assert font in pdf.read_bytes()


def _embedded_cjk_font_name() -> bytes:
    from reportlab.pdfbase import pdfmetrics

    from medseg.reporting.fonts import CJK_EMBEDDED

    name = pdfmetrics.getFont(CJK_EMBEDDED).face.name
    return name if isinstance(name, bytes) else name.encode()


def test_cjk_without_an_installed_font_says_how_to_embed_one(tmp_path, monkeypatch):
    """q20-cjk-viewer-font: with no CJK TrueType font to embed, the CID font is named in a note, so a viewer that
    shows boxes is explained and the fix is given."""
    from medseg.reporting import fonts

    monkeypatch.setattr(fonts, "embedded_cjk_codepoints", lambda: frozenset())
    pdf = case_report(_findings_case(tmp_path / "case", (20, 30), case_id="病例一"), out=tmp_path / "r.pdf")
    text = " ".join(pdf_text(pdf).split())
    assert "Case 病例一" in text and b"STSong-Light" in pdf.read_bytes()
    assert "Adobe CJK fonts (not embedded)" in text and "fonts-wqy-microhei" in text


def test_an_installed_cjk_font_is_embedded(tmp_path):
    """q20-cjk-embedded: where a CJK TrueType font is installed it is embedded, and no viewer note is needed."""
    from medseg.reporting.fonts import embedded_cjk_codepoints

    if ord("病") not in embedded_cjk_codepoints():
        pytest.skip("no CJK TrueType font installed here (e.g. Debian's fonts-wqy-microhei)")
    pdf = case_report(_findings_case(tmp_path / "case", (20, 30), case_id="病例一"), out=tmp_path / "r.pdf")
    data = pdf.read_bytes()
    assert b"+" + _embedded_cjk_font_name() in data and b"STSong-Light" not in data  # a subset, embedded
    assert "not embedded" not in pdf_text(pdf)


def test_uncovered_characters_fall_back_visibly(tmp_path):
    """q20-uncovered: a script no font here has (Devanagari) prints as '?' with a note, never as empty boxes."""
    pdf = case_report(_findings_case(tmp_path / "case", (20, 30), case_id="केस7"), out=tmp_path / "r.pdf")
    text = pdf_text(pdf)
    assert "Case ???7" in text and "shown as '?'" in text


def test_overlay_titles_without_glyph_warnings(tmp_path):
    """q20-matplotlib-title: matplotlib's DejaVu lacks CJK; the title falls back to '?' without a warning."""
    from medseg.reporting.overlays import save_case_overlay

    _findings_case(tmp_path / "case", (20, 30))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        save_case_overlay(
            str(tmp_path / "case" / "image.png"),
            None,
            str(tmp_path / "case" / "seg.png"),
            LABELS,
            tmp_path / "o.png",
            title="病例一 (best)",
        )
    assert (tmp_path / "o.png").stat().st_size > 500


# ----------------------------------------------------------------------------
# 26: a failed report leaves nothing behind
# ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault",
    ["wrong-gt", "corrupt-checkpoint"],
    ids=["q26-report-wrong-gt-no-overlay", "q26-report-bad-checkpoint-no-overlay"],
)
def test_failed_report_leaves_no_overlay(tmp_path, fault):
    """A report that fails (a ground truth of another shape; a checkpoint that cannot be read for the model card,
    found after the overlay was drawn) leaves neither the overlay PNG nor a partial PDF in the report folder."""
    fj = _findings_case(tmp_path / "case", (20, 30))
    gt = None
    if fault == "wrong-gt":
        gt = tmp_path / "wrong_gt.png"
        Image.fromarray(np.zeros((10, 10), np.uint8)).save(gt)
    else:
        (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
        f = json.loads(fj.read_text())
        f["models"] = [{"path": str(tmp_path / "best.pt"), "sha256_12": "0" * 12}]
        fj.write_text(json.dumps(f))
    reports = tmp_path / "reports"
    with pytest.raises(MedsegError, match="ground truth shape|not a readable medseg checkpoint"):
        case_report(fj, out=reports / "r.pdf", gt=gt)
    assert not reports.exists() or list(reports.iterdir()) == []


# ----------------------------------------------------------------------------
# 28: the PDFs as a clinician reads them
# ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ph2_model(tmp_path_factory, ph2_dir):
    return train_tiny("ph2", ph2_dir, tmp_path_factory.mktemp("run"), "model.deep_supervision=0", "train.val_every=1")


@pytest.fixture(scope="module")
def ph2_case_pdf(tmp_path_factory, ph2_model, ph2_dir):
    """The report of IMD010 (PH2 clinical diagnosis 1, atypical nevus) with its ground truth."""
    from medseg.inference.infer import infer

    case = ph2_dir / "PH2 Dataset images" / "IMD010"
    image = next((case / "IMD010_Dermoscopic_Image").iterdir())
    out = tmp_path_factory.mktemp("inf")
    res = infer([str(image)], model=[str(ph2_model)], out=out, progress=False).outputs[0]
    return case_report(res["findings_json"], out=out / "r.pdf", gt=case / "IMD010_lesion" / "IMD010_lesion.bmp")


def test_2d_case_report_is_one_page(ph2_case_pdf):
    """q28-one-page (with the model card of a real checkpoint)."""
    assert _pages(ph2_case_pdf) == 1
    assert "Model card" in pdf_text(ph2_case_pdf)


@pytest.mark.parametrize(
    "needle",
    [
        "Reference (PH2 annotation) atypical nevus",
        "96 × 72 px (width × height)",
        "Keep largest",
        "preprocessed grid",
        "pigment network: typical",
    ],
    ids=[
        "q28-reference-annotation",
        "q28-width-x-height",
        "q28-settings-table",
        "q28-validation-dice-note",
        "q28-ph2-codes-decoded",
    ],
)
def test_case_report_reads_clinically(ph2_case_pdf, needle):
    assert needle in pdf_text(ph2_case_pdf)


def test_case_report_has_no_python_dict_text(ph2_case_pdf):
    """q28-no-dict-text"""
    text = pdf_text(ph2_case_pdf)
    assert "{'" not in text and "True" not in text


def test_model_card_is_kept_together():
    """q28-model-card-together: one flowable that reportlab never splits over a page."""
    from reportlab.platypus import KeepTogether

    from medseg.reporting.pdf import model_card_flow

    flow = model_card_flow({"architecture": "unet", "validation": "dice 0.9"})
    assert len(flow) == 1 and isinstance(flow[0], KeepTogether)


def test_volume_views_carry_orientation_and_modality(tmp_path, monkeypatch):
    """q28-orientation-markers: R/L/A/P/S/I on the 3D views, and the background image's modality named."""
    import medseg.reporting.overlays as ov

    shape = (16, 16, 8)
    vol = np.random.default_rng(0).random(shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[4:10, 4:10, 2:6] = 1
    for name, arr in (("vol", vol), ("mask", mask)):
        nib.save(nib.Nifti1Image(arr, np.eye(4)), str(tmp_path / f"{name}.nii.gz"))
    texts = []
    real_finish = ov._finish

    def spy(fig, *a, **k):
        texts.extend(t.get_text() for ax in fig.axes for t in ax.texts)
        texts.extend(t.get_text() for t in fig.texts)
        return real_finish(fig, *a, **k)

    monkeypatch.setattr(ov, "_finish", spy)
    kwargs = {"modality": "flair"} if "modality" in ov.save_case_overlay.__code__.co_varnames else {}
    ov.save_case_overlay(
        str(tmp_path / "vol.nii.gz"),
        str(tmp_path / "mask.nii.gz"),
        str(tmp_path / "mask.nii.gz"),
        LABELS,
        tmp_path / "o.png",
        **kwargs,
    )
    assert {"R", "L", "A", "P", "S", "I"} <= set(texts)
    assert any("flair" in t for t in texts)


def test_cohort_box_plots_grid_and_distances(tmp_path):
    """q28-boxplots: the overlap metrics in a 2x2 grid, HD95/ASSD plotted too."""
    from medseg.reporting.plots import evaluation_plots

    rng = np.random.default_rng(0)
    df = pd.DataFrame(
        {
            "case_id": [f"c{i}" for i in range(8)],
            "class": "lesion",
            "dice": rng.random(8),
            "jaccard": rng.random(8),
            "precision": rng.random(8),
            "recall": rng.random(8),
            "hd95_px": rng.random(8) * 20,
            "assd_px": rng.random(8) * 5,
            "gt_size": rng.random(8) * 100,
        }
    )
    plots = evaluation_plots(df, tmp_path)
    w, h = Image.open(plots["boxplots"]).size
    assert w / h < 1.6  # a 2x2 grid, not a 1x4 strip
    assert Path(plots["distances"]).is_file()


def _evaluation_with_diagnoses(tmp_path, n=6) -> Path:
    """An evaluation folder of n cases whose Dice falls with the case number, named so that alphabetical order is
    not Dice order, each with a PH2 clinical diagnosis recorded the way evaluate_model records a case's metadata."""
    from medseg.evaluation.evaluate import evaluate_folders
    from medseg.reporting.figures import EvaluationFigures

    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    names = [f"IMD{(7 * i) % n}{i}" for i in range(n)]
    for i, name in enumerate(names):
        g = np.zeros((30, 40), np.uint8)
        g[5:20, 5:25] = 255
        p = np.roll(g, i, axis=0)  # shifted by i rows: Dice falls with i
        Image.fromarray(g).save(tmp_path / "gt" / f"{name}.png")
        Image.fromarray(p).save(tmp_path / "pred" / f"{name}_seg.png")
    evaluate_folders(tmp_path / "pred", tmp_path / "gt", tmp_path / "ev", progress=False, figures=EvaluationFigures())
    info = json.loads((tmp_path / "ev" / "eval.json").read_text())
    for i, name in enumerate(names):
        info["cases"][name]["meta"] = {"diagnosis": i % 3, "diagnosis_name": None}
    (tmp_path / "ev" / "eval.json").write_text(json.dumps(info))
    return tmp_path / "ev"


@pytest.fixture(scope="module")
def diagnosed_eval(tmp_path_factory):
    return _evaluation_with_diagnoses(tmp_path_factory.mktemp("diagnosed"))


def test_cohort_report_sorted_by_dice_with_diagnoses(tmp_path, diagnosed_eval):
    """q28-cohort-per-case-table: lowest Dice first, a reference diagnosis column (PH2 codes decoded), a
    per-diagnosis summary, metric names in words with their unit."""
    ev = diagnosed_eval
    pdf = cohort_report(ev, out=tmp_path / "c.pdf")
    text = pdf_text(pdf)
    assert "Dice per reference diagnosis" in text and "melanoma" in text and "atypical nevus" in text
    assert "HD95 (px)" in text or "HD95 (mm)" in text
    table = text[text.index("Per-case results") :]
    df = pd.read_csv(ev / "metrics.csv", dtype={"case_id": str})
    listed = sorted(df["case_id"], key=lambda cid: table.index(f"{cid} "))
    assert listed != sorted(listed)  # the names alone would give another order
    assert np.all(np.diff(df.set_index("case_id").loc[listed, "dice"].to_numpy()) >= 0)


def test_best_median_worst_in_two_columns_without_doubled_titles(diagnosed_eval):
    """q28-ranked-two-columns: the three overlays in a two-column grid; the caption under each adds the Dice and the
    reference diagnosis, not the case name and rank the overlay's own title already gives."""
    from reportlab.platypus import Table

    from medseg.reporting.cohort_report import _case_dice, _diagnoses, _ranked_grid

    info = json.loads((diagnosed_eval / "eval.json").read_text())
    df = pd.read_csv(diagnosed_eval / "metrics.csv", dtype={"case_id": str})
    flow = _ranked_grid(diagnosed_eval, info, _case_dice(df), _diagnoses(info))
    grid = next(f for f in flow if isinstance(f, Table))
    assert grid._ncols == 2 and grid._nrows == 2
    captions = [c[-1].text for row in grid._cellvalues for c in row if c]
    assert len(captions) == 3 and all("Mean Dice" in c for c in captions)
    assert not any(cid in c for cid in info["ranked"].values() for c in captions)
