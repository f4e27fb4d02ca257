"""Time `medseg infer` on a CT-sized synthetic volume against a plain MONAI sliding-window call.

    python benchmarks/infer_volume.py                       # 512x512x300, CPU
    python benchmarks/infer_volume.py --shape 256 256 150   # quicker
    python benchmarks/infer_volume.py --device cuda         # GPU figures (volumes/s, peak GPU memory)

Both sides use the same 3D U-Net (random weights: speed does not depend on them) and the same
volume. The peer is `monai.inferers.sliding_window_inference(volume, roi, 1, model)` with default
arguments on a tensor already in memory; medseg's figure is the whole `medseg infer` path: read the
NIfTI, preprocess, Gaussian-blended sliding window, resample to the input grid, post-process,
findings, write the mask. Each side runs in its own process so peak memory is its own. On CUDA each side also
runs a second, warm pass in the same process (CUDA context, cuDNN autotuning and the model already loaded), the
figure that matters for a batch of scans; medseg's stage timings (read+preprocess, network, post-process, write)
are printed beside it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import line, peak_rss_mb, run_isolated

ROI = [96, 96, 96]
MODEL = {
    "name": "unet",
    "kwargs": {
        "spatial_dims": 3,
        "in_channels": 1,
        "out_channels": 1,
        "channels": [16, 32, 64, 128],
        "strides": [2, 2, 2],
        "num_res_units": 1,
        "dropout": 0.0,
        "norm": "instance",
    },
}


def make_inputs(workdir: Path, shape) -> tuple[Path, Path]:
    import nibabel as nib
    import numpy as np
    import torch

    from medseg.checkpoint import save_checkpoint
    from medseg.config import config_from_dict
    from medseg.models import build_model

    torch.manual_seed(0)
    vol = np.random.default_rng(0).normal(0, 100, size=shape).astype(np.int16)
    img = nib.Nifti1Image(vol, np.diag([0.7, 0.7, 1.0, 1.0]))
    nib.save(img, str(workdir / "ct.nii.gz"))
    cfg = config_from_dict(
        {
            "name": "bench",
            "data": {"recipe": "nifti", "spatial_dims": 3, "channels": ["ct"], "labels": ["background", "organ"]},
            "preprocess": {"spacing": None, "intensity": "zscore"},
            "infer": {"roi_size": ROI, "sw_batch_size": 4, "overlap": 0.25},
        }
    )
    net = build_model(MODEL)
    save_checkpoint(
        {
            "model": MODEL,
            "state_dict": net.state_dict(),
            "config": cfg.to_dict(),
            "labels": ["background", "organ"],
            "channels": ["ct"],
            "roi_size": ROI,
            "epoch": 0,
            "best_metric": 0.0,
        },
        workdir / "model.pt",
    )
    return workdir / "ct.nii.gz", workdir / "model.pt"


def run_medseg(volume: str, model: str, device: str) -> dict:
    import torch

    from medseg.inference.infer import infer

    torch.set_num_threads(torch.get_num_threads())
    walls, timings = [], None
    for _ in range(2 if device == "cuda" else 1):
        out = Path(volume).parent / f"out-{time.time_ns()}"
        t0 = time.perf_counter()
        summary = infer([volume], model=[model], out=out, device=device, progress=False)
        walls.append(time.perf_counter() - t0)
        timings = summary.outputs[0].get("timings")
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {
        "wall_s": walls[0],
        "warm_wall_s": walls[-1],
        "peak_rss_mb": peak_rss_mb(),
        "peak_gpu_mb": gpu,
        "timings": timings,
    }


def run_plain(volume: str, model: str, device: str) -> dict:
    import nibabel as nib
    import numpy as np
    import torch
    from monai.inferers import sliding_window_inference

    from medseg.checkpoint import load_checkpoint
    from medseg.models import build_model

    ck = load_checkpoint(model)
    net = build_model(ck["model"]).to(device).eval()
    net.load_state_dict(ck["state_dict"])
    arr = np.asarray(nib.load(volume).dataobj, dtype=np.float32)
    x = torch.from_numpy((arr - arr.mean()) / arr.std())[None, None]
    walls = []
    for _ in range(2 if device == "cuda" else 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            y = sliding_window_inference(x.to(device), ROI, 1, net)
        mask = (y > 0).cpu()
        walls.append(time.perf_counter() - t0)
        del mask, y
    gpu = torch.cuda.max_memory_allocated() / 2**20 if device == "cuda" else None
    return {"wall_s": walls[0], "warm_wall_s": walls[-1], "peak_rss_mb": peak_rss_mb(), "peak_gpu_mb": gpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--_worker", choices=["medseg", "plain"])
    ap.add_argument("--volume")
    ap.add_argument("--model")
    a = ap.parse_args()
    if a._worker:
        fn = run_medseg if a._worker == "medseg" else run_plain
        print(json.dumps(fn(a.volume, a.model, a.device)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        vol, model = make_inputs(Path(tmp), tuple(a.shape))
        common = [__file__, "--volume", str(vol), "--model", str(model), "--device", a.device]
        plain = run_isolated(common + ["--_worker", "plain"])
        ours = run_isolated(common + ["--_worker", "medseg"])
    shape = "x".join(map(str, a.shape))
    cmd = "python benchmarks/infer_volume.py " + " ".join(sys.argv[1:])
    line(
        f"infer wall time {shape} ({a.device})",
        round(ours["wall_s"], 1),
        "s",
        round(plain["wall_s"], 1),
        command=cmd,
        note="medseg: full file-to-file path; peer: plain sliding_window_inference on an in-memory tensor",
    )
    line(
        f"infer peak host memory {shape} ({a.device})",
        round(ours["peak_rss_mb"]),
        "MB",
        round(plain["peak_rss_mb"]),
        command=cmd,
    )
    if a.device == "cuda":
        line(
            f"infer warm wall time {shape} (cuda, second volume in the same process)",
            round(ours["warm_wall_s"], 2),
            "s",
            round(plain["warm_wall_s"], 2),
            command=cmd,
            medseg_stages_s=ours["timings"],
        )
        line(
            f"infer volumes per second {shape} (warm)",
            round(1 / ours["warm_wall_s"], 3),
            "vol/s",
            round(1 / plain["warm_wall_s"], 3),
            command=cmd,
        )
        line(
            f"infer peak GPU memory {shape}", round(ours["peak_gpu_mb"]), "MB", round(plain["peak_gpu_mb"]), command=cmd
        )


if __name__ == "__main__":
    main()
