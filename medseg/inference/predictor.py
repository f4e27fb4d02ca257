"""Logits for an image: sliding windows with Gaussian blending, in the precision the device supports."""

import torch

from medseg.config import Config
from medseg.runtime import amp_dtype


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
) -> torch.Tensor:
    """Sliding-window logits for a batch ``(B, C, *spatial)`` with Gaussian blending, returned as float32.

    ``sw_device`` is where the stitched output lives (default ``device``); ``amp`` defaults to ``train.amp`` (see
    :func:`amp_dtype` for what it means on each device).
    """
    from monai.inferers import sliding_window_inference

    roi = roi or roi_size(cfg)
    dtype = amp_dtype(device, cfg.train.amp if amp is None else amp)
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        if [int(s) for s in image.shape[2:]] == [int(r) for r in roi]:
            # One window covers the input exactly (2D slices resized to the training size): blending a single window
            # with its own weights is the identity, and the sliding-window set-up per call costs more than a small
            # forward pass, so the whole batch goes through the model at once.
            out = model(image).to(sw_device or device)
        else:
            out = sliding_window_inference(
                image,
                roi,
                cfg.infer.sw_batch_size,
                model,
                overlap=cfg.infer.overlap,
                mode="gaussian",
                sw_device=device,
                device=sw_device or device,
            )
    return out.float()
