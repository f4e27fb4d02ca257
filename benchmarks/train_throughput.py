"""Training throughput: medseg's pipeline vs a plain MONAI Dataset + DataLoader loop, side by side.

    python benchmarks/train_throughput.py --data-dir ../shared/data/ph2            # PH2 recipe
    python benchmarks/train_throughput.py --data-dir ../shared/data/ph2 --steps 30
    python benchmarks/train_throughput.py --data-dir ../shared/data/ph2 --device cuda --steps 300   # GPU, AMP

Same model (configs/ph2.yaml U-Net), batch size, input size and augmentation on both sides; each side runs in its
own process and is timed over --steps optimisation steps after 2 warm-up steps. The peer is written the way MONAI's
tutorials write it: LoadImaged (PILReader) -> EnsureChannelFirstd -> binarise -> Resized -> NormalizeIntensityd ->
the same random transforms, decoded every step, MetaTensors throughout, DataLoader with 2 workers. medseg decodes
and resizes once (CacheDataset), drops MetaTensor bookkeeping after the cache and feeds plain tensors.
With --device cuda both sides train on the GPU with mixed precision (fp16 autocast + GradScaler, as `medseg train`
does there) and the timer waits for the GPU before it stops. On a CPU medseg uses what `medseg train` uses (bfloat16
autocast where the CPU computes bfloat16 natively, float32 elsewhere) and the peer float32, as MONAI's tutorials
train on a CPU; --peer-amp gives the peer the same bfloat16 autocast, to separate the precision from the pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from _common import binarise_peer_mask, line, run_isolated


def _cfg(overrides):
    from medseg.config import load_config

    return load_config("ph2", overrides)


def _timed_steps(loader, model, loss_fn, opt, steps: int, device: str = "cpu", dtype=None) -> tuple[float, int]:
    import torch

    from medseg.engine.train import as_float

    cuda = device.startswith("cuda")
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16)
    it = iter(loader)
    done, n_img, t0 = 0, 0, None
    while done < steps + 2:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        if done == 2:
            if cuda:
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        x = torch.as_tensor(batch["image"]).float().to(device, non_blocking=True)
        y = torch.as_tensor(batch["label"]).float().to(device, non_blocking=True)
        opt.zero_grad()
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=dtype, enabled=dtype is not None):
            out = model(x)
        loss = loss_fn(as_float(out), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if done >= 2:
            n_img += x.shape[0]
        done += 1
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t0, n_img


def worker(
    side: str, data_dir: str, steps: int, overrides: list[str], device: str = "cpu", peer_amp: bool = False
) -> dict:
    import numpy as np
    import torch
    from monai.data import CacheDataset, DataLoader, Dataset
    from monai.transforms import Compose, EnsureChannelFirstd, Lambdad, LoadImaged, NormalizeIntensityd, Resized
    from monai.utils import set_determinism

    from medseg.data import load_samples
    from medseg.data.transforms import random_transforms, train_transforms
    from medseg.engine.losses import build_loss
    from medseg.engine.train import build_optimizer, make_loader
    from medseg.models import build_model, model_spec
    from medseg.runtime import amp_dtype, configure_cpu_threads, precision_name

    cfg = _cfg(overrides)
    set_determinism(0)
    samples = load_samples("ph2", data_dir).samples
    data = [{"image": s["image"], "label": s["label"]} for s in samples]
    t_cache = 0.0
    if side == "medseg":
        configure_cpu_threads(cfg.train.num_workers)
        t0 = time.perf_counter()
        ds = CacheDataset(data, train_transforms(cfg), cache_rate=1.0, num_workers=2, progress=False)
        t_cache = time.perf_counter() - t0
        loader = make_loader(ds, cfg.train.batch_size, cfg.train.num_workers, torch.Generator())
    else:
        torch.set_num_threads(2)
        size = cfg.preprocess.spatial_size
        det = [
            LoadImaged(keys=["image", "label"], reader="PILReader"),
            EnsureChannelFirstd(keys=["image", "label"]),
            Lambdad(keys="label", func=binarise_peer_mask),
            Resized(keys="image", spatial_size=size, mode="area"),
            Resized(keys="label", spatial_size=size, mode="nearest"),
            NormalizeIntensityd(keys="image", channel_wise=True),
        ]
        ds = Dataset(data, Compose(det + list(random_transforms(cfg).transforms)))
        loader = DataLoader(ds, batch_size=cfg.train.batch_size, shuffle=True, num_workers=2, persistent_workers=True)
    model = build_model(model_spec(cfg)).to(device)
    opt = build_optimizer(cfg, model.parameters())
    dev = torch.device(device)
    dtype = amp_dtype(dev, cfg.train.amp if side == "medseg" else dev.type == "cuda" or peer_amp)
    secs, n = _timed_steps(loader, model, build_loss(cfg), opt, steps, device, dtype)
    return {
        "images_per_s": n / secs,
        "seconds": secs,
        "images": n,
        "cache_s": t_cache,
        "threads": torch.get_num_threads(),
        "precision": precision_name(dtype),
        "np": np.__version__,
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data-dir", default="../shared/data/ph2")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--device", default="cpu", help="cpu or cuda (cuda: mixed precision on both sides)")
    ap.add_argument("--peer-amp", action="store_true", help="CPU: give the peer bfloat16 autocast too (where native)")
    ap.add_argument("--_worker", choices=["medseg", "plain"])
    a = ap.parse_args()
    if a._worker:
        print(json.dumps(worker(a._worker, a.data_dir, a.steps, a.overrides, a.device, a.peer_amp)))
        return
    common = (
        [__file__, "--data-dir", a.data_dir, "--steps", str(a.steps), "--device", a.device]
        + [x for o in a.overrides for x in ("--set", o)]
        + (["--peer-amp"] if a.peer_amp else [])
    )
    plain = run_isolated(common + ["--_worker", "plain"])
    ours = run_isolated(common + ["--_worker", "medseg"])
    cmd = "python benchmarks/train_throughput.py " + " ".join(sys.argv[1:])
    cfg = _cfg(a.overrides)
    what = f"PH2 {cfg.preprocess.spatial_size[0]}x{cfg.preprocess.spatial_size[1]}, batch {cfg.train.batch_size}"
    if a.device != "cpu":
        what += f", {ours['device']}"
    line(
        f"training throughput ({what})",
        round(ours["images_per_s"], 2),
        "images/s",
        round(plain["images_per_s"], 2),
        command=cmd,
        speedup=round(ours["images_per_s"] / plain["images_per_s"], 2),
        precision=ours["precision"],
        peer_precision=plain["precision"],
    )
    line("one-off cache build (decode + resize all 150 images)", round(ours["cache_s"], 1), "s", None, command=cmd)


if __name__ == "__main__":
    main()
