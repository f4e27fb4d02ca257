"""Small image helpers shared by TensorBoard panels, overlays and reports.

Colours are from the Okabe-Ito colour-blind-safe palette.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

GT_COLOUR = (0, 158, 115)  # bluish green
PRED_COLOUR = (230, 159, 0)  # orange
FP_COLOUR = (204, 121, 167)  # reddish purple
FN_COLOUR = (86, 180, 233)  # sky blue
CLASS_COLOURS = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (240, 228, 66),
    (86, 180, 233),
    (213, 94, 0),
    (0, 0, 0),
]


def pyplot():
    """matplotlib's pyplot on the Agg backend: figures are written to files, never shown."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def mpl_colour(c) -> tuple:
    """An 8-bit RGB colour as matplotlib takes it (0-1 floats)."""
    return tuple(v / 255 for v in c)


def save_png(fig, target: Path, **kwargs) -> None:
    """Write the figure under a temporary name, then rename: a failed save leaves no half-written PNG. The figure is
    closed either way."""
    tmp = Path(target).with_name(f".{Path(target).name}.part.png")
    try:
        fig.savefig(tmp, dpi=130, **kwargs)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
        pyplot().close(fig)


def dejavu_font(style: str = "") -> Path:
    """DejaVu Sans as matplotlib ships it (always installed with medseg): Latin with accents, Greek, Cyrillic."""
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / f"DejaVuSans{style}.ttf"


@lru_cache(maxsize=1)
def dejavu_codepoints() -> frozenset[int]:
    """The characters DejaVu Sans has glyphs for."""
    from fontTools.ttLib import TTFont

    with TTFont(str(dejavu_font()), lazy=True) as font:
        return frozenset(font.getBestCmap())


def plain_text(text: str, missing: str = "?") -> str:
    """``text`` with the characters DejaVu Sans lacks (CJK, for one) replaced by a visible ``missing``: matplotlib
    would draw empty boxes for them and warn for each one."""
    have = dejavu_codepoints()
    return "".join(ch if ord(ch) in have or ch in "\n\t" else missing for ch in str(text))


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float image -> ``(H, W, 3)`` uint8 with a robust 1-99 percentile window."""
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    img = img[:3] if img.shape[0] >= 3 else np.repeat(img[:1], 3, axis=0)
    lo, hi = np.percentile(img, [1, 99])
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    return (np.moveaxis(img, 0, -1) * 255).astype(np.uint8)


def boundary(mask: np.ndarray) -> np.ndarray:
    """One-pixel inner boundary of a 2D boolean mask: its pixels with a 4-neighbour outside it (the image's edge
    is not a boundary)."""
    from skimage.segmentation import find_boundaries

    return find_boundaries(np.asarray(mask, dtype=bool), mode="inner", connectivity=1)


def overlay(rgb: np.ndarray, gt: np.ndarray | None, pred: np.ndarray | None, alpha: float = 0.35) -> np.ndarray:
    """Draw GT (green) and prediction (orange) contours, shade false positives and negatives."""
    out = rgb.astype(np.float32).copy()
    if gt is not None and pred is not None:
        g, p = gt.astype(bool), pred.astype(bool)
        for region, colour in ((p & ~g, FP_COLOUR), (g & ~p, FN_COLOUR)):
            out[region] = (1 - alpha) * out[region] + alpha * np.array(colour, np.float32)
    for mask, colour in ((gt, GT_COLOUR), (pred, PRED_COLOUR)):
        if mask is not None:
            out[boundary(mask)] = colour
    return out.astype(np.uint8)


def class_colour(c: int) -> tuple[int, int, int]:
    """The colour of class ``c`` (1, 2, ...) in overlays and viewer colour tables."""
    return CLASS_COLOURS[(c - 1) % len(CLASS_COLOURS)]


def label_tables(labels: list[str]) -> dict[str, str]:
    """Colour tables that name a label map's values in the viewers: ``labels.ctbl`` for 3D Slicer (load it, then
    pick it as the label map's colour table) and ``labels_itksnap.txt`` for ITK-SNAP (Segmentation > Import
    Label Descriptions). Value ``c`` is ``labels[c]``; the background is transparent."""
    import re

    slicer = ["# Color table file labels.ctbl", f"# {len(labels)} values", "0 background 0 0 0 0"]
    snap = [
        "################################################",
        "# ITK-SnAP Label Description File",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "################################################",
        '    0     0    0    0     0   0   0  "Clear Label"',
    ]
    for c, name in enumerate(labels[1:], start=1):
        r, g, b = class_colour(c)
        slicer_name = re.sub(r"\s+", "_", name.strip()) or f"class_{c}"  # Slicer: one word per name
        snap_name = name.replace('"', "'")
        slicer.append(f"{c} {slicer_name} {r} {g} {b} 255")
        snap.append(f'{c:5d} {r:5d} {g:4d} {b:4d}     1   1   1  "{snap_name}"')
    return {"labels.ctbl": "\n".join(slicer) + "\n", "labels_itksnap.txt": "\n".join(snap) + "\n"}
