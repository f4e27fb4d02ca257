"""Fonts of the PDF reports: DejaVu Sans (embedded) for all text, CJK fonts for what it lacks, and a visible '?'
with a note for characters no font has. :func:`esc` turns plain text into reportlab paragraph markup set in them.
"""

from __future__ import annotations

from functools import lru_cache
from itertools import groupby
from pathlib import Path
from xml.sax.saxutils import escape as xml_escape

from medseg.viz import dejavu_codepoints, dejavu_font

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


def start_document() -> None:
    """Forget the characters noted while building the previous report."""
    _uncovered.clear()
    _viewer_cjk.clear()


def font_notes() -> list[str]:
    """The notes a report ends with about its characters: those no font covers (shown as '?'), and CJK text left
    to the viewer's fonts with how to embed one instead."""
    notes = []
    if _uncovered:  # fall back visibly: say which characters could not be printed
        notes.append(
            f"Characters no available font covers are shown as '{UNCOVERED}': "
            + " ".join(f"U+{ord(c):04X}" for c in sorted(_uncovered))
            + "."
        )
    if _viewer_cjk:  # not embedded: a viewer without Adobe's CJK fonts shows boxes, so say how to embed them
        notes.append(
            "Chinese, Japanese and Korean text uses the PDF viewer's Adobe CJK fonts (not embedded); "
            "install a CJK TrueType font such as WenQuanYi Micro Hei (Debian/Ubuntu: fonts-wqy-microhei) "
            "and medseg embeds it."
        )
    return notes
