"""Probabilities for an image: the one place that runs a trained network on data.

:func:`predict_logits` is the primitive (sliding windows with Gaussian blending, in the precision the device
supports) that training's validation calls too. :class:`Predictor` builds on it for whole cases: the checkpoint's
own preprocessing, test-time flips, an ensemble's average, where the stitched output lives, and the way back onto
the input's voxel grid (uncropping the non-zero box, resampling through the two affines with
``monai.transforms.SpatialResample``), so any reorientation, resampling or oblique direction is undone exactly.

A volume's probabilities come back onto the input's grid one slab at a time (:func:`resample_in_slabs`): the label
map is made from each slab as it is resampled, so the input-sized map of ``K`` float32 probabilities (and the
sampling grid behind it, three more floats per voxel) is only built when something asks for it: written
probabilities, instance maps, ``medseg evaluate``'s lesion ranking or an ensemble's average.
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
SLAB_BYTES = 128 * 2**20  # resampled probabilities and their sampling grid held at once, per slab


def roi_size(cfg: Config) -> list[int]:
    if cfg.infer.roi_size:
        return list(cfg.infer.roi_size)
    if cfg.data.spatial_dims == 3:
        return list(cfg.train.patch_size or [96, 96, 96])
    return list(cfg.train.patch_size or cfg.preprocess.spatial_size or [256, 256])  # 2D: the patch, else the image


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
    """One case's probabilities ``(K, *shape)`` on its input's own grid, that grid, its loader facts and timings.

    ``labels`` is the label map before any clean-up when it was made slab by slab during resampling; ``probs`` is
    then None unless it was asked for (``keep_probabilities``)."""

    probs: np.ndarray | None
    geom: Geometry
    facts: CaseFacts
    timings: dict
    labels: np.ndarray | None = None


class Predictor:
    """Probabilities for whole cases from one checkpoint, or from several averaged (an ensemble).

    ``options`` are resolved against the first checkpoint once (:meth:`InferenceOptions.for_checkpoint`); each
    member keeps its own preprocessing, window size and, unless the options set them, its window overlap and batch.
    """

    def __init__(self, models: list[LoadedModel], device: torch.device, options: InferenceOptions | None = None):
        self.models, self.device = models, device
        self.options = (options or InferenceOptions()).for_checkpoint(models[0].cfg)
        self.task: Task = task_for(models[0].cfg)

    def predict(self, case: Case, keep_probabilities: bool = True) -> Prediction:
        """The ensemble's mean probabilities for ``case``; grid and loader facts are the first member's.

        One model on a volume, without ``keep_probabilities``: only the label map comes back (:attr:`labels`),
        made slab by slab, so memory does not grow with the input's size times its class count."""
        if len(self.models) == 1 and not keep_probabilities and self.task.voxelwise_labels:
            return self.member_prediction(self.models[0], case, keep_probabilities=False)
        acc, first, timings = None, None, {}
        for lm in self.models:
            member = self.member_prediction(lm, case, keep_probabilities=True)
            acc = member.probs if acc is None else acc + member.probs
            first = first or member
            for k, v in member.timings.items():
                timings[k] = round(timings.get(k, 0.0) + v, 3)
        if len(self.models) > 1:
            acc /= len(self.models)
        return Prediction(acc, first.geom, first.facts, timings)

    def member_prediction(self, lm: LoadedModel, case: Case, keep_probabilities: bool) -> Prediction:
        """One checkpoint on one case: probabilities on the input's own grid ``(K, *shape)``, or (volumes, without
        ``keep_probabilities``) only the label map."""
        cfg = lm.cfg
        check_dimensions(case, cfg)
        t0 = time.time()
        d = preprocess(case, cfg)
        t_pre = time.time() - t0
        img = d[IMAGE]
        x = (img.as_tensor() if hasattr(img, "as_tensor") else torch.as_tensor(img)).float()[None]
        t0 = time.time()
        labels = None
        if cfg.data.spatial_dims == 2:
            probs, geom, facts = self._onto_image_grid(lm, case, x, d["image_meta"])
        else:
            probs, labels, geom, facts = self._onto_volume_grid(lm, x, d, keep_probabilities)
        timings = {"preprocess_s": round(t_pre, 3), "predict_s": round(time.time() - t0, 3)}
        return Prediction(probs, geom, facts, timings, labels)

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
            probs = activate_in_place(task, logits)
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

    def _onto_volume_grid(self, lm: LoadedModel, x: torch.Tensor, d: dict, keep_probabilities: bool):
        """3D: probabilities uncropped (when trained on the non-zero box) and resampled onto the input's voxels, a
        slab at a time; the label map is made from each slab, the probabilities kept only when asked for."""
        cfg = lm.cfg
        task = task_for(cfg)
        geom = d["image_meta"]["geometry"]
        on_cpu = stitch_on_cpu(x, cfg, self.device, bool(self.options.tta))
        probs = self.network_probabilities(lm, x, stitch_on_cpu=on_cpu).cpu()
        del x
        probs = probs[0].as_tensor() if hasattr(probs, "as_tensor") else probs[0]
        source = SourceGrid(probs, torch.as_tensor(d[IMAGE].affine, dtype=torch.float64), d.get("crop_box"), task)
        shape = tuple(int(s) for s in geom.shape)
        kept = np.empty((probs.shape[0], *shape), dtype=np.float32) if keep_probabilities else None
        labels = None if keep_probabilities else np.empty(shape, dtype=np.uint8)
        for z, slab in resample_in_slabs(source, torch.as_tensor(geom.affine, dtype=torch.float64), shape):
            if kept is not None:
                kept[..., z] = slab
            else:
                labels[..., z] = task.probabilities_to_labels(slab, self.options.threshold)
        return kept, labels, geom, CaseFacts.from_loader({}, geom.meta, context=False)


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


def activate_in_place(task: Task, logits: torch.Tensor) -> torch.Tensor:
    """``task.activation`` on ``(1, K, *spatial)`` logits, written over them a slab at a time, so a large volume's
    probabilities need no second buffer of its size."""
    if logits.shape[0] != 1 or logits.ndim != 5:
        return task.activation(logits)
    step = max(1, logits.shape[-1] // 8)
    for z in range(0, logits.shape[-1], step):
        part = logits[..., z : z + step]
        part.copy_(task.activation(part))
    return logits


@dataclass
class SourceGrid:
    """The network's probabilities ``(K, *crop)`` as the grid ``affine`` they were uncropped onto: background
    outside ``box`` (from ``CropNonzerod``; None when the network saw the whole volume)."""

    probs: torch.Tensor
    affine: torch.Tensor  # of the cropped grid, as preprocessing left it
    box: dict | None
    task: Task

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.box["full_shape"]) if self.box else tuple(self.probs.shape[1:])

    @property
    def start(self) -> list[int]:
        return [int(v) for v in self.box["start"]] if self.box else [0] * (self.probs.ndim - 1)

    @property
    def full_affine(self) -> torch.Tensor:
        return self.affine @ translation(-np.asarray(self.start, dtype=np.float64))

    def region(self, lo: list[int], hi: list[int]) -> torch.Tensor:
        """The uncropped probabilities over voxels ``lo:hi`` of the full grid (a view where no background is
        needed)."""
        start = self.start
        inner = [(max(a, s), min(b, s + n)) for a, b, s, n in zip(lo, hi, start, self.probs.shape[1:])]
        src = (slice(None), *(slice(a - s, b - s) for (a, b), s in zip(inner, start)))
        if all(a == lo_ and b == hi_ for (a, b), lo_, hi_ in zip(inner, lo, hi)):
            return self.probs[src]
        out = self.task.background_probabilities((self.probs.shape[0], *(b - a for a, b in zip(lo, hi))))
        if all(a < b for a, b in inner):
            out[(slice(None), *(slice(a - l_, b - l_) for (a, b), l_ in zip(inner, lo)))] = self.probs[src]
        return out


def translation(offset) -> torch.Tensor:
    """The homogeneous matrix that moves voxel indices by ``offset``."""
    m = torch.eye(len(offset) + 1, dtype=torch.float64)
    m[: len(offset), -1] = torch.as_tensor(offset, dtype=torch.float64)
    return m


def resample_in_slabs(source: SourceGrid, dst_affine: torch.Tensor, shape: tuple[int, ...]):
    """Yield ``(slice, (K, ..., slab) float32 array)`` along the last axis of the grid ``dst_affine``/``shape``:
    ``source`` resampled bilinearly with border padding (``monai.transforms.SpatialResample``), each slab from
    only the source voxels it can reach, so no input-sized array of probabilities or sampling grid is built.

    Where the two grids coincide (no reorientation, resampling or crop) the slabs are the source's own values."""
    from monai.data import MetaTensor
    from monai.transforms import SpatialResample

    full_affine, k = source.full_affine, source.probs.shape[0]
    to_source = torch.linalg.solve(full_affine, dst_affine).numpy()  # destination voxel -> source voxel
    same = np.allclose(to_source, np.eye(len(to_source)), atol=1e-3) and tuple(source.shape) == tuple(shape)
    plane = int(np.prod(shape[:-1]))
    step = max(1, min(shape[-1], SLAB_BYTES // (plane * 4 * (k + 4))))
    resample = SpatialResample(mode="bilinear", padding_mode="border", dtype=np.float32)
    for z0 in range(0, shape[-1], step):
        z = slice(z0, min(z0 + step, shape[-1]))
        if same:
            yield z, source.region([0] * (len(shape) - 1) + [z.start], [*shape[:-1], z.stop]).numpy()
            continue
        lo, hi = reach(to_source, shape, z, source.shape)
        slab_affine = dst_affine @ translation([0] * (len(shape) - 1) + [z0])
        back = resample(
            MetaTensor(source.region(lo, hi), affine=full_affine @ translation(np.asarray(lo, dtype=np.float64))),
            dst_affine=slab_affine,
            spatial_size=[*shape[:-1], z.stop - z.start],
        )
        yield z, np.asarray(back.array if hasattr(back, "array") else back, dtype=np.float32)


def reach(to_source: np.ndarray, shape, z: slice, source_shape) -> tuple[list[int], list[int]]:
    """The box of source voxels ``[lo, hi)`` that bilinear sampling of destination slab ``z`` can touch: its
    corners mapped through ``to_source``, widened by a voxel each side and clipped to the source (border padding
    repeats the source's edge, which a clipped box keeps)."""
    ranges = [(0, s - 1) for s in shape[:-1]] + [(z.start, z.stop - 1)]
    corners = np.array(np.meshgrid(*ranges, indexing="ij")).reshape(len(shape), -1)
    mapped = to_source[:-1, :-1] @ corners + to_source[:-1, -1:]
    lo = [int(np.clip(np.floor(v) - 1, 0, n - 1)) for v, n in zip(mapped.min(axis=1), source_shape)]
    hi = [int(np.clip(np.ceil(v) + 2, a + 1, n)) for v, a, n in zip(mapped.max(axis=1), lo, source_shape)]
    return lo, hi
