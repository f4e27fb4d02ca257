"""The parts every PDF report is built from (reportlab): paragraph styles, tables, images, the model card, page
furniture (footer with page numbers, the research-use banner) and writing the file whole or not at all.
"""

from __future__ import annotations

import math
from datetime import datetime
from pathlib import Path

from medseg import __version__
from medseg.errors import fail
from medseg.reporting.fonts import FONT, FONT_BOLD, Markup, esc, font_notes, register_fonts

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


def para(text, style):
    from reportlab.platypus import Paragraph

    return Paragraph(esc(text), style)


def styles():
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


def table(rows, col_widths=None, header=True):
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph, Table, TableStyle

    st = styles()
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


def kv_table(pairs, key_mm: float = 45, value_mm: float = 129):
    from reportlab.lib.units import mm

    return table(
        [[Markup(f"<b>{esc(k)}</b>"), v] for k, v in pairs], col_widths=[key_mm * mm, value_mm * mm], header=False
    )


def image(path, max_w_mm=174, max_h_mm=95, align="LEFT"):
    from reportlab.lib.units import mm
    from reportlab.lib.utils import ImageReader
    from reportlab.platypus import Image

    w, h = ImageReader(str(path)).getSize()
    scale = min(max_w_mm * mm / w, max_h_mm * mm / h)
    return Image(str(path), width=w * scale, height=h * scale, hAlign=align)


def build_pdf(path: Path, title: str, subtitle: str, story_body: list) -> Path:
    from reportlab.lib.pagesizes import A4
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    st = styles()
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
    story = [Paragraph(title, st["title"]), para(subtitle, st["subtitle"])] + story_body
    story += [para(note, st["small"]) for note in font_notes()]
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
    "initial_weights": "Initial weights",
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


def model_card_flow(card: dict | None) -> list:
    """The model card as one block that never splits over a page, with the note on its validation Dice."""
    from reportlab.platypus import KeepTogether

    st = styles()
    head = para("Model card", st["h2"])
    if not card:
        return [KeepTogether([head, para("The checkpoint that produced these results was not available.", st["body"])])]
    pairs = [(MODEL_CARD_NAMES[k], card.get(k) if card.get(k) not in (None, "") else "n/a") for k in MODEL_CARD_NAMES]
    return [KeepTogether([head, kv_columns(pairs), para(VALIDATION_NOTE, st["small"])])]


def kv_columns(pairs):
    """Key-value pairs in two column pairs (key, value, key, value): half the height of one long list."""
    from reportlab.lib.units import mm

    half = (len(pairs) + 1) // 2
    left, right = pairs[:half], pairs[half:] + [("", "")] * (2 * half - len(pairs))
    rows = [
        [Markup(f"<b>{esc(k1)}</b>"), v1, Markup(f"<b>{esc(k2)}</b>"), v2] for (k1, v1), (k2, v2) in zip(left, right)
    ]
    return table(rows, col_widths=[28 * mm, 59 * mm, 28 * mm, 59 * mm], header=False)


def side_by_side(left: list, right: list, left_mm: float, right_mm: float):
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


def settings_table(tta, post: dict | None, extra: dict | None = None):
    """Processing settings as a one-row table (setting names as headers), not as Python dict text."""
    settings = {"Test-time augmentation": "flips averaged" if tta else "off"}
    for k, v in (post or {}).items():
        settings[k.replace("_", " ").capitalize()] = ("yes" if v else "no") if isinstance(v, bool) else fmt_plain(v)
    settings.update(extra or {})
    return table([list(settings), list(settings.values())])


def fmt_plain(v) -> str:
    """A setting's value: numbers without trailing zeros, None as 'none'."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def pdf_target(out, default: Path, force: bool) -> Path:
    path = Path(out) if out else default
    if path.suffix.lower() != ".pdf":
        path = path / default.name
    if path.exists() and not force:
        raise fail(path, "already exists", "pass --force to overwrite or choose another --out")
    return path
