"""Training a classical method (:mod:`medseg.models.classical`): a search over its few parameters for the highest
mean Dice on the training images, in place of gradient steps.

The run is an ordinary run folder. The same split, the same preprocessed images (the deterministic transforms
validation uses, so the method sees at fitting time what it sees at inference), the same validation and the same
checkpoints as a network's (one "epoch"); ``fit.csv`` lists every setting tried with its training Dice. The clean-up
(largest component, hole filling) is part of the search: the best few settings are tried with and without each,
and the chosen clean-up goes into the checkpoint's ``infer`` section, where ``medseg infer`` reads it.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import numpy as np

from medseg.config import Config
from medseg.data import IMAGE, LABEL
from medseg.engine import checkpoints
from medseg.engine.checks import check_config
from medseg.engine.distributed import silence_other_ranks
from medseg.engine.loading import load_training_data
from medseg.engine.precision import training_device
from medseg.engine.run_folder import prepare_run_dir, write_history
from medseg.engine.tensorboard import Board
from medseg.engine.trainer import Trainer, TrainResult, best_summary, epoch_line, validation_row
from medseg.engine.validation import plain, validate
from medseg.errors import MedsegError
from medseg.inference.predictor import roi_size
from medseg.log import get_logger
from medseg.models import build_model, model_family, model_spec
from medseg.models.classical import fisher_projection
from medseg.postprocess import postprocess
from medseg.progress import progress_bar
from medseg.tasks import dice_from_counts, overlap_counts

log = get_logger(__name__)

FIT_IMAGES = 40  # training images the search scores each setting on (model.extra.fit_images)
FIT_VOLUMES = 10  # the same for volumes, each a few hundred slices' worth of voxels
POST_FINALISTS = 5  # settings tried with every clean-up
# the minimum object sizes tried, as fractions of the image's pixels (a 192x256 image: 98, 492 and 1475 pixels)
MIN_SIZE_FRACTIONS = (0.002, 0.01, 0.03)


def fits_by_search(cfg: Config) -> bool:
    """Whether ``cfg``'s model is fitted by :class:`SearchFit` rather than trained by gradient steps."""
    return model_family(cfg.model.name).trains == "search"


@dataclass
class FitResult:
    """The chosen setting, its clean-up and training Dice, and every setting tried (``rows``)."""

    params: dict
    post: dict
    train_dice: float
    rows: list[dict]
    n_images: int
    seconds: float


def image_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    return dice_from_counts(*overlap_counts(pred, truth))


def mean_dice(preds: list[np.ndarray], masks: list[np.ndarray], groups: list | None = None) -> float:
    """Mean Dice over images, or with ``groups`` over the volumes their slices belong to (counts pooled per volume,
    the way validation and evaluation score LGG), so empty slices do not each count as a perfect score."""
    if groups is None:
        return float(np.mean([image_dice(p, m) for p, m in zip(preds, masks)]))
    pooled: dict = {}
    for p, m, g in zip(preds, masks, groups):
        pooled[g] = pooled.get(g, 0) + overlap_counts(p, m)
    return float(np.mean([dice_from_counts(*c) for c in pooled.values()]))


def fit_images(cfg: Config, data) -> tuple[list[np.ndarray], list[np.ndarray], list | None, float]:
    """Up to ``model.extra.fit_images`` training images, preprocessed as for validation, their masks, the volume
    each belongs to (None for whole images), and :func:`pixel_area`. A seeded draw when there are more: of images,
    or of whole volumes for slices that stack into volumes (LGG), so each volume is scored pooled as validation
    scores it."""
    from medseg.data.transforms import val_transforms

    n = int(cfg.model.extra.get("fit_images", FIT_IMAGES if cfg.data.spatial_dims == 2 else FIT_VOLUMES))
    samples = list(data.train_samples)
    rng = np.random.default_rng(cfg.train.seed)
    sliced = all("volume_id" in s for s in samples)
    if sliced:
        volumes = sorted({s["volume_id"] for s in samples})
        chosen, count = set(), 0
        for i in rng.permutation(len(volumes)):
            if count >= n:
                break
            chosen.add(volumes[i])
            count += sum(s["volume_id"] == volumes[i] for s in samples)
        samples = [s for s in samples if s["volume_id"] in chosen]
    elif len(samples) > n:
        samples = [samples[i] for i in sorted(rng.choice(len(samples), n, replace=False))]
    transform = val_transforms(cfg)
    images, masks, areas = [], [], []
    for s in samples:
        item = transform(dict(s))
        images.append(plain(item[IMAGE]).numpy().astype(np.float32))
        masks.append(plain(item[LABEL]).numpy()[0] > 0)
        areas.append(pixel_area(cfg, item["image_meta"], images[-1].shape[1:]))
    return images, masks, [s["volume_id"] for s in samples] if sliced else None, float(np.median(areas))


def pixel_area(cfg: Config, meta: dict, shape: tuple) -> float:
    """What one preprocessed pixel (voxel) measures in the units ``medseg infer`` cleans up in: for volumes mm³
    (the preprocessing spacing, or the scan's own), for 2D images px² of the original image (mm² with
    ``data.pixel_spacing_mm``); a resized 2D image's pixel covers its share of the original."""
    if cfg.data.spatial_dims == 3:
        return float(np.prod(cfg.preprocess.spacing or meta.get("spacing") or [1.0, 1.0, 1.0]))
    original = meta.get("original_size") or list(shape)
    area = float(np.prod(original[-2:])) / float(np.prod(shape[-2:]))
    return area * float(np.prod(cfg.data.pixel_spacing_mm or [1.0, 1.0]))


def search(
    method,
    images: list[np.ndarray],
    masks: list[np.ndarray],
    progress: bool = False,
    groups: list | None = None,
    pixel_area: float = 1.0,
) -> FitResult:
    """Score every candidate setting of ``method`` on ``images`` (mean Dice of its mask at 0.5, per volume with
    ``groups``: :func:`mean_dice`), then the best :data:`POST_FINALISTS` with each clean-up (:func:`clean_ups`);
    return the best. The chosen clean-up's ``min_size`` is in the units of ``pixel_area``, what one pixel of
    ``images`` measures where ``medseg infer`` cleans up (:func:`pixel_area`)."""
    started = time.perf_counter()
    try:
        shared = {"projection": fisher_projection(images, masks), **method.search_setup()}
        rows, scored = _score_candidates(method, shared, images, masks, progress, groups)
    finally:
        method.search_done()
    best = (-1.0, {}, {})
    pixels = int(np.prod(images[0].shape[1:]))
    for dice, params, preds in sorted(scored, key=lambda s: -s[0])[:POST_FINALISTS]:
        for keep, fill, min_px in clean_ups(pixels):
            post = {"keep_largest": keep, "fill_holes": fill, "min_size": round(min_px * pixel_area, 3)}
            if keep or fill or min_px:
                dice = mean_dice([_clean(p, keep, fill, min_px) for p in preds], masks, groups)
                rows.append({**_shown(params), **post, "train_dice": round(dice, 5)})
            if dice > best[0]:
                best = (dice, params, post)
    seconds = time.perf_counter() - started
    return FitResult(_plain(best[1]), best[2], best[0], rows, len(images), seconds)


def _score_candidates(method, shared: dict, images, masks, progress: bool, groups) -> tuple[list, list]:
    """fit.csv's rows and ``(dice, params, masks)`` of every candidate setting, each learnt and scored."""
    candidates = method.candidates(images[0].shape[0])
    bar = progress_bar(len(candidates), f"fitting {type(method).__name__}", progress, unit="settings")
    rows, scored = [], []
    for point in candidates:
        t0 = time.perf_counter()
        params = {**shared, **point}
        params.update(method.learn(images, masks, params))
        preds = [method.predict(im, params) > 0.5 for im in images]
        dice = mean_dice(preds, masks, groups)
        scored.append((dice, params, preds))
        rows.append(
            {
                **_shown({**shared, **point}),
                "keep_largest": False,
                "fill_holes": False,
                "min_size": 0.0,
                "train_dice": round(dice, 5),
                "seconds": round(time.perf_counter() - t0, 3),
            }
        )
        bar.update(1)
    bar.close()
    return rows, scored


def clean_ups(pixels: int) -> list[tuple[bool, bool, int]]:
    """``(keep_largest, fill_holes, min_size in pixels)`` to try: none, each alone and together, and each minimum
    size of :data:`MIN_SIZE_FRACTIONS` with and without hole filling (beside the largest component it adds
    nothing)."""
    out = [(keep, fill, 0) for keep in (False, True) for fill in (False, True)]
    return out + [(False, fill, max(1, round(f * pixels))) for f in MIN_SIZE_FRACTIONS for fill in (False, True)]


def _clean(mask: np.ndarray, keep_largest: bool, fill_holes: bool, min_size: float = 0.0) -> np.ndarray:
    """The clean-up inference applies, on the preprocessed grid (one pixel as the unit, also of ``min_size``)."""
    spacing = (1.0,) * mask.ndim
    return postprocess(mask.astype(np.uint8), 2, spacing, keep_largest, float(min_size), fill_holes) > 0


def _shown(params: dict) -> dict:
    """A setting as a row of fit.csv: the searched values, not the learnt arrays."""
    return {k: v for k, v in params.items() if not isinstance(v, (list, tuple)) and not k.startswith("clf_")}


def _plain(params: dict) -> dict:
    """The setting as plain Python numbers and lists (a checkpoint loads with ``weights_only=True``)."""
    out = {}
    for k, v in params.items():
        if isinstance(v, np.ndarray):
            v = v.tolist()
        elif isinstance(v, np.generic):
            v = v.item()
        out[k] = v
    return out


class SearchFit(Trainer):
    """A :class:`Trainer` whose one "epoch" is :func:`search`: same run folder, split, validation and checkpoints."""

    def fit(self) -> TrainResult:
        if self.resume or self.init is not None:
            flag = "--resume" if self.resume else "--init"
            raise MedsegError(
                f"{self.cfg.model.name} is fitted in one pass, not trained in epochs, so {flag} has nothing to "
                f"continue from; fix: run without {flag}"
            )
        cfg = self.cfg
        check_config(cfg)
        silence_other_ranks(self.info)
        if not self.prepared:
            prepare_run_dir(self.run_dir, False, self.force)
        self.dev = training_device(self.device_name, self.info, cfg.train.num_workers)
        self.data = load_training_data(cfg, self.data_dir, self.run_dir, False, self.info, augmented=False)
        spec = model_spec(cfg)
        images, masks, groups, area = fit_images(cfg, self.data)
        result = search(build_model(spec), images, masks, self.progress, groups, area)
        spec["kwargs"]["fitted"] = result.params
        net = build_model(spec).to(self.dev)
        # flips would run the method four times for the same mask: a fitted method infers without them
        fitted_cfg = dataclasses.replace(cfg, infer=dataclasses.replace(cfg.infer, tta=False, **result.post))
        log.info(fit_line(cfg.model.name, result))
        return self.record(net, spec, fitted_cfg, result)

    def record(self, net, spec: dict, cfg: Config, result: FitResult) -> TrainResult:
        """Validate the fitted method and write the checkpoints, history, fit.csv and TensorBoard scalars."""
        row = {
            "epoch": 1,
            "train_loss": round(1 - result.train_dice, 6),
            "lr": 0.0,
            "seconds": round(result.seconds, 2),
            "train_dice": round(result.train_dice, 5),
        }
        board = Board(self.run_dir, self.info.main, None)
        board.training(row["train_loss"], 0.0, result.seconds, 1)
        metric = result.train_dice
        validated = bool(self.data.val_samples)
        if validated:
            t0 = time.perf_counter()
            val = validate(net, self.data.val_ds, cfg, self.dev)
            row["validation_seconds"] = round(time.perf_counter() - t0, 4)
            row.update(validation_row(val, cfg.data.labels))
            board.validation(val, cfg.data.labels, row["validation_seconds"], 1)
            log.info(epoch_line(0, row["train_loss"], val, cfg.data.labels))
            metric = float(np.mean(val.dice))
        best = metric if validated else -row["train_loss"]  # what picks best.pt in a gradient run, negated loss
        if self.info.main:
            facts = checkpoints.run_facts(cfg, spec, roi_size(cfg), self.data, self.data_dir)
            payload = {
                **facts,
                "state_dict": net.state_dict(),
                "epoch": 1,
                "best_metric": best,
                "best_epoch": 1,
                "world_size": 1,
                "val_metrics": {k: v for k, v in row.items() if k.startswith("val_") and "dice" in k},
                "fit": {
                    "train_dice": result.train_dice,
                    "n_images": result.n_images,
                    "post": result.post,
                    "settings_tried": len(result.rows),
                    "seconds": round(result.seconds, 2),
                },
            }
            checkpoints.save_epoch(self.run_dir, payload, True, {"history": [row]}, [row])
            write_history(self.run_dir / "fit.csv", result.rows)  # any rows, written atomically
        board.close(cfg, best, validated)
        seconds = time.time() - self.data.started
        log.info(f"done in {seconds:.0f}s: {best_summary(best, validated)}; checkpoints in {self.run_dir}")
        return TrainResult(self.run_dir, metric, 1, 1, seconds, [row])


def fit_line(name: str, result: FitResult) -> str:
    chosen = ", ".join(f"{k} {v}" for k, v in _shown(result.params).items())
    shown = {"keep_largest": "largest component", "fill_holes": "holes filled"}
    post = ", ".join(shown.get(k, f"{k} {v:g}") for k, v in result.post.items() if v) or "no clean-up"
    return (
        f"{name}: {len(result.rows)} settings scored on {result.n_images} training images in {result.seconds:.1f}s; "
        f"chose {chosen or 'its defaults'} with {post}: training Dice {result.train_dice:.4f}"
    )
