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
from functools import lru_cache
from itertools import groupby
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

import pandas as pd

from medseg import __version__
from medseg.data.lookup import metadata_rows, reference_diagnosis
from medseg.errors import fail
from medseg.evaluation.findings import UNIT_LABELS, format_size
from medseg.inference.facts import CaseFacts
from medseg.reporting.viz import dejavu_codepoints, dejavu_font

DISCLAIMER = (
    "Research software, not a medical device. These results were produced automatically by a machine-learning "
    "model and are not a diagnosis; they must be reviewed by a qualified clinician before any clinical use."
)


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
# fonts and text
# ----------------------------------------------------------------------------

FONT, FONT_BOLD = "DejaVuSans", "DejaVuSans-Bold"
# Characters DejaVu Sans lacks: Korean, Japanese kana, then the other CJK blocks (Han, CJK punctuation, full-width
# forms), each in a standard Adobe CID font. Those are not embedded: every PDF viewer supplies them.
CJK_FONTS = (
    ((0x1100, 0x11FF), (0x3130, 0x318F), (0xAC00, 0xD7AF), "HYSMyeongJo-Medium"),
    ((0x3040, 0x30FF), (0x31F0, 0x31FF), (0xFF65, 0xFF9F), "HeiseiKakuGo-W5"),
    (
        (0x2E80, 0x2FDF),
        (0x3000, 0x303F),
        (0x3100, 0x312F),
        (0x3190, 0x31EF),
        (0x3200, 0x4DBF),
        (0x4E00, 0x9FFF),
        (0xF900, 0xFAFF),
        (0xFE30, 0xFE4F),
        (0xFF00, 0xFFEF),
        (0x20000, 0x2FA1F),
        "STSong-Light",
    ),
)
UNCOVERED = "?"
_uncovered: set[str] = set()  # characters of the report being built that no font covers (shown as '?')
_viewer_cjk: set[str] = set()  # characters set in a CID font, which the PDF viewer has to supply
# TrueType CJK fonts, in order of preference, that reportlab can embed (CFF-based OpenType such as Noto Sans CJK
# cannot be): where one is installed, CJK text is embedded and shows in every viewer.
CJK_TTF = (
    "wqy-microhei.ttc",
    "wqy-zenhei.ttc",
    "DroidSansFallbackFull.ttf",
    "DroidSansFallback.ttf",
    "msyh.ttc",
    "msyh.ttf",
    "simhei.ttf",
    "simsun.ttc",
    "malgun.ttf",
    "Arial Unicode.ttf",
    "ArialUnicode.ttf",
)
CJK_EMBEDDED = "CJKEmbedded"


@lru_cache(maxsize=1)
def embedded_cjk_codepoints() -> frozenset[int]:
    """Register the first installed font of :data:`CJK_TTF` as :data:`CJK_EMBEDDED`; the code points it covers
    (empty when none is installed or none loads)."""
    from matplotlib import font_manager
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    installed = {Path(f).name.lower(): f for f in font_manager.findSystemFonts()}
    for name in CJK_TTF:
        path = installed.get(name.lower())
        if not path:
            continue
        try:
            font = TTFont(CJK_EMBEDDED, path, subfontIndex=0)
        except Exception:  # noqa: BLE001, S112 - a font reportlab cannot read: try the next one
            continue
        pdfmetrics.registerFont(font)
        return frozenset(font.face.charToGlyph)
    return frozenset()


@lru_cache(maxsize=1)
def register_fonts() -> None:
    """DejaVu Sans (embedded, from matplotlib) for all text, so accented and Greek/Cyrillic names print; the
    CJK CID fonts for what it lacks. Helvetica, reportlab's default, covers Latin-1 only."""
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.ttfonts import TTFont

    styles = {
        FONT: ("", 0, 0),
        FONT_BOLD: ("-Bold", 1, 0),
        "DejaVuSans-Oblique": ("-Oblique", 0, 1),
        "DejaVuSans-BoldOblique": ("-BoldOblique", 1, 1),
    }
    for name, (suffix, bold, italic) in styles.items():
        pdfmetrics.registerFont(TTFont(name, str(dejavu_font(suffix))))
        addMapping(FONT, bold, italic, name)
    for *_, cid in CJK_FONTS:
        pdfmetrics.registerFont(UnicodeCIDFont(cid))


def _font_for(ch: str) -> str | None:
    """None when DejaVu Sans has ``ch``, else the CJK font that has it, else UNCOVERED."""
    code = ord(ch)
    if code in dejavu_codepoints() or ch in "\n\t":
        return None
    for *ranges, font in CJK_FONTS:
        if any(lo <= code <= hi for lo, hi in ranges):
            return CJK_EMBEDDED if code in embedded_cjk_codepoints() else font
    return UNCOVERED


class Markup(str):
    """Text already in reportlab's paragraph markup (``<b>``, ``<br/>``): tables and paragraphs keep it as it is."""


def esc(text) -> Markup:
    """Plain text -> paragraph markup: ``<``, ``&`` escaped (a case named 'a&b' would break the PDF otherwise), CJK
    runs set in a CJK font, other characters no font has shown as a visible '?' (and noted under the report)."""
    if isinstance(text, Markup):
        return text
    out = []
    for font, run in groupby(str(text), key=_font_for):
        run = "".join(run)
        if font is None:
            out.append(xml_escape(run))
        elif font == UNCOVERED:
            _uncovered.update(run)
            out.append(UNCOVERED * len(run))
        else:
            if font != CJK_EMBEDDED:
                _viewer_cjk.update(run)
            out.append(f'<font name="{font}">{xml_escape(run)}</font>')
    return Markup("".join(out))


def _para(text, style):
    from reportlab.platypus import Paragraph

    return Paragraph(esc(text), style)


# ----------------------------------------------------------------------------
# document scaffolding
# ----------------------------------------------------------------------------


def _styles():
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet

    register_fonts()
    ss = getSampleStyleSheet()
    base = ParagraphStyle("body", parent=ss["BodyText"], fontName=FONT, fontSize=9, leading=12)
    return {
        "title": ParagraphStyle(
            "t", parent=ss["Title"], fontName=FONT_BOLD, fontSize=16, leading=20, spaceAfter=2, alignment=0
        ),
        "subtitle": ParagraphStyle("st", parent=base, textColor=colors.HexColor("#555555")),
        "h2": ParagraphStyle(
            "h2",
            parent=ss["Heading2"],
            fontName=FONT_BOLD,
            fontSize=11,
            leading=13,
            spaceBefore=7,
            spaceAfter=3,
            textColor=colors.HexColor("#0b3d66"),
        ),
        "body": base,
        "small": ParagraphStyle("s", parent=base, fontSize=7.5, leading=9.5),
        "cell": ParagraphStyle("c", parent=base, fontSize=8, leading=10),
        "head": ParagraphStyle("hc", parent=base, fontName=FONT_BOLD, fontSize=8, leading=10),
        "caption": ParagraphStyle("cap", parent=base, fontSize=8, leading=10, alignment=1),
        "disclaimer": ParagraphStyle(
            "d",
            parent=base,
            fontSize=8,
            leading=10.5,
            textColor=colors.HexColor("#7a1f00"),
            borderColor=colors.HexColor("#d55e00"),
            borderWidth=0.8,
            borderPadding=5,
            spaceBefore=8,
        ),
    }


def _table(rows, col_widths=None, header=True):
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    st = _styles()
    data = [[Paragraph(esc(c), st["head" if header and i == 0 else "cell"]) for c in r] for i, r in enumerate(rows)]
    t = Table(data, colWidths=col_widths, repeatRows=1 if header else 0, hAlign="LEFT")
    style = [
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#bbbbbb")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("TOPPADDING", (0, 0), (-1, -1), 1.5),
        ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5),
    ]
    if header:
        style.append(("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e8eef5")))
    for i in range(1 + header, len(rows), 2):
        style.append(("BACKGROUND", (0, i), (-1, i), colors.HexColor("#f7f7f7")))
    t.setStyle(TableStyle(style))
    return t


def _kv_table(pairs, key_mm: float = 45, value_mm: float = 129):
    from reportlab.lib.units import mm

    return _table(
        [[Markup(f"<b>{esc(k)}</b>"), v] for k, v in pairs], col_widths=[key_mm * mm, value_mm * mm], header=False
    )


def _image(path, max_w_mm=174, max_h_mm=95, align="LEFT"):
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    w, h = ImageReader(str(path)).getSize()
    scale = min(max_w_mm * mm / w, max_h_mm * mm / h)
    return Image(str(path), width=w * scale, height=h * scale, hAlign=align)


def _build(path: Path, title: str, subtitle: str, story_body: list) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    st = _styles()
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")

    def on_page(canvas, doc):
        canvas.saveState()
        canvas.setFont(FONT, 7.5)
        canvas.setFillGray(0.35)
        canvas.drawString(18 * mm, 10 * mm, f"medseg {__version__} - {title} - generated {stamp}")
        canvas.drawRightString(A4[0] - 18 * mm, 10 * mm, f"Page {doc.page}")
        canvas.drawString(18 * mm, A4[1] - 10 * mm, "RESEARCH USE ONLY - NOT FOR DIAGNOSIS")
        canvas.restoreState()

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    doc = SimpleDocTemplate(
        str(tmp),
        pagesize=A4,
        leftMargin=18 * mm,
        rightMargin=18 * mm,
        topMargin=15 * mm,
        bottomMargin=16 * mm,
        title=title,
        author="medseg",
        subject=subtitle,
    )
    story = [Paragraph(title, st["title"]), _para(subtitle, st["subtitle"])] + story_body
    if _uncovered:  # fall back visibly: say which characters could not be printed
        story.append(
            _para(
                f"Characters no available font covers are shown as '{UNCOVERED}': "
                + " ".join(f"U+{ord(c):04X}" for c in sorted(_uncovered))
                + ".",
                st["small"],
            )
        )
    if _viewer_cjk:  # not embedded: a viewer without Adobe's CJK fonts shows boxes, so say how to embed them
        story.append(
            _para(
                "Chinese, Japanese and Korean text uses the PDF viewer's Adobe CJK fonts (not embedded); "
                "install a CJK TrueType font such as WenQuanYi Micro Hei (Debian/Ubuntu: fonts-wqy-microhei) "
                "and medseg embeds it.",
                st["small"],
            )
        )
    try:
        doc.build(story, onFirstPage=on_page, onLaterPages=on_page)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


MODEL_CARD_NAMES = {
    "architecture": "Architecture",
    "inputs": "Input channels",
    "labels": "Labels",
    "training_data": "Training data",
    "split": "Split",
    "validation": "Validation (best epoch)",
    "epochs": "Epochs trained",
    "medseg_version": "medseg version",
    "checkpoint_sha256_12": "Checkpoint SHA-256",
    "trained": "Trained",
}
VALIDATION_NOTE = (
    "The validation Dice above was measured during training on the preprocessed grid (images resampled "
    "to the training size), without test-time augmentation or post-processing; the agreement in this "
    "report is measured at the original resolution, with the processing settings listed, so the two "
    "numbers differ."
)


def _model_card_flow(card: dict | None) -> list:
    """The model card as one block that never splits over a page, with the note on its validation Dice."""
    from reportlab.platypus import KeepTogether

    st = _styles()
    head = _para("Model card", st["h2"])
    if not card:
        return [
            KeepTogether([head, _para("The checkpoint that produced these results was not available.", st["body"])])
        ]
    pairs = [(MODEL_CARD_NAMES[k], card.get(k) if card.get(k) not in (None, "") else "n/a") for k in MODEL_CARD_NAMES]
    return [KeepTogether([head, _kv_columns(pairs), _para(VALIDATION_NOTE, st["small"])])]


def _kv_columns(pairs):
    """Key-value pairs in two column pairs (key, value, key, value): half the height of one long list."""
    from reportlab.lib.units import mm

    half = (len(pairs) + 1) // 2
    left, right = pairs[:half], pairs[half:] + [("", "")] * (2 * half - len(pairs))
    rows = [
        [Markup(f"<b>{esc(k1)}</b>"), v1, Markup(f"<b>{esc(k2)}</b>"), v2] for (k1, v1), (k2, v2) in zip(left, right)
    ]
    return _table(rows, col_widths=[28 * mm, 59 * mm, 28 * mm, 59 * mm], header=False)


def _side_by_side(left: list, right: list, left_mm: float, right_mm: float):
    """Two columns of flowables (an overlay beside its tables)."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Table, TableStyle

    t = Table([[left, right]], colWidths=[left_mm * mm, right_mm * mm], hAlign="LEFT")
    t.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LEFTPADDING", (0, 0), (-1, -1), 0),
                ("RIGHTPADDING", (0, 0), (-1, -1), 0),
                ("TOPPADDING", (0, 0), (-1, -1), 0),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 0),
            ]
        )
    )
    return t


def _settings_table(tta, post: dict | None, extra: dict | None = None):
    """Processing settings as a one-row table (setting names as headers), not as Python dict text."""
    settings = {"Test-time augmentation": "flips averaged" if tta else "off"}
    for k, v in (post or {}).items():
        settings[k.replace("_", " ").capitalize()] = ("yes" if v else "no") if isinstance(v, bool) else fmt_plain(v)
    settings.update(extra or {})
    return _table([list(settings), list(settings.values())])


def fmt_plain(v) -> str:
    """A setting's value: numbers without trailing zeros, None as 'none'."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


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
        f = json.loads(fpath.read_text())
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
    rows = [
        [
            "Class",
            "Lesions",
            f"Total size ({label})",
            f"Largest lesion ({label})",
            f"Largest lesion diameter ({length})",
            f"Largest lesion centre ({where})",
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
    return _table(rows)


def _agreement_table(f: dict, gt, case_id: str, labels: list[str]):
    from medseg.evaluation.masks import read_label_map
    from medseg.evaluation.tables import metrics_rows

    _, _, length, known = _findings_units(f)
    pred, _, _ = read_label_map(Path(f["segmentation"]), len(labels))
    g, spacing, _ = read_label_map(Path(gt), len(labels))
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
    return _table(rows)


def case_report(
    findings_json: str | Path, out: str | Path | None = None, gt: str | Path | None = None, force: bool = False
) -> Path:
    """Write a one-case PDF from ``<case>_findings.json``; with ``gt`` the metrics are included. One A4 page for a 2D
    case. Nothing is left behind when it fails: the overlay PNG is kept only beside a finished PDF."""
    from medseg.checkpoint import load_checkpoint
    from medseg.evaluation.evaluate import model_card
    from medseg.reporting.overlays import save_case_overlay

    _uncovered.clear()
    _viewer_cjk.clear()
    fpath = Path(findings_json)
    f = _read_findings(fpath)
    case_id, labels, geo = f["case_id"], f["labels"], f["geometry"]
    if gt is not None and not Path(gt).is_file():
        raise fail(gt, "not found", "pass --gt the ground-truth mask of this case")
    target = _target(out, Path("reports") / f"{case_id}_report.pdf", force)
    st = _styles()
    known = _findings_units(f)[3]
    ndim = len(geo["shape"])
    meta = f.get("metadata") or {}
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
        study.append(
            (
                "Not segmented",
                Markup(
                    "<br/>".join(
                        esc(f"series '{o['description'] or o['series_uid']}' ({o['files']} files)") for o in others
                    )
                ),
            )
        )
    info = [_para("Study information", st["h2"]), _kv_table(study, 34, 52)]
    if reference:
        info += [
            _para("Reference annotation", st["h2"]),
            _para("From the data set's own table: not a finding of this software.", st["small"]),
            _kv_table(reference, 34, 52),
        ]
    findings = [
        _para("Findings (this software)", st["h2"]),
        _findings_table(f),
        _para(
            f"Coordinates: {f.get('coordinates', '')}. Lesions are connected regions of one class."
            + (
                ""
                if known
                else " The pixel size is unknown, so sizes are pixel counts (px²) and lengths in "
                "pixels; set data.pixel_spacing_mm for millimetres."
            ),
            st["small"],
        ),
    ]
    agreement = (
        _agreement_table(f, gt, case_id, labels) if gt else None
    )  # refuses a wrong --gt before any file is written
    overlay = target.with_name(f"{case_id}_overlay.png")
    drawn = overlay.with_name(f".{overlay.name}.tmp.png")
    try:
        save_case_overlay(
            f["input"][0] if len(f["input"]) == 1 else f["input"],
            str(gt) if gt else None,
            f["segmentation"],
            labels,
            drawn,
            title="",
            spacing_2d=tuple(geo["spacing_mm"]) if ndim == 2 and known else None,
            modality=(f.get("channels") or [meta.get("modality")])[0],
        )
        if ndim == 2:  # the picture beside the study tables, so that a 2D case fits one page
            picture = [_para("Overlay", st["h2"]), _image(drawn, max_w_mm=86, max_h_mm=95)]
            body = [_side_by_side(picture, info, 88, 86)] + findings
        else:  # the slice panels of a volume need the page's width
            body = info + findings + [_para("Overlay", st["h2"]), _image(drawn, max_h_mm=62)]
        if agreement is not None:
            body += [_para("Agreement with ground truth", st["h2"]), agreement]
        card = None
        m = (f.get("models") or [{}])[0]
        if m.get("path") and Path(m["path"]).is_file():
            card = model_card(load_checkpoint(m["path"]), m.get("sha256_12", ""))
        body += _model_card_flow(card)
        total_s = (f.get("timings") or {}).get("total_s")
        body += [
            _para("Processing", st["h2"]),
            _settings_table(
                f.get("tta"), f.get("postprocess"), {"Device": str(f.get("device")), "Time": f"{fmt(total_s, 1)} s"}
            ),
            _para(f"Segmentation file: {f['segmentation']}", st["small"]),
            _para(DISCLAIMER, st["disclaimer"]),
        ]
        pdf = _build(target, "Segmentation report", f"Case {case_id} - {datetime.now():%Y-%m-%d}", body)
        drawn.replace(overlay)
        return pdf
    finally:
        drawn.unlink(missing_ok=True)


# ----------------------------------------------------------------------------
# cohort
# ----------------------------------------------------------------------------

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
    return _table(rows)


def _ranked_grid(eval_dir: Path, info: dict, dice: pd.Series, diagnoses: dict[str, str]) -> list:
    """Best, median and worst case in two columns. The overlay carries the case name and rank in its own title,
    so the caption under it adds only what the picture lacks (mean Dice, reference diagnosis)."""
    from reportlab.lib.units import mm
    from reportlab.platypus import Table, TableStyle

    st = _styles()
    cells = []
    for tag, cid in (info.get("ranked") or {}).items():
        if tag not in ("best", "median", "worst"):
            continue
        case = info["cases"].get(cid, {})
        overlay = _beside(eval_dir, case["overlay"]) if case.get("overlay") else None
        cell = (
            [_image(overlay, max_w_mm=84, max_h_mm=100, align="CENTER")] if overlay and Path(overlay).is_file() else []
        )
        caption = (
            f"Mean Dice {fmt(dice.get(cid))}"
            if cell  # the overlay's own title names the case and its rank
            else f"{tag.capitalize()}: {cid} (no overlay), mean Dice {fmt(dice.get(cid))}"
        )
        if diagnoses.get(str(cid)):
            caption += f", reference diagnosis: {diagnoses[str(cid)]}"
        cells.append((["best", "median", "worst"].index(tag), cell + [_para(caption, st["caption"])]))
    cells = [c for _, c in sorted(cells, key=lambda kv: kv[0])]
    if not cells:
        return []
    rows = [cells[i : i + 2] + [""] * (2 - len(cells[i : i + 2])) for i in range(0, len(cells), 2)]
    t = Table(rows, colWidths=[87 * mm, 87 * mm], hAlign="LEFT")
    t.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP"), ("BOTTOMPADDING", (0, 0), (-1, -1), 8)]))
    return [_para("Best, median and worst cases (by mean Dice)", st["h2"]), t]


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
    return _table(rows, col_widths=[w * mm for w in widths] if widths else None)


METRIC_NAMES = {"dice": "Dice", "jaccard": "Jaccard", "precision": "Precision", "recall": "Recall"}


def _metric_name(metric: str) -> str:
    """'hd95_px' -> 'HD95 (px)': the unit in words, never a column name."""
    if metric in METRIC_NAMES:
        return METRIC_NAMES[metric]
    name, _, unit = metric.partition("_")
    return f"{name.upper()} ({unit})" if unit else metric


def cohort_report(eval_dir: str | Path, out: str | Path | None = None, force: bool = False) -> Path:
    """Write a cohort PDF from an evaluation folder (metrics.csv, summary.csv, eval.json, plots)."""
    from reportlab.platypus import PageBreak

    _uncovered.clear()
    _viewer_cjk.clear()
    eval_dir = Path(eval_dir)
    for f in ("metrics.csv", "summary.csv", "eval.json"):
        if not (eval_dir / f).is_file():
            raise fail(eval_dir, f"has no {f}", "run medseg evaluate first and pass its --out folder")
    info = json.loads((eval_dir / "eval.json").read_text())
    df = pd.read_csv(eval_dir / "metrics.csv", dtype={"case_id": str})
    summary = pd.read_csv(eval_dir / "summary.csv")
    target = _target(out, Path("reports") / f"{eval_dir.resolve().name}_cohort_report.pdf", force)
    st = _styles()
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
    body = [
        _para("Evaluation", st["h2"]),
        _kv_table(
            [
                (
                    "Cases",
                    f"{info['n_cases']}" + (" volumes (slices stacked per patient)" if info.get("per_volume") else ""),
                ),
                ("Data", what),
                *_model_rows(info),
                ("Labels", ", ".join(info["labels"])),
                *processing,
                (
                    "Unscored",
                    (
                        f"{len(info.get('predictions_without_gt', []))} predictions without ground truth, "
                        f"{len(info.get('gt_without_prediction', []))} ground truths without prediction"
                    ),
                ),
                ("Created", info.get("created")),
            ]
        ),
        _para("Summary per class (mean ± SD, median, 95% bootstrap interval of the mean)", st["h2"]),
    ]
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
    body.append(_table(rows))
    body.append(
        _para(
            "n/a: undefined (e.g. precision with nothing predicted, distances with an empty mask); "
            "see the README for the empty-mask rules."
            + (
                " These images carry no pixel spacing: sizes are pixel counts and distances are in pixels "
                "(set data.pixel_spacing_mm for millimetres)."
                if not info.get("spacing_known", True)
                else ""
            ),
            st["small"],
        )
    )
    dice = _case_dice(df)
    diagnoses = _diagnoses(info)
    if diagnoses:
        body += [
            _para("Dice per reference diagnosis (the data set's own diagnosis)", st["h2"]),
            _diagnosis_summary(dice, diagnoses),
        ]
    plots = {k: _beside(eval_dir, v) for k, v in info.get("plots", {}).items() if v}
    if plots.get("boxplots"):
        body += [
            _para("Distribution per class (each point a case)", st["h2"]),
            _image(plots["boxplots"], max_w_mm=140, max_h_mm=105),
        ]
    if plots.get("distances"):
        body += [_image(plots["distances"], max_w_mm=140, max_h_mm=55)]
    if plots.get("dice_vs_size"):
        body += [_image(plots["dice_vs_size"], max_w_mm=100, max_h_mm=70)]
    grid = _ranked_grid(eval_dir, info, dice, diagnoses)
    if grid:
        body += [PageBreak(), *grid]
    body += [
        PageBreak(),
        _para("Per-case results (lowest mean Dice first)", st["h2"]),
        _per_case_table(df, dice, diagnoses, info),
    ]
    body += _model_card_flow(info.get("model_card"))
    body.append(_para(DISCLAIMER, st["disclaimer"]))
    return _build(target, "Cohort evaluation report", f"{info['n_cases']} cases - {datetime.now():%Y-%m-%d}", body)
