"""Overlay PNGs and evaluation plots (matplotlib, colour-blind-safe Okabe-Ito colours).

Contours: ground truth solid, prediction dashed. Binary tasks shade false
positives (reddish purple) and false negatives (sky blue); multi-class tasks use one
colour per label, named in the legend. Every panel has a scale bar in mm.
3D volumes are shown in radiological convention (patient right on the left).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .io import IMAGE_2D_EXTS, file_ext, read_image_2d, read_volume
from .viz import CLASS_COLOURS, FN_COLOUR, FP_COLOUR, GT_COLOUR, PRED_COLOUR, class_colour, to_display_rgb


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rgb(c) -> tuple:
    return tuple(v / 255 for v in c)


def _class_colour(c: int, binary: bool, kind: str):
    if binary:
        return _rgb(GT_COLOUR if kind == "gt" else PRED_COLOUR)
    return _rgb(class_colour(c))


def _scale_bar(ax, shape, spacing_col: float, spacing_known: bool = True) -> None:
    width_mm = shape[1] * spacing_col
    nice = [1, 2, 5, 10, 20, 50, 100, 200]
    length = max([n for n in nice if n <= width_mm / 4] or [1])
    px = length / spacing_col
    y = shape[0] * 0.94
    x0 = shape[1] * 0.04
    ax.plot([x0, x0 + px], [y, y], color="white", linewidth=3, solid_capstyle="butt")
    ax.text(x0 + px / 2, y - shape[0] * 0.03, f"{length} mm" + ("" if spacing_known else "*"), color="white",
            ha="center", va="bottom", fontsize=7, fontweight="bold")


def draw_panel(ax, base_rgb: np.ndarray, gt, pred, labels: list[str], spacing=(1.0, 1.0), title: str = "",
               spacing_known: bool = True) -> None:
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
                ax.contour((mask == c).astype(float), levels=[0.5], colors=[_class_colour(c, binary, kind)],
                           linewidths=1.3, linestyles=style)
    _scale_bar(ax, base_rgb.shape, spacing[1], spacing_known)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def legend_handles(labels: list[str], has_gt: bool, has_pred: bool):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    binary = len(labels) == 2
    h = []
    if binary:
        if has_gt:
            h.append(Line2D([], [], color=_rgb(GT_COLOUR), lw=2, label="ground truth"))
        if has_pred:
            h.append(Line2D([], [], color=_rgb(PRED_COLOUR), lw=2, ls="--", label="prediction"))
        if has_gt and has_pred:
            h += [Patch(color=_rgb(FP_COLOUR), label="false positive"), Patch(color=_rgb(FN_COLOUR), label="false negative")]
    else:
        for c, name in enumerate(labels[1:], start=1):
            h.append(Patch(color=_class_colour(c, False, "gt"), label=name))
        if has_gt:
            h.append(Line2D([], [], color="grey", lw=2, label="ground truth (solid)"))
        if has_pred:
            h.append(Line2D([], [], color="grey", lw=2, ls="--", label="prediction (dashed)"))
    return h


def _finish(fig, labels, has_gt, has_pred, target: Path, title: str) -> str:
    fig.legend(handles=legend_handles(labels, has_gt, has_pred), loc="lower center", ncol=4, fontsize=7, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=130, bbox_inches="tight")
    _plt().close(fig)
    return str(target)


def _labels_of(path, n) -> np.ndarray | None:
    if not path:
        return None
    from .evaluate import read_label_map

    return read_label_map(Path(path), n)[0]


def save_case_overlay(image, gt, pred, labels: list[str], target: str | Path, title: str = "",
                      spacing_2d=None) -> str:
    """Overlay PNG for one case (2D image or 3D volume files); ``image``/``gt``/``pred`` may be None."""
    target = Path(target)
    ref = pred or gt
    if file_ext(ref) not in IMAGE_2D_EXTS:
        return save_volume_files_overlay(image, gt, pred, labels, target, title)
    g, p = _labels_of(gt, len(labels)), _labels_of(pred, len(labels))
    shape = (g if g is not None else p).shape
    if image:
        raw = read_image_2d(image)
        base = to_display_rgb(np.moveaxis(raw, -1, 0) if raw.ndim == 3 else raw)
    else:
        base = np.full((*shape, 3), 40, np.uint8)
    plt = _plt()
    aspect = shape[1] / shape[0]
    fig, ax = plt.subplots(figsize=(4.2 * min(1.6, aspect), 4.2 / max(1.0, aspect) + 0.5))
    draw_panel(ax, base, g, p, labels, spacing_2d or (1.0, 1.0), "", spacing_known=bool(spacing_2d))
    return _finish(fig, labels, g is not None, p is not None, target, title)


def _canonical(arr: np.ndarray, affine: np.ndarray):
    import nibabel as nib

    ornt = nib.orientations.io_orientation(affine)
    tr = nib.orientations.ornt_transform(ornt, nib.orientations.axcodes2ornt("RAS"))
    return nib.orientations.apply_orientation(arr, tr), tr


def _views(vol, gt, pred, spacing, n_axial: int = 3, through_plane: bool = True) -> list[tuple]:
    """Up to ``n_axial`` axial slices with the most lesion, plus the slices with the most false-positive and
    false-negative pixels when those are not among them, then (``through_plane``) sagittal and coronal
    through the largest lesion. Slice stacks of unknown thickness skip the last two: they would be thin strips."""
    from scipy import ndimage

    ref = gt if gt is not None and gt.any() else pred
    panels = []
    sx, sy, sz = spacing
    if ref is not None and ref.any():
        per_z = (ref > 0).sum(axis=(0, 1))
        zs = [int(z) for z in np.argsort(-per_z)[:n_axial] if per_z[z] > 0]
        lab, n = ndimage.label(ref > 0)
        biggest = np.argmax(np.bincount(lab.ravel())[1:]) + 1
        cx, cy, _ = (int(round(v)) for v in ndimage.center_of_mass(lab == biggest))
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
        panels.append((ax_(vol, z), ax_(gt, z), ax_(pred, z), names[z], (sy, sx)))
    if not through_plane:
        return panels
    sag = lambda a: None if a is None else a[cx, ::-1, ::-1].T  # noqa: E731
    cor = lambda a: None if a is None else a[::-1, cy, ::-1].T  # noqa: E731
    panels.append((sag(vol), sag(gt), sag(pred), f"sagittal x={cx}", (sz, sy)))
    panels.append((cor(vol), cor(gt), cor(pred), f"coronal y={cy}", (sz, sx)))
    return panels


def render_volume(vol, gt, pred, spacing, labels, target: Path, title: str, n_axial: int = 3,
                  through_plane: bool = True) -> str:
    plt = _plt()
    panels = _views(vol, gt, pred, spacing, n_axial, through_plane)
    fig, axes = plt.subplots(1, len(panels), figsize=(2.6 * len(panels), 3.3))
    axes = np.atleast_1d(axes)
    lo, hi = np.percentile(vol, [1, 99.5]) if vol.size else (0, 1)
    for ax, (v, g, p, name, sp) in zip(axes, panels):
        base = (np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)
        draw_panel(ax, np.repeat(base[..., None], 3, axis=2), g, p, labels, sp, name)
    return _finish(fig, labels, gt is not None, pred is not None, target, title)


def save_volume_files_overlay(image, gt, pred, labels, target: Path, title: str = "") -> str:
    ref_path = pred or gt
    _, ref_geom = read_volume(ref_path)
    if image:
        first = image[0] if isinstance(image, (list, tuple)) else image
        vol, geom = read_volume(first)
        vol = vol[..., 0] if vol.ndim == 4 else vol
    else:
        vol, geom = np.zeros(ref_geom.shape, np.float32), ref_geom
    g, p = _labels_of(gt, len(labels)), _labels_of(pred, len(labels))
    vol_c, tr = _canonical(np.asarray(vol, np.float32), geom.affine)
    g = _canonical(g, geom.affine)[0] if g is not None else None
    p = _canonical(p, geom.affine)[0] if p is not None else None
    spacing = np.asarray(geom.spacing)[np.argsort(tr[:, 0])] if tr is not None else geom.spacing
    return render_volume(vol_c, g, p, tuple(float(s) for s in spacing), labels, target, title)


def save_volume_overlay(case: dict, labels, target: Path, title: str = "") -> str:
    """Overlay for a volume stacked from 2D slices (LGG): axial slices with the most lesion."""
    from .transforms import adapt_channels_2d

    imgs = [adapt_channels_2d(read_image_2d(p), 3, p)[1] for p in case["image"]]  # FLAIR channel
    vol = np.stack(imgs, axis=-1).transpose(1, 0, 2)[::-1, ::-1]  # rows/cols -> x, y so the axial view is upright
    stack = lambda ps: np.stack([_labels_of(p, len(labels)) for p in ps], axis=-1).transpose(1, 0, 2)[::-1, ::-1]  # noqa: E731
    # Slice thickness is unknown for stacked 2D slices, so only axial panels are drawn (no through-plane strips).
    return render_volume(vol, stack(case["ground_truth"]), stack(case["prediction"]), (1.0, 1.0, 1.0), labels, target, title,
                         n_axial=5, through_plane=False)


def _compact_number(v: float) -> str:
    """A tick label short enough for a log axis: 0.05, 2, 500, 20k, 1.5M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


def evaluation_plots(df, out_dir: Path, size_unit: str = "mL") -> dict:
    """Per-class box plots of the overlap metrics and Dice against lesion size."""
    plt = _plt()
    out = {}
    classes = list(dict.fromkeys(df["class"]))
    metrics = ["dice", "jaccard", "precision", "recall"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.0 * len(metrics), 3.2), sharey=True)
    for ax, m in zip(axes, metrics):
        data = [df.loc[df["class"] == c, m].dropna().to_numpy() for c in classes]
        ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True)
        ax.set_xticks(range(1, len(classes) + 1), classes, rotation=30, ha="right", fontsize=7)
        ax.set_title(m, fontsize=9)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    out["boxplots"] = str(out_dir / "boxplots.png")
    fig.savefig(out["boxplots"], dpi=130)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, c in enumerate(classes):
        sub = df[(df["class"] == c) & (df["gt_size"] > 0)]
        ax.scatter(sub["gt_size"], sub["dice"], s=14, label=c, color=_rgb(CLASS_COLOURS[i % len(CLASS_COLOURS)]))
    sizes = df.loc[df["gt_size"] > 0, "gt_size"]
    if len(sizes) and sizes.max() / max(sizes.min(), 1e-9) > 20:
        ax.set_xscale("log")  # ticks at 1, 2, 5 per decade with short labels: minor labels overlap otherwise
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _compact_number(v)))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
    ax.set_xlabel(f"ground-truth size [{size_unit}]", fontsize=8)
    ax.set_ylabel("Dice", fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out["dice_vs_size"] = str(out_dir / "dice_vs_size.png")
    fig.savefig(out["dice_vs_size"], dpi=130)
    plt.close(fig)
    return out
