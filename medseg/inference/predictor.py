"""Probabilities for an image: the one place that runs a trained network on data.

:func:`predict_logits` is the primitive (sliding windows with Gaussian blending, in the precision the device
supports) that training's validation calls too. :class:`Predictor` builds on it for whole cases: the checkpoint's
own preprocessing, test-time flips, an ensemble's average, where the stitched output lives, and the way back onto
the input's voxel grid (uncropping the non-zero box, resampling through the two affines with
``monai.transforms.SpatialResample``), so any reorientation, resampling or oblique direction is undone exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from medseg.config import Config
from medseg.data.base import IMAGE
from medseg.data.transforms import flip_axes
from medseg.errors import fail, find_user_error
from medseg.inference.cases import Case, check_modality_count
from medseg.inference.checkpoints import LoadedModel
from medseg.inference.facts import CaseFacts
from medseg.inference.options import InferenceOptions
from medseg.io import IMAGE_2D_EXTS, Geometry, file_ext, geometry_2d
from medseg.runtime import amp_dtype
from medseg.tasks import Task, task_for

LARGE_VOLUME_VOXELS = 160**3  # stitch on the CPU above this when the GPU cannot report its free memory


def roi_size(cfg: Config) -> list[int]:
    if cfg.infer.roi_size:
        return list(cfg.infer.roi_size)
    if cfg.data.spatial_dims == 3:
        return list(cfg.train.patch_size or [96, 96, 96])
    return list(cfg.preprocess.spatial_size or [256, 256])


def predict_logits(
    model,
    image: torch.Tensor,
    cfg: Config,
    device: torch.device,
    roi: list[int] | None = None,
    sw_device: torch.device | None = None,
    amp: bool | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
) -> torch.Tensor:
    """Sliding-window logits for a batch ``(B, C, *spatial)`` with Gaussian blending, returned as float32.

    ``sw_device`` is where the stitched output lives (default ``device``); ``amp`` defaults to ``train.amp`` (see
    :func:`amp_dtype` for what it means on each device); ``overlap`` and ``sw_batch_size`` default to the config's
    ``infer`` settings.
    """
    from monai.inferers import sliding_window_inference

    roi = roi or roi_size(cfg)
    dtype = amp_dtype(device, cfg.train.amp if amp is None else amp)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        # a classical method (a global threshold, a centre seed) sees the whole image, never a window of it
        if getattr(model, "whole_input", False) or [int(s) for s in image.shape[2:]] == [int(r) for r in roi]:
            # One window covers the input exactly (2D slices resized to the training size): blending a single window
            # with its own weights is the identity, and the sliding-window set-up per call costs more than a small
            # forward pass, so the whole batch goes through the model at once.
            out = model(image).to(sw_device or device)
        else:
            out = sliding_window_inference(
                image,
                roi,
                cfg.infer.sw_batch_size if sw_batch_size is None else sw_batch_size,
                model,
                overlap=cfg.infer.overlap if overlap is None else overlap,
                mode="gaussian",
                sw_device=device,
                device=sw_device or device,
            )
    return out.float()


@dataclass
class Prediction:
    """One case's probabilities ``(K, *shape)`` on its input's own grid, that grid, its loader facts and timings."""

    probs: np.ndarray
    geom: Geometry
    facts: CaseFacts
    timings: dict


class Predictor:
    """Probabilities for whole cases from one checkpoint, or from several averaged (an ensemble).

    ``options`` are resolved against the first checkpoint once (:meth:`InferenceOptions.for_checkpoint`); each
    member keeps its own preprocessing, window size and, unless the options set them, its window overlap and batch.
    """

    def __init__(self, models: list[LoadedModel], device: torch.device, options: InferenceOptions | None = None):
        self.models, self.device = models, device
        self.options = (options or InferenceOptions()).for_checkpoint(models[0].cfg)
        self.task: Task = task_for(models[0].cfg)

    def predict(self, case: Case) -> Prediction:
        """The ensemble's mean probabilities for ``case``; grid and loader facts are the first member's."""
        acc, first, timings = None, None, {}
        for lm in self.models:
            probs, geom, facts, t = self.member_probabilities(lm, case)
            acc = probs if acc is None else acc + probs
            first = first or (geom, facts)
            for k, v in t.items():
                timings[k] = round(timings.get(k, 0.0) + v, 3)
        return Prediction(acc / len(self.models), first[0], first[1], timings)

    def member_probabilities(self, lm: LoadedModel, case: Case) -> tuple[np.ndarray, Geometry, CaseFacts, dict]:
        """One checkpoint on one case: probabilities on the input's own grid ``(K, *shape)``."""
        cfg = lm.cfg
        check_dimensions(case, cfg)
        t0 = time.time()
        d = preprocess(case, cfg)
        t_pre = time.time() - t0
        img = d[IMAGE]
        x = (img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)).float()[None]
        t0 = time.time()
        if cfg.data.spatial_dims == 2:
            out, geom, facts = self._onto_image_grid(lm, case, x, d["image_meta"])
        else:
            out, geom, facts = self._onto_volume_grid(lm, x, d)
        return out, geom, facts, {"preprocess_s": round(t_pre, 3), "predict_s": round(time.time() - t0, 3)}

    @torch.no_grad()
    def network_probabilities(self, lm: LoadedModel, x: torch.Tensor, stitch_on_cpu: bool = False) -> torch.Tensor:
        """``(1, C, *spatial)`` preprocessed input -> ``(1, K, *spatial)`` probabilities, averaged over the flips."""
        cfg = lm.cfg
        roi = list(lm.ckpt.get("roi_size") or cfg.infer.roi_size)
        overlap, batch = self.options.window(cfg)
        out_device = torch.device("cpu") if stitch_on_cpu else self.device
        task = task_for(cfg)
        total = None
        flips = flip_dims(flip_axes(cfg), bool(self.options.tta))
        for dims in flips:
            xi = torch.flip(x, dims) if dims else x
            logits = predict_logits(
                lm.model, xi.to(self.device), cfg, self.device, roi, out_device, overlap=overlap, sw_batch_size=batch
            )
            probs = task.activation(logits)
            probs = torch.flip(probs, dims) if dims else probs
            total = probs if total is None else total.add_(probs)
        return total / len(flips)

    def _onto_image_grid(self, lm: LoadedModel, case: Case, x: torch.Tensor, meta: dict):
        """2D: probabilities resized back to the picture's own size (upright when its EXIF turn was applied)."""
        cfg = lm.cfg
        probs = self.network_probabilities(lm, x)
        size = tuple(meta["original_size"])
        if tuple(probs.shape[2:]) != size:
            probs = F.interpolate(probs, size=size, mode="bilinear", align_corners=False)
        geom = geometry_2d(case.paths[0], size, cfg.data.pixel_spacing_mm, channels=len(cfg.data.channels))
        facts = CaseFacts.from_loader(meta, {}, context=bool(cfg.data.context_slices))
        return probs[0].cpu().numpy(), geom, facts

    def _onto_volume_grid(self, lm: LoadedModel, x: torch.Tensor, d: dict):
        """3D: probabilities uncropped (when trained on the non-zero box) and resampled onto the input's voxels."""
        from monai.data import MetaTensor
        from monai.transforms import SpatialResample

        cfg = lm.cfg
        geom = d["image_meta"]["geometry"]
        on_cpu = stitch_on_cpu(x, cfg, self.device, bool(self.options.tta))
        probs = self.network_probabilities(lm, x, stitch_on_cpu=on_cpu).cpu()
        probs = probs[0].as_tensor() if hasattr(probs, "as_tensor") else probs[0]
        affine = torch.as_tensor(d[IMAGE].affine, dtype=torch.float64)
        if "crop_box" in d:  # trained on the non-zero box: background outside it, then the uncropped grid
            probs, affine = uncrop(probs, affine, d["crop_box"], task_for(cfg))
        back = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)(
            MetaTensor(probs, affine=affine), dst_affine=torch.as_tensor(geom.affine), spatial_size=list(geom.shape)
        )
        out = np.asarray(back.array if hasattr(back, "array") else back, dtype=np.float32)
        return out, geom, CaseFacts.from_loader({}, geom.meta, context=False)


def check_dimensions(case: Case, cfg: Config) -> None:
    """A 2D picture for a 3D model, a volume for a 2D one, or a volume with other modalities: said before reading."""
    is_2d_input = file_ext(case.paths[0]) in IMAGE_2D_EXTS
    if is_2d_input and cfg.data.spatial_dims == 3:
        raise fail(
            case.paths[0], "is a 2D image but the model is 3D", "use a 2D checkpoint (e.g. trained on ph2 or lgg)"
        )
    if not is_2d_input and cfg.data.spatial_dims == 2:
        raise fail(case.paths[0], "is a volume but the model is 2D", "use a 3D checkpoint (e.g. trained on brats)")
    if cfg.data.spatial_dims == 3:
        check_modality_count(case, cfg)


def preprocess(case: Case, cfg: Config) -> dict:
    """The checkpoint's own deterministic preprocessing of ``case`` (MetaTensor tracking on), as in training."""
    from medseg.data.transforms import deterministic_transforms

    pipeline = deterministic_transforms(cfg, with_label=False, for_training=False)
    image = case.paths if (cfg.data.spatial_dims == 3 and len(case.paths) > 1) else case.paths[0]
    try:
        return pipeline({IMAGE: image})
    except Exception as exc:  # noqa: BLE001
        found = find_user_error(exc)
        if found:
            raise found from None
        raise fail(case.paths[0], f"cannot be preprocessed ({type(exc).__name__}: {exc})", "check the file") from None


def flip_dims(axes: list[int], tta: bool) -> list[tuple[int, ...]]:
    """The flips test-time augmentation averages over: none, then each of the spatial ``axes`` (those training
    flipped: :func:`medseg.data.transforms.flip_axes`) of a ``(B, C, ...)`` batch."""
    return [()] + ([(2 + a,) for a in axes] if tta else [])


def stitch_on_cpu(x: torch.Tensor, cfg: Config, device: torch.device, tta: bool) -> bool:
    """Stitch the sliding-window output in host memory when the GPU could not hold it comfortably.

    On the GPU the input (C channels), the stitched output, its weight map and the probabilities (plus a running
    sum with TTA) need about ``(C + 2K + 2) * voxels * 4`` bytes; keep that under half of the memory the GPU has
    free. Without a way to ask (or a CPU device) fall back to a fixed size."""
    if device.type != "cuda":
        return False
    k = max(1, cfg.out_channels)
    need = int(np.prod(x.shape[2:])) * (x.shape[1] + 2 * k + 2 + (k if tta else 0)) * 4
    try:
        free, _total = torch.cuda.mem_get_info(device)
    except Exception:  # noqa: BLE001  (a driver that cannot say)
        return int(np.prod(x.shape[2:])) * k > LARGE_VOLUME_VOXELS
    return need > free // 2


def uncrop(probs: torch.Tensor, affine: torch.Tensor, box: dict, task: Task) -> tuple[torch.Tensor, torch.Tensor]:
    """Place ``(K, *crop)`` probabilities back into the uncropped grid of ``box`` (from ``CropNonzerod``).

    Outside the box every voxel is ``task``'s background (probability 0 for a sigmoid output; 1 for softmax
    channel 0), and the affine moves back by the crop's start index.
    """
    start, full = [int(v) for v in box["start"]], [int(v) for v in box["full_shape"]]
    if list(probs.shape[1:]) == full:
        return probs, affine
    out = task.background_probabilities((probs.shape[0], *full), dtype=probs.dtype)
    out[(slice(None), *(slice(s, s + n) for s, n in zip(start, probs.shape[1:])))] = probs
    shift = torch.eye(affine.shape[0], dtype=affine.dtype)
    shift[: len(start), -1] = -torch.tensor(start, dtype=affine.dtype)
    return out, affine @ shift
