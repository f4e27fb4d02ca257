"""The plots of an evaluation folder (matplotlib, colour-blind-safe Okabe-Ito colours): per-class box plots of the
overlap metrics and of the surface distances, every case drawn as a point, and Dice against lesion size."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from medseg.viz import CLASS_COLOURS, mpl_colour, plain_text, pyplot, save_png


def _compact_number(v: float) -> str:
    """A tick label short enough for a log axis: 0.05, 2, 500, 20k, 1.5M."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(v) >= scale:
            return f"{v / scale:g}{suffix}"
    return f"{v:g}"


METRIC_TITLES = {
    "dice": "Dice",
    "jaccard": "Jaccard",
    "precision": "Precision",
    "recall": "Recall",
    "hd95": "HD95",
    "assd": "ASSD",
}


def _box_with_points(ax, df, classes: list[str], metric: str, seed: int = 0) -> None:
    """Box plot per class with every case drawn as a point (jittered sideways), so a few cases never hide behind a
    box; cases with the metric undefined (NaN) are left out."""
    data = [df.loc[df["class"] == c, metric].dropna().to_numpy(dtype=float) for c in classes]
    ax.boxplot([d if d.size else np.array([np.nan]) for d in data], showmeans=True, showfliers=False, widths=0.5)
    rng = np.random.default_rng(seed)
    for i, d in enumerate(data, start=1):
        ax.scatter(
            i + rng.uniform(-0.12, 0.12, d.size),
            d,
            s=9,
            alpha=0.6,
            color=mpl_colour(CLASS_COLOURS[0]),
            zorder=3,
            linewidths=0,
        )
    ax.set_xticks(
        range(1, len(classes) + 1),
        [plain_text(c) for c in classes],
        rotation=20 if len(classes) > 2 else 0,
        ha="right" if len(classes) > 2 else "center",
        fontsize=9,
    )
    ax.tick_params(axis="y", labelsize=9)
    ax.grid(axis="y", alpha=0.3)


def evaluation_plots(df, out_dir: Path, size_unit: str = "mL") -> dict:
    """Per-class box plots (with the cases as points) of the overlap metrics in a 2x2 grid and of the surface
    distances (HD95, ASSD, in the unit their column names), and Dice against lesion size."""
    plt = pyplot()
    out = {}
    classes = list(dict.fromkeys(df["class"]))
    fig, axes = plt.subplots(2, 2, figsize=(7.6, 5.6), sharey=True)
    for ax, m in zip(axes.ravel(), ["dice", "jaccard", "precision", "recall"]):
        _box_with_points(ax, df, classes, m)
        ax.set_title(METRIC_TITLES[m], fontsize=11)
        ax.set_ylim(-0.02, 1.02)
    fig.tight_layout()
    out["boxplots"] = str(out_dir / "boxplots.png")
    save_png(fig, Path(out["boxplots"]))
    distances = [c for c in df.columns if c.split("_")[0] in ("hd95", "assd")]
    if distances:
        fig, axes = plt.subplots(1, len(distances), figsize=(3.8 * len(distances), 3.0))
        for ax, m in zip(np.atleast_1d(axes), distances):
            name, unit = m.split("_", 1)
            _box_with_points(ax, df, classes, m)
            ax.set_title(f"{METRIC_TITLES.get(name, name)} ({unit})", fontsize=11)
            ax.set_ylim(bottom=0)
        fig.tight_layout()
        out["distances"] = str(out_dir / "distances.png")
        save_png(fig, Path(out["distances"]))
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, c in enumerate(classes):
        sub = df[(df["class"] == c) & (df["gt_size"] > 0)]
        ax.scatter(
            sub["gt_size"],
            sub["dice"],
            s=14,
            label=plain_text(c),
            color=mpl_colour(CLASS_COLOURS[i % len(CLASS_COLOURS)]),
        )
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
    save_png(fig, Path(out["dice_vs_size"]))
    return out


def pr_curve_plot(curves: dict, target: Path) -> str:
    """Precision against recall of each named detection curve (COCO's interpolated precision at 101 recall
    steps); the steps a curve never reaches (precision undefined) are left out."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 3.4))
    for i, (name, (recall, precision)) in enumerate(curves.items()):
        p = np.asarray(precision, float)
        reached = np.isfinite(p) & (p > 0)
        ax.plot(np.asarray(recall)[reached], p[reached], lw=1.6, label=plain_text(name),
                color=mpl_colour(CLASS_COLOURS[i % len(CLASS_COLOURS)]))  # fmt: skip
    ax.set_xlabel("recall", fontsize=8)
    ax.set_ylabel("precision", fontsize=8)
    ax.set_xlim(0, 1.0)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    save_png(fig, Path(target))
    return str(target)
