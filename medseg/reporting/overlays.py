"""Overlay PNGs (matplotlib, colour-blind-safe Okabe-Ito colours).

Contours: ground truth solid, prediction dashed. Binary tasks shade false
positives (reddish purple) and false negatives (sky blue); multi-class tasks use one
colour per label, named in the legend. Every panel of known pixel spacing has a scale bar in mm; images without
one (2D files, stacked slices) get none, since a bar in pixels would read as millimetres.
3D volumes are shown in radiological convention (patient right on the left).

Instance maps (``instances=True``, 2D): each predicted object is outlined in its own colour, so that touching
objects read as separate ones, and the true objects' outlines are white.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.data.base import Recipe
from medseg.data.stacking import stack_slices
from medseg.evaluation.masks import read_label_map
from medseg.io import IMAGE_2D_EXTS, file_ext, read_image_2d, read_volume
from medseg.viz import (
    FN_COLOUR,
    FP_COLOUR,
    GT_COLOUR,
    PRED_COLOUR,
    class_colour,
    mpl_colour,
    plain_text,
    pyplot,
    save_png,
    to_display_rgb,
)


def _class_colour(c: int, binary: bool, kind: str):
    if binary:
        return mpl_colour(GT_COLOUR if kind == "gt" else PRED_COLOUR)
    return mpl_colour(class_colour(c))


def _scale_bar(ax, shape, spacing_col: float, spacing_known: bool = True) -> None:
    """A bar of a round number of mm, about a quarter of the width; none when the spacing is unknown."""
    if not spacing_known:
        return
    width_mm = shape[1] * spacing_col
    nice = [1, 2, 5, 10, 20, 50, 100, 200]
    length = max([n for n in nice if n <= width_mm / 4] or [1])
    px = length / spacing_col
    y = shape[0] * 0.94
    x0 = shape[1] * 0.04
    ax.plot([x0, x0 + px], [y, y], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(
        x0 + px / 2,
        y - shape[0] * 0.03,
        f"{length} mm",
        color="white",
        ha="center",
        va="bottom",
        fontsize=7,
        fontweight="bold",
    )


def _contour(ax, mask: np.ndarray, colour, style: str) -> None:
    """Outline ``mask`` along its pixel edges. A one-pixel frame of background lets matplotlib contour masks only
    one pixel high or wide (it needs 2x2 at least) and closes outlines of lesions that touch the image border."""
    framed = np.pad(mask.astype(float), 1)
    rows, cols = np.arange(-1, mask.shape[0] + 1), np.arange(-1, mask.shape[1] + 1)
    limits = ax.get_xlim(), ax.get_ylim()
    ax.contour(cols, rows, framed, levels=[0.5], colors=[colour], linewidths=1.3, linestyles=style)
    ax.set_xlim(limits[0])  # the frame is not part of the image: keep the view on the pixels
    ax.set_ylim(limits[1])


def draw_panel(
    ax,
    base_rgb: np.ndarray,
    gt,
    pred,
    labels: list[str],
    spacing=(1.0, 1.0),
    title: str = "",
    spacing_known: bool = True,
    markers: dict | None = None,
) -> None:
    """One panel: image, shaded errors (binary), GT solid and prediction dashed contours, scale bar."""
    img = base_rgb.astype(np.float32).copy()
    binary = len(labels) == 2
    if binary and gt is not None and pred is not None:
        g, p = gt > 0, pred > 0
        for region, colour in ((p & ~g, FP_COLOUR), (g & ~p, FN_COLOUR)):
            img[region] = 0.55 * img[region] + 0.45 * np.array(colour, np.float32)
    ax.imshow(img.astype(np.uint8), aspect=spacing[0] / spacing[1], interpolation="nearest")
    for c in range(1, len(labels)):
        for mask, kind, style in ((gt, "gt", "solid"), (pred, "pred", "dashed")):
            if mask is not None and (mask == c).any():
                _contour(ax, mask == c, _class_colour(c, binary, kind), style)
    _scale_bar(ax, base_rgb.shape, spacing[1], spacing_known)
    if markers:
        _orientation_markers(ax, base_rgb.shape, markers)
    ax.set_title(plain_text(title), fontsize=8)
    ax.axis("off")


def _orientation_markers(ax, shape, markers: dict) -> None:
    """Patient-direction letters (R/L, A/P, S/I) at the middle of each panel edge, as a radiology viewer shows them."""
    h, w = shape[0], shape[1]
    style = {"color": "yellow", "fontsize": 7, "fontweight": "bold", "ha": "center", "va": "center"}
    for side, (x, y) in {
        "left": (w * 0.03, h / 2),
        "right": (w * 0.97, h / 2),
        "top": (w / 2, h * 0.04),
        "bottom": (w / 2, h * 0.96),
    }.items():
        if markers.get(side):
            ax.text(x - 0.5, y - 0.5, markers[side], **style)


def legend_handles(labels: list[str], has_gt: bool, has_pred: bool):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    binary = len(labels) == 2
    h = []
    if binary:
        if has_gt:
            h.append(Line2D([], [], color=mpl_colour(GT_COLOUR), lw=2, label="ground truth"))
        if has_pred:
            h.append(Line2D([], [], color=mpl_colour(PRED_COLOUR), lw=2, ls="--", label="prediction"))
        if has_gt and has_pred:
            h += [
                Patch(color=mpl_colour(FP_COLOUR), label="false positive"),
                Patch(color=mpl_colour(FN_COLOUR), label="false negative"),
            ]
    else:
        for c, name in enumerate(labels[1:], start=1):
            h.append(Patch(color=_class_colour(c, False, "gt"), label=plain_text(name)))
        if has_gt:
            h.append(Line2D([], [], color="grey", lw=2, label="ground truth (solid)"))
        if has_pred:
            h.append(Line2D([], [], color="grey", lw=2, ls="--", label="prediction (dashed)"))
    return h


def _finish(fig, labels, has_gt, has_pred, target: Path, title: str) -> str:
    fig.legend(handles=legend_handles(labels, has_gt, has_pred), loc="lower center", ncol=4, fontsize=7, frameon=False)
    if title:
        fig.suptitle(plain_text(title), fontsize=9)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, target, bbox_inches="tight")
    return str(target)


def _labels_of(path, n, values: dict[int, int] | None = None) -> np.ndarray | None:
    return read_label_map(Path(path), n, values)[0] if path else None


def save_case_overlay(
    image,
    gt,
    pred,
    labels: list[str],
    target: str | Path,
    title: str = "",
    spacing_2d=None,
    modality: str | None = None,
    instances: bool = False,
    values: dict[int, int] | None = None,
) -> str:
    """Overlay PNG for one case (2D image or 3D volume files); ``image``/``gt``/``pred`` may be None. ``modality``
    names a volume's background image (the first input channel) in its title; ``instances``: the files are
    instance maps, each object outlined in its own colour (2D); ``values``: the ground truth's label values ->
    classes (``data.label_values``)."""
    target = Path(target)
    ref = pred or gt
    if file_ext(ref) not in IMAGE_2D_EXTS:
        return save_volume_files_overlay(image, gt, pred, labels, target, title, modality, instances, values)
    if instances:
        return save_instance_overlay(image, gt, pred, target, title, spacing_2d)
    g, p = _labels_of(gt, len(labels), values), _labels_of(pred, len(labels))
    shape = (g if g is not None else p).shape
    base = _display_background(image, shape)
    plt = pyplot()
    aspect = shape[1] / shape[0]
    fig, ax = plt.subplots(figsize=(4.2 * min(1.6, aspect), 4.2 / max(1.0, aspect) + 0.5))
    draw_panel(ax, base, g, p, labels, spacing_2d or (1.0, 1.0), "", spacing_known=bool(spacing_2d))
    return _finish(fig, labels, g is not None, p is not None, target, title)


def _display_background(image, shape) -> np.ndarray:
    """A 2D case's picture as display RGB, or dark grey of ``shape`` when there is no image."""
    if not image:
        return np.full((*shape, 3), 40, np.uint8)
    raw = read_image_2d(image)
    return to_display_rgb(np.moveaxis(raw, -1, 0) if raw.ndim == 3 else raw)


def object_colour(k: int) -> tuple[int, int, int]:
    """A bright colour for object ``k``: hues a golden angle apart, so neighbours (consecutive ids) differ."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((0.13 + 0.618034 * k) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def outline_objects(rgb: np.ndarray, ids: np.ndarray, colour=None, width: int = 1, outside: bool = False):
    """``rgb`` with each object's outline painted ``width`` pixels wide, in ``colour`` or its own colour: its
    inner rim, or with ``outside`` the background pixels around it (where a second outline drawn inside stays
    visible)."""
    from scipy import ndimage
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    region = (ids == 0) if outside else (ids > 0)
    edge = find_boundaries(ids, mode="outer" if outside else "inner") & region
    if width > 1:  # thicken away from the other outline only
        edge = ndimage.binary_dilation(edge, iterations=width - 1) & region
    if colour is not None:
        out[edge] = colour
        return out
    n = int(ids.max(initial=0))
    palette = np.array([(0, 0, 0), *(object_colour(k) for k in range(1, n + 1))], np.uint8)
    out[edge] = palette[ids[edge]]
    return out


def save_instance_overlay(image, gt, pred, target: Path, title: str = "", spacing_2d=None) -> str:
    """One 2D case's instance maps over its image: predicted objects outlined inside in their own colours, true
    ones outside in white."""
    from matplotlib import patheffects
    from matplotlib.lines import Line2D

    from medseg.evaluation.masks import read_instance_map

    g = read_instance_map(Path(gt)) if gt else None
    p = read_instance_map(Path(pred)) if pred else None
    shape = (g if g is not None else p).shape
    base = _display_background(image, shape)
    width = max(1, round(max(shape) / 500))  # still visible once a large image is shrunk onto the page
    if g is not None:
        base = outline_objects(base, g, (255, 255, 255), width, outside=True)
    if p is not None:
        base = outline_objects(base, p, None, width)
    plt = pyplot()
    aspect = shape[1] / shape[0]
    fig, ax = plt.subplots(figsize=(4.2 * min(1.6, aspect), 4.2 / max(1.0, aspect) + 0.5))
    spacing = spacing_2d or (1.0, 1.0)
    ax.imshow(base, aspect=spacing[0] / spacing[1], interpolation="nearest")
    _scale_bar(ax, base.shape, spacing[1], bool(spacing_2d))
    ax.axis("off")
    handles = []
    if g is not None:
        edge = [patheffects.withStroke(linewidth=3.5, foreground="black")]  # a white line on the white page
        n = int(len(np.unique(g)) - 1)
        handles.append(Line2D([], [], color="white", lw=2, path_effects=edge, label=f"ground truth ({n}), outside"))
    if p is not None:
        n = int(len(np.unique(p)) - 1)
        handles.append(
            Line2D([], [], color=mpl_colour(object_colour(1)), lw=2, label=f"prediction ({n}), inside, one colour each")
        )
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=7, frameon=False, facecolor="black")
    if title:
        fig.suptitle(plain_text(title), fontsize=9)
    target.parent.mkdir(parents=True, exist_ok=True)
    save_png(fig, target, bbox_inches="tight")
    return str(target)


def _canonical(arr: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    tr = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    return nib.orientations.apply_orientation(arr, tr), tr


# Where the patient's directions lie on each view of a RAS volume drawn by _views (radiological convention: the
# patient's right on the left of an axial or coronal view).
MARKERS = {
    "axial": {"left": "R", "right": "L", "top": "A", "bottom": "P"},
    "sagittal": {"left": "A", "right": "P", "top": "S", "bottom": "I"},
    "coronal": {"left": "R", "right": "L", "top": "S", "bottom": "I"},
}


def _views(vol, gt, pred, spacing, n_axial: int = 3, through_plane: bool = True) -> list[tuple]:
    """Up to ``n_axial`` axial slices with the most lesion, plus the slices with the most false-positive and
    false-negative pixels when those are not among them, then (``through_plane``) sagittal and coronal
    through the largest lesion. Slice stacks of unknown thickness skip the last two: they would be thin strips,
    and so does a volume of one slice. Each panel is ``(image, gt, pred, name, spacing, orientation markers)``."""
    from scipy import ndimage

    ref = gt if gt is not None and gt.any() else pred
    panels = []
    sx, sy, sz = spacing
    if ref is not None and ref.any():
        per_z = (ref > 0).sum(axis=(0, 1))
        zs = [int(z) for z in np.argsort(-per_z)[:n_axial] if per_z[z] > 0]
        lab, _n = ndimage.label(ref > 0)
        biggest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        cx, cy, _ = (round(v) for v in ndimage.center_of_mass(lab == biggest))
    else:
        zs, cx, cy = [vol.shape[2] // 2], vol.shape[0] // 2, vol.shape[1] // 2

    names = {z: f"axial z={z}" for z in zs}
    if gt is not None and pred is not None:
        # Errors away from the lesion's largest slices would not be seen: add the slice with the most false-positive
        # (then false-negative) pixels when it is not shown already, e.g. a false lesion a few slices away.
        for kind, err in (("false positive", (pred > 0) & (pred != gt)), ("false negative", (gt > 0) & (pred != gt))):
            per_z = err.sum(axis=(0, 1))
            if per_z.size and per_z.max() > 0:
                z = int(np.argmax(per_z))
                names.setdefault(z, f"axial z={z}, most {kind}")

    def ax_(a, z):
        return None if a is None else a[::-1, ::-1, z].T

    for z in sorted(names):
        panels.append((ax_(vol, z), ax_(gt, z), ax_(pred, z), names[z], (sy, sx), MARKERS["axial"]))
    if not through_plane or vol.shape[2] < 2:
        return panels
    sag = lambda a: None if a is None else a[cx, ::-1, ::-1].T
    cor = lambda a: None if a is None else a[::-1, cy, ::-1].T
    panels.append((sag(vol), sag(gt), sag(pred), f"sagittal x={cx}", (sz, sy), MARKERS["sagittal"]))
    panels.append((cor(vol), cor(gt), cor(pred), f"coronal y={cy}", (sz, sx), MARKERS["coronal"]))
    return panels


def volume_figure(
    vol,
    gt,
    pred,
    spacing,
    labels,
    title: str = "",
    n_axial: int = 3,
    through_plane: bool = True,
    spacing_known: bool = True,
    oriented: bool = True,
    modality: str | None = None,
):
    """The panels of a volume (see _views), with orientation letters when ``oriented`` (a RAS volume; slices
    stacked from 2D files have no known orientation) and the background image's modality in the title."""
    plt = pyplot()
    panels = _views(vol, gt, pred, spacing, n_axial, through_plane)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.3))
    axes = np.atleast_1d(axes)
    lo, hi = np.percentile(vol, [1, 99.5]) if vol.size else (0, 1)
    for ax, (v, g, p, name, sp, markers) in zip(axes, panels):
        base = (np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        draw_panel(
            ax,
            np.repeat(base[..., None], 3, axis=2),
            g,
            p,
            labels,
            sp,
            name,
            spacing_known=spacing_known,
            markers=markers if oriented else None,
        )
    heading = " - ".join(t for t in (title, f"background image: {modality}" if modality else "") if t)
    if heading:
        fig.suptitle(plain_text(heading), fontsize=9)
    return fig


def render_volume(
    vol,
    gt,
    pred,
    spacing,
    labels,
    target: Path,
    title: str,
    n_axial: int = 3,
    through_plane: bool = True,
    spacing_known: bool = True,
    oriented: bool = True,
    modality: str | None = None,
) -> str:
    fig = volume_figure(
        vol, gt, pred, spacing, labels, title, n_axial, through_plane, spacing_known, oriented, modality
    )
    return _finish(fig, labels, gt is not None, pred is not None, target, "")


def save_volume_files_overlay(
    image,
    gt,
    pred,
    labels,
    target: Path,
    title: str = "",
    modality: str | None = None,
    instances: bool = False,
    values: dict[int, int] | None = None,
) -> str:
    """A volume's overlay; instance maps (``instances``) are drawn as their objects' union."""
    ref_path = pred or gt
    _, ref_geom = read_volume(ref_path)
    if image:
        first = image[0] if isinstance(image, (list, tuple)) else image
        vol, geom = read_volume(first)
        vol = vol[..., 0] if vol.ndim == 4 else vol
    else:
        vol, geom = np.zeros(ref_geom.shape, np.float32), ref_geom
    if instances:
        from medseg.evaluation.masks import read_instance_map

        g, p = ((read_instance_map(Path(f)) > 0).astype(np.uint8) if f else None for f in (gt, pred))
    else:
        g, p = _labels_of(gt, len(labels), values), _labels_of(pred, len(labels))
    vol_c, tr = _canonical(np.asarray(vol, np.float32), geom.affine)
    g = _canonical(g, geom.affine)[0] if g is not None else None
    p = _canonical(p, geom.affine)[0] if p is not None else None
    spacing = np.asarray(geom.spacing)[np.argsort(tr[:, 0])] if tr is not None else geom.spacing
    return render_volume(
        vol_c, g, p, tuple(float(s) for s in spacing), labels, target, title, modality=modality if image else None
    )


def save_volume_overlay(
    case: dict, labels, target: Path, recipe: Recipe, title: str = "", values: dict[int, int] | None = None
) -> str:
    """Overlay for a volume stacked from 2D slices (LGG): axial slices with the most lesion, drawn on the channel
    the recipe shows (:attr:`Recipe.display`: FLAIR for LGG)."""
    upright = lambda v: v.transpose(1, 0, 2)[::-1, ::-1]  # rows/cols -> x, y: the axial view upright
    label_stack = lambda ps, v=None: upright(stack_slices(ps, lambda p: _labels_of(p, len(labels), v)))
    # Slice thickness is unknown for stacked 2D slices, so only axial panels are drawn (no through-plane strips).
    return render_volume(
        upright(stack_slices(case["image"], recipe.display_slice)),
        label_stack(case["ground_truth"], values),
        label_stack(case["prediction"]),
        (1.0, 1.0, 1.0),
        labels,
        target,
        title,
        n_axial=5,
        through_plane=False,
        spacing_known=False,
        oriented=False,
        modality=recipe.display.name,
    )
