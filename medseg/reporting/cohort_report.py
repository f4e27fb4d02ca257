"""The cohort PDF report of an evaluation folder (``medseg report EVAL_DIR``): what was evaluated, the summary per
class, Dice per reference diagnosis, the plots, the best, median and worst cases, every case, and the model card."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pandas as pd

from medseg.data.lookup import reference_diagnosis
from medseg.errors import fail
from medseg.inference.findings import format_size
from medseg.reporting.fonts import start_document
from medseg.reporting.pdf import (
    DISCLAIMER,
    build_pdf,
    fmt,
    fmt_plain,
    image,
    kv_table,
    model_card_flow,
    para,
    pdf_target,
    styles,
    table,
)

SUMMARY_METRICS = ["dice", "jaccard", "precision", "recall", "hd95_mm", "assd_mm", "hd95_px", "assd_px"]


def _model_rows(info: dict) -> list[tuple[str, str]]:
    """The checkpoint(s) an evaluation ran, for the cohort report's header table."""
    if info.get("ensemble"):
        return [
            ("Models", f"ensemble of {len(info['ensemble'])} (probabilities averaged): " + ", ".join(info["ensemble"]))
        ]
    return [("Model", f"{info['model']} (sha256 {info.get('model_sha256_12')})")] if info.get("model") else []


def _beside(eval_dir: Path, stored: str) -> str:
    """A picture of an evaluation folder, found in the folder itself (``name`` or ``overlays/name``), so a moved or
    copied folder reports its own files; eval.json keeps the paths they were first written to, the fallback."""
    p = Path(stored)
    for cand in (eval_dir / p.parent.name / p.name, eval_dir / p.name):
        if cand.is_file():
            return str(cand)
    return stored


def _case_dice(df: pd.DataFrame) -> pd.Series:
    """Mean Dice over the foreground classes of each case (the ranking of eval.json's best/median/worst)."""
    return df[df["class"] != "all_foreground"].groupby("case_id")["dice"].mean()


def _diagnoses(info: dict) -> dict[str, str]:
    """Each case's reference diagnosis from the data set (PH2), when the evaluation recorded one."""
    out = {}
    for cid, case in (info.get("cases") or {}).items():
        d = reference_diagnosis(case.get("meta"))
        if d:
            out[str(cid)] = d
    return out


def _diagnosis_summary(dice: pd.Series, diagnoses: dict[str, str]):
    """Dice per reference diagnosis: the breakdown a dermatologist asks for first (melanoma apart from nevi)."""
    groups = pd.DataFrame({"dice": dice, "diagnosis": [diagnoses.get(c, "unknown") for c in dice.index]})
    rows = [["Reference diagnosis", "Cases", "Dice mean ± SD", "Median", "Lowest"]]
    for name, g in sorted(groups.groupby("diagnosis")["dice"], key=lambda kv: kv[1].mean()):
        d = g.dropna()
        rows.append(
            [name, len(g), f"{fmt(d.mean())} ± {fmt(d.std()) if len(d) > 1 else 'n/a'}", fmt(d.median()), fmt(d.min())]
        )
    return table(rows)


def _ranked_grid(eval_dir: Path, info: dict, dice: pd.Series, diagnoses: dict[str, str]) -> list:
    """Best, median and worst case in two columns. The overlay carries the case name and rank in its own title,
    so the caption under it adds only what the picture lacks (mean Dice, reference diagnosis)."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Table, TableStyle

    st = styles()
    cells = []
    for tag, cid in (info.get("ranked") or {}).items():
        if tag not in ("best", "median", "worst"):
            continue
        case = info["cases"].get(cid, {})
        overlay = _beside(eval_dir, case["overlay"]) if case.get("overlay") else None
        cell = (
            [image(overlay, max_w_mm=84, max_h_mm=100, align="CENTER")] if overlay and Path(overlay).is_file() else []
        )
        caption = (
            f"Mean Dice {fmt(dice.get(cid))}"
            if cell  # the overlay's own title names the case and its rank
            else f"{tag.capitalize()}: {cid} (no overlay), mean Dice {fmt(dice.get(cid))}"
        )
        if diagnoses.get(str(cid)):
            caption += f", reference diagnosis: {diagnoses[str(cid)]}"
        cells.append((["best", "median", "worst"].index(tag), cell + [para(caption, st["caption"])]))
    cells = [c for _, c in sorted(cells, key=lambda kv: kv[0])]
    if not cells:
        return []
    rows = [cells[i : i + 2] + [""] * (2 - len(cells[i : i + 2])) for i in range(0, len(cells), 2)]
    t = Table(rows, colWidths=[87 * mm, 87 * mm], hAlign="LEFT")
    t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 8)]))
    return [para("Best, median and worst cases (by mean Dice)", st["h2"]), t]


def _per_case_table(df: pd.DataFrame, dice: pd.Series, diagnoses: dict[str, str], info: dict):
    """Every case and class, lowest mean Dice first (the cases to look at), a case's classes kept together."""
    from reportlab.lib.units import mm

    length = info.get("length_unit", "mm")  # docs/units.md
    unit = info.get("size_unit", "mL")
    hd = f"hd95_{length}" if f"hd95_{length}" in df.columns else "hd95_mm"
    order = {cid: i for i, cid in enumerate(dice.sort_values(kind="stable", na_position="first").index)}
    df = df.assign(_rank=df["case_id"].map(order).fillna(len(order))).sort_values("_rank", kind="stable")
    with_diagnosis = bool(diagnoses)
    head = [
        "Case",
        *(["Reference diagnosis"] if with_diagnosis else []),
        "Class",
        "Dice",
        "Jaccard",
        "Precision",
        "Recall",
        f"HD95 ({length})",
        f"GT size ({unit})",
        "Lesions found",
    ]
    rows = [head]
    for _, r in df.iterrows():
        rows.append(
            [
                r["case_id"],
                *([diagnoses.get(str(r["case_id"]), "unknown")] if with_diagnosis else []),
                r["class"],
                fmt(r["dice"]),
                fmt(r["jaccard"]),
                fmt(r["precision"]),
                fmt(r["recall"]),
                fmt(r.get(hd), 1),
                format_size(r["gt_size"]),
                f"{int(r['lesions_detected'])}/{int(r['lesions_gt'])}",
            ]
        )
    widths = [18, 26, 16, 14, 14, 14, 14, 16, 20, 16] if with_diagnosis else None
    return table(rows, col_widths=[w * mm for w in widths] if widths else None)


METRIC_NAMES = {"dice": "Dice", "jaccard": "Jaccard", "precision": "Precision", "recall": "Recall"}


def _metric_name(metric: str) -> str:
    """'hd95_px' -> 'HD95 (px)': the unit in words, never a column name."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    name, _, unit = metric.partition("_")
    return f"{name.upper()} ({unit})" if unit else metric


def cohort_report(
    eval_dir: str | Path, out: str | Path | None = None, force: bool = False, beside: list | tuple = ()
) -> Path:
    """Write a cohort PDF from an evaluation folder (metrics.csv, summary.csv, eval.json, plots). ``beside``: other
    runs (evaluate or cv folders) scored on the same cases, shown against this one, the best classical method
    named (a floor)."""
    from reportlab.platypus import PageBreak

    from medseg.evaluation.compare import beside as compare_beside

    start_document()
    eval_dir = Path(eval_dir)
    info, df, summary = _read_evaluation(eval_dir)
    others = compare_beside(eval_dir, list(beside)) if beside else []
    target = pdf_target(out, Path("reports") / f"{eval_dir.resolve().name}_cohort_report.pdf", force)
    st = styles()
    body = [para("Evaluation", st["h2"]), kv_table(_evaluation_rows(info)), *_summary_section(summary, info, st)]
    body += _beside_section(others, st)
    body += _instance_section(info, st) + _lesion_section(info, st)
    dice = _case_dice(df)
    diagnoses = _diagnoses(info)
    if diagnoses:
        body += [
            para("Dice per reference diagnosis (the data set's own diagnosis)", st["h2"]),
            _diagnosis_summary(dice, diagnoses),
        ]
    body += _plots_section(eval_dir, info, st)
    grid = _ranked_grid(eval_dir, info, dice, diagnoses)
    if grid:
        body += [PageBreak(), *grid]
    body += [
        PageBreak(),
        para("Per-case results (lowest mean Dice first)", st["h2"]),
        _per_case_table(df, dice, diagnoses, info),
    ]
    body += model_card_flow(info.get("model_card"))
    body.append(para(DISCLAIMER, st["disclaimer"]))
    return build_pdf(target, "Cohort evaluation report", f"{info['n_cases']} cases - {datetime.now():%Y-%m-%d}", body)


def _read_evaluation(eval_dir: Path) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """eval.json, metrics.csv and summary.csv of an evaluation folder; refused when one is missing."""
    for f in ("metrics.csv", "summary.csv", "eval.json"):
        if not (eval_dir / f).is_file():
            raise fail(eval_dir, f"has no {f}", "run medseg evaluate first and pass its --out folder")
    info = json.loads((eval_dir / "eval.json").read_text(encoding="utf-8"))
    df = pd.read_csv(eval_dir / "metrics.csv", dtype={"case_id": str})
    return info, df, pd.read_csv(eval_dir / "summary.csv")


def _evaluation_rows(info: dict) -> list[tuple]:
    """The first table: what was scored, by which model, with which processing, and what could not be scored."""
    what = (
        f"{info.get('data')} data, split '{info.get('split')}'"
        if info.get("mode") == "model"
        else f"predictions {info.get('pred_dir')} vs ground truth {info.get('gt_dir')}"
    )
    if info.get("test_set"):
        what += " (a test set: none of the model's training or validation cases)"
    processing = (
        [
            (
                "Processing",
                f"test-time augmentation {'on (flips averaged)' if info.get('tta') else 'off'}; "
                + ", ".join(
                    f"{k.replace('_', ' ')} {fmt_plain(v)}" for k, v in (info.get("postprocess") or {}).items()
                ),
            )
        ]
        if info.get("mode") == "model"
        else []
    )
    cases = f"{info['n_cases']}" + (" volumes (slices stacked per patient)" if info.get("per_volume") else "")
    unscored = (
        f"{len(info.get('predictions_without_gt', []))} predictions without ground truth, "
        f"{len(info.get('gt_without_prediction', []))} ground truths without prediction"
    )
    return [
        ("Cases", cases),
        ("Data", what),
        *_model_rows(info),
        ("Labels", ", ".join(info["labels"])),
        *processing,
        ("Unscored", unscored),
        ("Created", info.get("created")),
    ]


def _summary_section(summary: pd.DataFrame, info: dict, st: dict) -> list:
    """Mean ± SD, median and bootstrap interval per class and metric, with the note on undefined values and units."""
    rows = [["Class", "Metric", "n", "Mean ± SD", "Median", "95% CI"]]
    for _, r in summary[summary["metric"].isin(SUMMARY_METRICS)].iterrows():
        d = 3 if r["metric"] in METRIC_NAMES else 1  # ratios to 0.001, distances to 0.1 (docs/units.md)
        rows.append(
            [
                r["class"],
                _metric_name(r["metric"]),
                f"{int(r['n'])}" + (f" (+{int(r['n_undefined'])} n/a)" if r["n_undefined"] else ""),
                f"{fmt(r['mean'], d)} ± {fmt(r['std'], d)}",
                fmt(r["median"], d),
                f"{fmt(r['ci95_low'], d)} - {fmt(r['ci95_high'], d)}",
            ]
        )
    note = (
        "n/a: undefined (e.g. precision with nothing predicted, distances with an empty mask); "
        "see docs/metrics.md for the empty-mask rules."
    )
    if not info.get("spacing_known", True):
        note += (
            " These images carry no pixel spacing: sizes are pixel counts and distances are in pixels "
            "(set data.pixel_spacing_mm for millimetres)."
        )
    return [
        para("Summary per class (mean ± SD, median, 95% bootstrap interval of the mean)", st["h2"]),
        table(rows),
        para(note, st["small"]),
    ]


def _beside_section(others: list[dict], st: dict) -> list:
    """This model against other methods on the cases both scored, and the best classical method by name."""
    if not others:
        return []
    rows = [["Method", "Kind", "Cases", "Its Dice", "This model", "Difference (95% CI)"]]
    for o in others:
        rows.append(
            [
                o["method"],
                "classical" if o["classical"] else "network",
                str(o["cases"]),
                fmt(o["base_mean"], 3),
                fmt(o["lever_mean"], 3),
                f"{o['mean_diff']:+.3f} ({o['ci95'][0]:+.3f} to {o['ci95'][1]:+.3f})",
            ]
        )
    flow = [para("Beside other methods on the same cases (mean Dice per case, paired)", st["h2"]), table(rows)]
    classical = [o for o in others if o["classical"]]
    if classical:
        best = max(classical, key=lambda o: o["base_mean"])
        flow.append(
            para(
                f"Best classical method: {best['method']}, Dice {best['base_mean']:.3f} on the same {best['cases']} "
                f"cases; this model scores {best['mean_diff']:+.3f} against it (95% CI {best['ci95'][0]:+.3f} to "
                f"{best['ci95'][1]:+.3f}, cases resampled).",
                st["body"],
            )
        )
    return flow


def _lesion_section(info: dict, st: dict) -> list:
    """Lesion-wise detection per class and IoU threshold (eval.json's lesion_detection; older evaluations have
    none, and get no section)."""
    record = info.get("lesion_detection") or {}
    if not record.get("rows"):
        return []
    ranked = record.get("ranked_by_probability", False)
    rows = [["Class", "IoU", "Lesions", "Found", "Missed", "False", "Precision", "Recall", "AP", "Sens. 1 FP", "2 FP"]]
    for r in record["rows"]:
        rows.append(
            [
                r["class"],
                fmt(r["iou"], 1),
                str(r["lesions_true"]),
                str(r["tp"]),
                str(r["fn"]),
                str(r["fp"]),
                fmt(r["precision"], 3),
                fmt(r["recall"], 3),
                *(fmt(r[k], 3) for k in ("ap", "sensitivity_at_1fp", "sensitivity_at_2fp")),
            ]
        )
    objects = bool(info.get("instances"))
    what = "Objects are those of the instance maps" if objects else "Lesions are connected components"
    note = (
        f"{what}. A predicted lesion is found when it overlaps a true one by at least the "
        "IoU shown, each true lesion once; AP ranks predicted lesions by their mean probability, and the "
        "sensitivities are the share found while false lesions stay at or below 1 and 2 per case."
    )
    if not ranked:
        note += " These masks came without probabilities, so lesions cannot be ranked: AP and sensitivities are n/a."
    title = "Object-wise detection at IoU 0.1 and 0.5" if objects else "Lesion-wise detection"
    return [para(title, st["h2"]), table(rows), para(note, st["small"])]


def _instance_section(info: dict, st: dict) -> list:
    """An instance task's object scores (eval.json's instances): the Data Science Bowl score, panoptic quality,
    COCO AP and counts."""
    r = info.get("instances")
    if not r or not r.get("cases"):
        return []
    rows = [
        ["Class", "Images", "Objects (true / found)", "DSB 2018", "PQ", "AP", "AP50", "AP75", "AR@100", "Count error"],
        [
            r["class"],
            str(r["cases"]),
            f"{r['objects_true']} / {r['objects_pred']}",
            *(fmt(r[k], 3) for k in ("dsb_mean", "pq_mean", "ap", "ap50", "ap75", "ar100")),
            f"{r['count_error_mean']:+.1f} (|{r['count_error_abs_mean']:.1f}|)",
        ],
    ]
    note = (
        "Objects as the model separated them. DSB 2018: per image TP / (TP + FP + FN) averaged over IoU 0.50-0.95, "
        "then over images; PQ: segmentation quality x recognition quality at IoU 0.5; AP: COCO's average precision "
        "(objects ranked by their mean probability), AP over IoU 0.50-0.95, at 0.5 and at 0.75; count error: found "
        "minus true objects per image, mean (mean absolute)."
    )
    return [para("Objects", st["h2"]), table(rows), para(note, st["small"])]


def _plots_section(eval_dir: Path, info: dict, st: dict) -> list:
    """The evaluation's plots that exist: box plots per class, surface distances, Dice against lesion size."""
    plots = {k: _beside(eval_dir, v) for k, v in info.get("plots", {}).items() if v}
    body = []
    if plots.get("boxplots"):
        body += [
            para("Distribution per class (each point a case)", st["h2"]),
            image(plots["boxplots"], max_w_mm=140, max_h_mm=105),
        ]
    if plots.get("distances"):
        body += [image(plots["distances"], max_w_mm=140, max_h_mm=55)]
    if plots.get("dice_vs_size"):
        body += [image(plots["dice_vs_size"], max_w_mm=100, max_h_mm=70)]
    if plots.get("pr_curve"):
        from reportlab.platypus import KeepTogether

        what = "objects" if info.get("instances") else "lesions"
        heading = para(f"Precision-recall of the {what}, ranked by mean probability", st["h2"])
        body.append(KeepTogether([heading, image(plots["pr_curve"], max_w_mm=100, max_h_mm=70)]))
    return body
