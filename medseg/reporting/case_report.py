"""The one-case PDF report (``medseg report <case>_findings.json``): study facts, the software's findings, an
overlay, optionally the agreement with a ground-truth mask, the model card and the processing settings."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

from medseg.config.schema import value_classes
from medseg.data.lookup import metadata_rows
from medseg.errors import fail
from medseg.inference.facts import CaseFacts
from medseg.inference.findings import UNIT_LABELS, format_size
from medseg.io import file_ext
from medseg.reporting.fonts import Markup, esc, start_document
from medseg.reporting.pdf import (
    DISCLAIMER,
    build_pdf,
    fmt,
    image,
    kv_table,
    model_card_flow,
    para,
    pdf_target,
    settings_table,
    side_by_side,
    styles,
    table,
)


def image_size_text(shape, ndim: int) -> str:
    """2D shapes are (rows, columns): printed as width x height, the way image viewers give it."""
    if ndim == 2:
        return f"{shape[1]} × {shape[0]} px (width × height)"
    return " × ".join(str(s) for s in shape) + " voxels (x × y × z)"


def _spacing_text(geo: dict, known: bool) -> str:
    if not known:
        return "unknown (not in the file): sizes in pixels"
    return " × ".join(format_size(s) for s in geo["spacing_mm"]) + " mm"


def _read_findings(fpath: Path) -> dict:
    if not fpath.is_file():
        raise fail(fpath, "not found", "pass a <case>_findings.json written by medseg infer")
    try:
        f = json.loads(fpath.read_text(encoding="utf-8"))
        _ = f["case_id"], f["labels"], f["classes"], f["geometry"]["shape"]  # the keys a report needs
    except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
        raise fail(
            fpath, "is not a medseg findings file", "pass a <case>_findings.json written by medseg infer"
        ) from None
    return f


def _findings_units(f: dict) -> tuple[str, str, str, bool]:
    """``(size key suffix, printed size unit, length unit, spacing known)`` of a findings file, old or new."""
    known = bool(f.get("spacing_known", not f.get("spacing_assumed", False)))
    unit = f.get("unit", "mm2")
    label = f.get("unit_label") or UNIT_LABELS.get(unit, unit)
    return unit, label, f.get("length_unit", "mm" if known else "px"), known


def _findings_table(f: dict):
    unit, label, length, _ = _findings_units(f)
    ndim = len(f["geometry"]["shape"])
    where = "RAS mm" if ndim == 3 else f"row, column {length}"
    noun = "object" if f.get("objects") is not None else "lesion"
    rows = [
        [
            "Class",
            f"{noun.capitalize()}s",
            f"Total size ({label})",
            f"Largest {noun} ({label})",
            f"Largest {noun} diameter ({length})",
            f"Largest {noun} centre ({where})",
        ]
    ]
    for name, c in f["classes"].items():
        largest = c["lesions"][0] if c["lesions"] else None
        centre = (largest or {}).get(f"centroid_{length}") or (largest or {}).get("centroid_mm")
        diameter = (largest or {}).get(f"max_diameter_{length}")
        rows.append(
            [
                name,
                c["n_lesions"],
                format_size(c.get(f"total_{unit}")),
                format_size(c.get(f"largest_{unit}")),
                fmt(diameter, 1) if largest else "none",
                ", ".join(fmt(v, 1) for v in centre) if centre else "none",
            ]
        )
    return table(rows)


def _agreement_table(f: dict, gt, case_id: str, labels: list[str]):
    from medseg.evaluation.masks import read_label_map
    from medseg.evaluation.tables import metrics_rows

    _, _, length, known = _findings_units(f)
    pred, _, _ = read_label_map(Path(f["segmentation"]), len(labels))
    g, spacing, _ = read_label_map(Path(gt), len(labels), value_classes(labels, f.get("label_values")))
    if pred.shape != g.shape:
        raise fail(
            gt,
            f"ground truth shape {g.shape} differs from the segmentation {pred.shape}",
            "pass the ground truth of this case",
        )
    if pred.ndim == 2:
        spacing = tuple(f["geometry"]["spacing_mm"]) if known else None
    rows = [["Class", "Dice", "Jaccard", "Precision", "Recall", f"HD95 ({length})", f"ASSD ({length})"]]
    for r in metrics_rows(case_id, pred, g, spacing, labels):
        hd, asd = (r.get(f"{k}_{length}", r.get(f"{k}_mm")) for k in ("hd95", "assd"))
        rows.append(
            [
                r["class"],
                fmt(r["dice"]),
                fmt(r["jaccard"]),
                fmt(r["precision"]),
                fmt(r["recall"]),
                fmt(hd, 1),
                fmt(asd, 1),
            ]
        )
    return table(rows)


def case_report(
    findings_json: str | Path, out: str | Path | None = None, gt: str | Path | None = None, force: bool = False
) -> Path:
    """Write a one-case PDF from ``<case>_findings.json``; with ``gt`` the metrics are included. One A4 page for a 2D
    case. Nothing is left behind when it fails: the overlay PNG is kept only beside a finished PDF."""
    from medseg.reporting.overlays import save_case_overlay

    start_document()
    fpath = Path(findings_json)
    f = _read_findings(fpath)
    case_id, labels, geo = f["case_id"], f["labels"], f["geometry"]
    if gt is not None and not Path(gt).is_file():
        raise fail(gt, "not found", "pass --gt the ground-truth mask of this case")
    target = pdf_target(out, Path("reports") / f"{case_id}_report.pdf", force)
    st = styles()
    known = _findings_units(f)[3]
    ndim = len(geo["shape"])
    meta = f.get("metadata") or {}
    info = _study_section(f, meta, known, st)
    findings = _findings_section(f, known, st)
    agreement = (
        _agreement_table(f, gt, case_id, labels) if gt else None
    )  # refuses a wrong --gt before any file is written
    overlay = target.with_name(f"{case_id}_overlay.png")
    drawn = overlay.with_name(f".{overlay.name}.tmp.png")
    sizes_png = overlay.with_name(f".{case_id}_sizes.tmp.png")
    try:
        if f.get("objects") is not None:
            findings += _objects_section(f, sizes_png, st)
        save_case_overlay(
            f["input"][0] if len(f["input"]) == 1 else f["input"],
            str(gt) if gt else None,
            f["segmentation"],
            labels,
            drawn,
            title="",
            spacing_2d=tuple(geo["spacing_mm"]) if ndim == 2 and known else None,
            modality=(f.get("channels") or [meta.get("modality")])[0],
            instances=f.get("objects") is not None,
            values=value_classes(labels, f.get("label_values")),
        )
        if ndim == 2:  # the picture beside the study tables, so that a 2D case fits one page
            picture = [para("Overlay", st["h2"]), image(drawn, max_w_mm=86, max_h_mm=95)]
            body = [side_by_side(picture, info, 88, 86)] + findings
        else:  # the slice panels of a volume need the page's width
            body = info + findings + [para("Overlay", st["h2"]), image(drawn, max_h_mm=62)]
        if agreement is not None:
            body += [para("Agreement with ground truth", st["h2"]), agreement]
        body += model_card_flow(_saved_model_card(f))
        total_s = (f.get("timings") or {}).get("total_s")
        body += [
            para("Processing", st["h2"]),
            settings_table(
                f.get("tta"), f.get("postprocess"), {"Device": str(f.get("device")), "Time": f"{fmt(total_s, 1)} s"}
            ),
            para(f"Segmentation file: {f['segmentation']}", st["small"]),
            para(DISCLAIMER, st["disclaimer"]),
        ]
        pdf = build_pdf(target, "Segmentation report", f"Case {case_id} - {datetime.now():%Y-%m-%d}", body)
        drawn.replace(overlay)
        return pdf
    finally:
        drawn.unlink(missing_ok=True)
        sizes_png.unlink(missing_ok=True)


def _study_section(f: dict, meta: dict, known: bool, st: dict) -> list:
    """What was segmented: source, modality, size, spacing, the data set's metadata, the DICOM series left out and
    the data set's own reference annotation (labelled as not this software's finding)."""
    geo = f["geometry"]
    ndim = len(geo["shape"])
    study_meta, reference = metadata_rows(meta, f["input"][0] if f.get("input") else "")
    study = [
        ("Source file", Markup("<br/>".join(esc(Path(p).name) for p in f["input"]))),
        ("Modality", meta.get("modality") or ", ".join(f.get("channels", []))),
        ("Image size", image_size_text(geo["shape"], ndim)),
        ("Pixel spacing" if ndim == 2 else "Voxel spacing", _spacing_text(geo, known)),
        *study_meta,
    ]
    others = CaseFacts.from_findings(f).other_series
    if others:  # the reader took the largest series of the folder: say which ones it did not segment
        series = [esc(f"series '{o['description'] or o['series_uid']}' ({o['files']} files)") for o in others]
        study.append(("Not segmented", Markup("<br/>".join(series))))
    info = [para("Study information", st["h2"]), kv_table(study, 34, 52)]
    if reference:
        info += [
            para("Reference annotation", st["h2"]),
            para("From the data set's own table: not a finding of this software.", st["small"]),
            kv_table(reference, 34, 52),
        ]
    return info


def _findings_section(f: dict, known: bool, st: dict) -> list:
    units = (
        ""
        if known
        else " The pixel size is unknown, so sizes are pixel counts (px²) and lengths in "
        "pixels; set data.pixel_spacing_mm for millimetres."
    )
    what = (
        "Objects are those the model separated, touching ones apart (the instance map)."
        if f.get("objects") is not None
        else "Lesions are connected regions of one class."
    )
    return [
        para("Findings (this software)", st["h2"]),
        _findings_table(f),
        para(f"Coordinates: {f.get('coordinates', '')}. {what}" + units, st["small"]),
    ]


def _objects_section(f: dict, target: Path, st: dict) -> list:
    """An instance map's objects: the count per class, their sizes (median, quartiles, range) and a histogram."""
    import numpy as np

    unit, label, _, _ = _findings_units(f)
    rows = [["Class", "Objects", f"Median size ({label})", f"Quartiles ({label})", f"Range ({label})"]]
    sizes_by_class: dict[str, list] = {}
    for o in f["objects"]:
        sizes_by_class.setdefault(o["class"], []).append(float(o[f"size_{unit}"]))
    for name, sizes in sizes_by_class.items():
        q1, med, q3 = np.percentile(sizes, [25, 50, 75])
        rows.append(
            [name, len(sizes), format_size(med), f"{format_size(q1)} - {format_size(q3)}",
             f"{format_size(min(sizes))} - {format_size(max(sizes))}"]
        )  # fmt: skip
    out = [para("Objects", st["h2"])]
    if not sizes_by_class:
        return out + [para("No objects were found.", st["small"])]
    _size_histogram(sizes_by_class, label, target)
    return out + [table(rows), image(target, max_w_mm=120, max_h_mm=45)]


def _size_histogram(sizes_by_class: dict[str, list], label: str, target: Path) -> None:
    from medseg.viz import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 2.0))
    for name, sizes in sizes_by_class.items():
        ax.hist(sizes, bins=min(40, max(5, len(sizes) // 4)), alpha=0.8, label=f"{name} ({len(sizes)})")
    ax.set_xlabel(f"object size ({label})", fontsize=8)
    ax.set_ylabel("objects", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, frameon=False)
    save_png(fig, target, bbox_inches="tight")


def _saved_model_card(f: dict) -> dict | None:
    """The model card of the checkpoint, or the ONNX/TorchScript export (whose metadata carries the checkpoint's
    description), that the findings name, when that file is still on disk."""
    from medseg.checkpoint import load_checkpoint
    from medseg.evaluation.evaluate import model_card
    from medseg.export import EXPORTED_EXTS, read_metadata

    m = (f.get("models") or [{}])[0]
    path = Path(m["path"]) if m.get("path") else None
    if path is None or not path.is_file():
        return None
    described = read_metadata(path) if file_ext(path) in EXPORTED_EXTS else load_checkpoint(path)
    return model_card(described, m.get("sha256_12", ""))
