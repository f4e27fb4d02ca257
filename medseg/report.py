"""Clinical-style PDF reports (reportlab): real, selectable text, page numbers, a model card
and a research-software statement on every report.

* :func:`case_report` - one case from ``<case>_findings.json`` (``medseg infer``),
  optionally scored against a ground-truth mask.
* :func:`cohort_report` - an evaluation folder (``medseg evaluate``).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from pathlib import Path

import pandas as pd

from . import __version__
from .errors import fail

DISCLAIMER = ("Research software, not a medical device. These results were produced automatically by a machine-learning "
              "model and are not a diagnosis; they must be reviewed by a qualified clinician before any clinical use.")


def fmt(v, digits: int = 3) -> str:
    """Numbers as they appear in reports (and in the tests that read them back): NaN -> 'n/a'."""
    if v is None:
        return "n/a"
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    if math.isnan(f):
        return "n/a"
    return f"{f:.{digits}f}"


# ----------------------------------------------------------------------------
# document scaffolding
# ----------------------------------------------------------------------------

def _styles():
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    ss = getSampleStyleSheet()
    base = ParagraphStyle("body", parent=ss["BodyText"], fontName="Helvetica", fontSize=9, leading=12)
    return {
        "title": ParagraphStyle("t", parent=ss["Title"], fontName="Helvetica-Bold", fontSize=16, leading=20, spaceAfter=2,
                                alignment=0),
        "subtitle": ParagraphStyle("st", parent=base, textColor=colors.HexColor("#555555")),
        "h2": ParagraphStyle("h2", parent=ss["Heading2"], fontName="Helvetica-Bold", fontSize=11.5, leading=14,
                             spaceBefore=10, spaceAfter=4, textColor=colors.HexColor("#0b3d66")),
        "body": base,
        "small": ParagraphStyle("s", parent=base, fontSize=7.5, leading=9.5),
        "cell": ParagraphStyle("c", parent=base, fontSize=8, leading=10),
        "disclaimer": ParagraphStyle("d", parent=base, fontSize=8.5, leading=11, textColor=colors.HexColor("#7a1f00"),
                                     borderColor=colors.HexColor("#d55e00"), borderWidth=0.8, borderPadding=6,
                                     spaceBefore=8),
    }


def _table(rows, col_widths=None, header=True):
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    st = _styles()["cell"]
    data = [[Paragraph(str(c), st) for c in r] for r in rows]
    t = Table(data, colWidths=col_widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#bbbbbb")),
             ("VALIGN", (0, 0), (-1, -1), "TOP"),
             ("TOPPADDING", (0, 0), (-1, -1), 2), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]
    if header:
        style += [("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")),
                  ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold")]
    for i in range(1 + header, len(rows), 2):
        style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f7f7f7")))
    t.setStyle(TableStyle(style))
    return t


def _kv_table(pairs):
    from reportlab.lib.units import mm

    return _table([[f"<b>{k}</b>", v] for k, v in pairs], col_widths=[45 * mm, 125 * mm], header=False)


def _image(path, max_w_mm=170, max_h_mm=95):
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    w, h = ImageReader(str(path)).getSize()
    scale = min(max_w_mm * mm / w, max_h_mm * mm / h)
    return Image(str(path), width=w * scale, height=h * scale, hAlign="LEFT")


def _build(path: Path, title: str, subtitle: str, story_body: list) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    st = _styles()
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")

    def on_page(canvas, doc):
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillGray(0.35)
        canvas.drawString(18 * mm, 10 * mm, f"medseg {__version__} - {title} - generated {stamp}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"Page {doc.page}")
        canvas.drawString(18 * mm, A4[1] - 10 * mm, "RESEARCH USE ONLY - NOT FOR DIAGNOSIS")
        canvas.restoreState()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    doc = SimpleDocTemplate(str(tmp), pagesize=A4, leftMargin=18 * mm, rightMargin=18 * mm, topMargin=16 * mm,
                            bottomMargin=18 * mm, title=title, author="medseg", subject=subtitle)
    story = [Paragraph(title, st["title"]), Paragraph(subtitle, st["subtitle"])] + story_body
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
    tmp.replace(path)
    return path


def _model_card_flow(card: dict | None) -> list:
    from reportlab.platypus import Paragraph

    st = _styles()
    flow = [Paragraph("Model card", st["h2"])]
    if not card:
        return flow + [Paragraph("The checkpoint that produced these results was not available.", st["body"])]
    names = {"architecture": "Architecture", "inputs": "Input channels", "labels": "Labels",
             "training_data": "Training data", "split": "Split", "validation": "Validation Dice (best epoch)",
             "epochs": "Epochs trained", "medseg_version": "medseg version", "checkpoint_sha256_12": "Checkpoint SHA-256",
             "trained": "Trained"}
    return flow + [_kv_table([(names.get(k, k), card.get(k) if card.get(k) not in (None, "") else "n/a") for k in names])]


def _target(out, default: Path, force: bool) -> Path:
    path = Path(out) if out else default
    if path.suffix.lower() != ".pdf":
        path = path / default.name
    if path.exists() and not force:
        raise fail(path, "already exists", "pass --force to overwrite or choose another --out")
    return path


# ----------------------------------------------------------------------------
# single case
# ----------------------------------------------------------------------------

def case_report(findings_json: str | Path, out: str | Path | None = None, gt: str | Path | None = None,
                force: bool = False) -> Path:
    """Write a one-case PDF from ``<case>_findings.json``; with ``gt`` the metrics are included."""
    from reportlab.platypus import Paragraph, Spacer

    from .checkpoint import load_checkpoint
    from .evaluate import metrics_rows, model_card, read_label_map
    from .overlays import save_case_overlay

    fpath = Path(findings_json)
    if not fpath.is_file():
        raise fail(fpath, "not found", "pass a <case>_findings.json written by medseg infer")
    try:
        f = json.loads(fpath.read_text())
        case_id, labels = f["case_id"], f["labels"]
    except (json.JSONDecodeError, KeyError):
        raise fail(fpath, "is not a medseg findings file", "pass a <case>_findings.json written by medseg infer") from None
    target = _target(out, Path("reports") / f"{case_id}_report.pdf", force)
    st = _styles()
    unit = "mL" if f["unit"] == "ml" else "mm²"
    assumed = f.get("spacing_assumed")
    geo = f["geometry"]
    meta = f.get("metadata") or {}
    study = [("Case", case_id), ("Source file", "<br/>".join(Path(p).name for p in f["input"])),
             ("Modality", meta.get("modality") or ", ".join(f.get("channels", []))),
             ("Image size", " x ".join(str(s) for s in geo["shape"])),
             ("Voxel spacing", " x ".join(fmt(s, 3) for s in geo["spacing_mm"]) + " mm" + (" (assumed: unknown)" if assumed else ""))]
    study += [(k.replace("_", " ").capitalize(), ", ".join(map(str, v)) if isinstance(v, list) else v)
              for k, v in meta.items() if k != "modality" and v not in (None, "")]
    others = (f.get("dicom_series") or {}).get("other_series") or []
    if others:  # the reader took the largest series of the folder: say which ones it did not segment
        study.append(("Not segmented", "<br/>".join(f"series '{o['description'] or o['series_uid']}' ({o['files']} files)"
                                                    for o in others)))
    body = [Paragraph("Study information", st["h2"]), _kv_table(study), Paragraph("Findings", st["h2"])]
    rows = [["Class", "Lesions", f"Total size ({unit})", f"Largest lesion ({unit})", "Largest lesion centre (mm)"]]
    for name, c in f["classes"].items():
        largest = c["lesions"][0] if c["lesions"] else None
        rows.append([name, c["n_lesions"], fmt(c[f"total_{f['unit']}"]), fmt(c[f"largest_{f['unit']}"]),
                     ", ".join(fmt(v, 1) for v in largest["centroid_mm"]) if largest else "none"])
    body.append(_table(rows))
    coords = f.get("coordinates", "")
    body.append(Paragraph(f"Coordinates: {coords}. Lesions are connected regions of one class." +
                          (" Pixel size unknown: sizes assume 1 mm per pixel." if assumed else ""), st["small"]))
    overlay = target.with_name(f"{case_id}_overlay.png")
    save_case_overlay(f["input"][0] if len(f["input"]) == 1 else f["input"], str(gt) if gt else None,
                      f["segmentation"], labels, overlay, title="")
    body += [Paragraph("Overlay", st["h2"]), _image(overlay)]
    if gt:
        pred, _, _ = read_label_map(Path(f["segmentation"]), len(labels))
        g, spacing, _ = read_label_map(Path(gt), len(labels))
        if pred.shape != g.shape:
            raise fail(gt, f"ground truth shape {g.shape} differs from the segmentation {pred.shape}",
                       "pass the ground truth of this case")
        mrows = [["Class", "Dice", "Jaccard", "Precision", "Recall", "HD95 (mm)", "ASSD (mm)"]]
        for r in metrics_rows(case_id, pred, g, spacing if f["unit"] == "ml" else tuple(geo["spacing_mm"]), labels):
            mrows.append([r["class"], fmt(r["dice"]), fmt(r["jaccard"]), fmt(r["precision"]), fmt(r["recall"]),
                          fmt(r["hd95_mm"], 2), fmt(r["assd_mm"], 2)])
        body += [Paragraph("Agreement with ground truth", st["h2"]), _table(mrows)]
    card = None
    m = (f.get("models") or [{}])[0]
    if m.get("path") and Path(m["path"]).is_file():
        card = model_card(load_checkpoint(m["path"]), m.get("sha256_12", ""))
    body += _model_card_flow(card)
    body += [Spacer(1, 4), Paragraph(f"Segmentation file: {f['segmentation']}. Processing: TTA {f.get('tta')}, "
                                     f"post-processing {f.get('postprocess')}, device {f.get('device')}, "
                                     f"{fmt(f.get('timings', {}).get('total_s'), 1)} s.", st["small"]),
             Paragraph(DISCLAIMER, st["disclaimer"])]
    return _build(target, "Segmentation report", f"Case {case_id} - {datetime.now():%Y-%m-%d}", body)


# ----------------------------------------------------------------------------
# cohort
# ----------------------------------------------------------------------------

SUMMARY_METRICS = ["dice", "jaccard", "precision", "recall", "hd95_mm", "assd_mm"]


def _model_rows(info: dict) -> list[tuple[str, str]]:
    """The checkpoint(s) an evaluation ran, for the cohort report's header table."""
    if info.get("ensemble"):
        return [("Models", f"ensemble of {len(info['ensemble'])} (probabilities averaged): "
                           + ", ".join(info["ensemble"]))]
    return [("Model", f"{info['model']} (sha256 {info.get('model_sha256_12')})")] if info.get("model") else []


def _beside(eval_dir: Path, stored: str) -> str:
    """A picture of an evaluation folder, found in the folder itself (``name`` or ``overlays/name``), so a moved or
    copied folder reports its own files; eval.json keeps the paths they were first written to, the fallback."""
    p = Path(stored)
    for cand in (eval_dir / p.parent.name / p.name, eval_dir / p.name):
        if cand.is_file():
            return str(cand)
    return stored


def cohort_report(eval_dir: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write a cohort PDF from an evaluation folder (metrics.csv, summary.csv, eval.json, plots)."""
    from reportlab.platypus import PageBreak, Paragraph

    eval_dir = Path(eval_dir)
    for f in ("metrics.csv", "summary.csv", "eval.json"):
        if not (eval_dir / f).is_file():
            raise fail(eval_dir, f"has no {f}", "run medseg evaluate first and pass its --out folder")
    info = json.loads((eval_dir / "eval.json").read_text())
    df = pd.read_csv(eval_dir / "metrics.csv", dtype={"case_id": str})
    summary = pd.read_csv(eval_dir / "summary.csv")
    target = _target(out, Path("reports") / f"{eval_dir.resolve().name}_cohort_report.pdf", force)
    st = _styles()
    what = (f"{info.get('data')} data, split '{info.get('split')}'" if info.get("mode") == "model"
            else f"predictions {info.get('pred_dir')} vs ground truth {info.get('gt_dir')}")
    unit = info.get("size_unit", "mL")
    body = [Paragraph("Evaluation", st["h2"]),
            _kv_table([("Cases", f"{info['n_cases']}" + (" volumes (slices stacked per patient)" if info.get("per_volume") else "")),
                       ("Data", what), *_model_rows(info), ("Labels", ", ".join(info["labels"])),
                       ("Unscored", f"{len(info.get('predictions_without_gt', []))} predictions without ground truth, "
                                    f"{len(info.get('gt_without_prediction', []))} ground truths without prediction"),
                       ("Created", info.get("created"))]),
            Paragraph("Summary per class (mean ± SD, median, 95% bootstrap interval of the mean)", st["h2"])]
    rows = [["Class", "Metric", "n", "Mean ± SD", "Median", "95% CI"]]
    for _, r in summary[summary["metric"].isin(SUMMARY_METRICS)].iterrows():
        rows.append([r["class"], r["metric"], f"{int(r['n'])}" + (f" (+{int(r['n_undefined'])} n/a)" if r["n_undefined"] else ""),
                     f"{fmt(r['mean'])} ± {fmt(r['std'])}", fmt(r["median"]), f"{fmt(r['ci95_low'])} - {fmt(r['ci95_high'])}"])
    body.append(_table(rows))
    body.append(Paragraph("n/a: undefined (e.g. precision with nothing predicted, distances with an empty mask); "
                          "see the README for the empty-mask rules." +
                          (" These images carry no pixel spacing (* below): sizes and distances assume 1 mm per pixel "
                           "(set data.pixel_spacing_mm for true millimetres)." if info.get("spacing_assumed") else ""),
                          st["small"]))
    plots = {k: _beside(eval_dir, v) for k, v in info.get("plots", {}).items() if v}
    if plots.get("boxplots"):
        body += [Paragraph("Distribution per class", st["h2"]), _image(plots["boxplots"], max_h_mm=60)]
    if plots.get("dice_vs_size"):
        body += [_image(plots["dice_vs_size"], max_w_mm=110, max_h_mm=70)]
    ranked = info.get("ranked", {})
    if ranked:
        body += [PageBreak(), Paragraph("Best, median and worst cases (by mean Dice)", st["h2"])]
        for tag in ("best", "median", "worst"):
            cid = ranked.get(tag)
            case = info["cases"].get(cid, {}) if cid else {}
            d = df[(df["case_id"] == cid) & (df["class"] != "all_foreground")]["dice"].mean() if cid else float("nan")
            body.append(Paragraph(f"<b>{tag.capitalize()}</b>: {cid} - mean Dice {fmt(d)}", st["body"]))
            overlay = _beside(eval_dir, case["overlay"]) if case.get("overlay") else None
            if overlay and Path(overlay).is_file():
                body.append(_image(overlay, max_h_mm=62))
    body += [PageBreak(), Paragraph("Per-case results", st["h2"])]
    short_unit = unit.split(",")[0].split(" (")[0] + ("*" if info.get("spacing_assumed") else "")  # note on page 1
    prow = [["Case", "Class", "Dice", "Jaccard", "Precision", "Recall", "HD95 (mm)", f"GT size ({short_unit})", "Lesions found"]]
    for _, r in df.iterrows():
        prow.append([r["case_id"], r["class"], fmt(r["dice"]), fmt(r["jaccard"]), fmt(r["precision"]), fmt(r["recall"]),
                     fmt(r["hd95_mm"], 2), fmt(r["gt_size"], 2), f"{int(r['lesions_detected'])}/{int(r['lesions_gt'])}"])
    body.append(_table(prow))
    body += _model_card_flow(info.get("model_card"))
    body.append(Paragraph(DISCLAIMER, st["disclaimer"]))
    return _build(target, "Cohort evaluation report", f"{info['n_cases']} cases - {datetime.now():%Y-%m-%d}", body)
