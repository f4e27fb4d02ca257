"""TensorBoard for a training run: scalars per epoch, the validation image panel with its legend, the hparams.

Only rank 0 writes; the other ranks get a writer that does nothing.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from medseg.config import Config

PANEL_MIN_SIDE = 256  # TensorBoard shows images at their own size: a 48-pixel slice would be a speck
LEGEND = (
    ("ground truth", "contour", "GT_COLOUR"),
    ("prediction", "contour", "PRED_COLOUR"),
    ("false positive", "fill", "FP_COLOUR"),
    ("false negative", "fill", "FN_COLOUR"),
)


def panel(example: dict) -> np.ndarray:
    """The validation example for TensorBoard: contours and error shading on the image, scaled up (nearest
    neighbour) to at least PANEL_MIN_SIDE pixels on the short side, with a colour legend strip below."""
    from medseg.viz import overlay, to_display_rgb

    img, gt, pred = example["image"], example["label"], example["pred"]
    if img.ndim == 4:  # 3D: the axial slice with the most ground truth
        z = int(np.argmax((gt > 0).sum(axis=(0, 1)))) if gt.any() else gt.shape[2] // 2
        img, gt, pred = img[..., z], gt[..., z], pred[..., z]
    factor = max(1, math.ceil(PANEL_MIN_SIDE / max(1, min(gt.shape[:2]))))

    def up(a: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(a, factor, axis=0), factor, axis=1)

    # contours are drawn after scaling, so they stay one pixel wide instead of growing with the factor
    rgb = up(to_display_rgb(img))
    drawn = overlay(rgb, up(gt > 0), up(pred > 0))
    return np.concatenate([drawn, _legend_strip(drawn.shape[1])], axis=0)


def _legend_strip(width: int, height: int = 22) -> np.ndarray:
    """A dark ``(height, width, 3)`` strip naming the overlay colours: a swatch and a word for each."""
    from PIL import Image, ImageDraw

    from medseg import viz

    strip = Image.new("RGB", (width, height), (24, 24, 24))
    draw = ImageDraw.Draw(strip)
    x = 4
    for name, style, colour_name in LEGEND:
        colour = tuple(getattr(viz, colour_name))
        box = (x, 6, x + 10, 16)
        if style == "contour":
            draw.rectangle(box, outline=colour, width=2)
        else:
            draw.rectangle(box, fill=colour)
        draw.text((x + 14, 5), name, fill=(235, 235, 235))
        x += 14 + int(draw.textlength(name)) + 12
    return np.asarray(strip)


def flat_hparams(cfg: Config) -> dict:
    out = {}
    for sec in ("model", "train", "preprocess", "augment"):
        for k, v in getattr(cfg, sec).__dict__.items():
            if isinstance(v, (int, float, str, bool)):
                out[f"{sec}.{k}"] = v
            elif isinstance(v, list):
                out[f"{sec}.{k}"] = str(v)
    return out


class NullWriter:
    """Stands in for SummaryWriter on ranks other than 0."""

    def __getattr__(self, name):
        return lambda *a, **k: None


class Board:
    """The run's TensorBoard log (``RUN/tb``): what each epoch adds, and the hparams at the end."""

    def __init__(self, run_dir: Path, main: bool, purge_step: int | None):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run_dir / "tb"), purge_step=purge_step) if main else NullWriter()

    def training(self, loss: float, lr: float, seconds: float, step: int) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/lr", lr, step)
        self.writer.add_scalar("train/epoch_seconds", seconds, step)

    def validation(self, val, labels: list[str], seconds: float, step: int) -> None:
        """A :class:`~medseg.engine.validation.Validation` under ``val/``; the whole-foreground Dice only where
        there are several foreground classes."""
        self.writer.add_scalar("val/seconds", seconds, step)
        for name, v in zip(labels[1:], val.dice):
            self.writer.add_scalar(f"val/dice_{name}", float(v), step)
        self.writer.add_scalar("val/mean_dice", float(np.mean(val.dice)), step)
        if len(labels) > 2:
            self.writer.add_scalar("val/dice_whole", val.dice_whole, step)
        if val.loss is not None:
            self.writer.add_scalar("val/loss", val.loss, step)

    def panel(self, example: dict, step: int) -> None:
        self.writer.add_image("val/overlay", panel(example), step, dataformats="HWC")

    def close(self, cfg: Config, best_metric: float, validated: bool) -> None:
        """The run's settings beside its best result (TensorBoard's HPARAMS tab), then close."""
        metric = {"hparam/best_val_dice": best_metric} if validated else {"hparam/best_train_loss": -best_metric}
        metric = {k: v if math.isfinite(v) else 0.0 for k, v in metric.items()}
        self.writer.add_hparams(flat_hparams(cfg), metric, run_name="hparams")
        self.writer.close()
