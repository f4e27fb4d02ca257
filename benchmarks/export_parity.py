"""How close each exported network stays to PyTorch, and which of its axes stay free.

    python benchmarks/export_parity.py                 # every exportable family, ONNX and TorchScript
    python benchmarks/export_parity.py --nets unet segnet

Each network has random weights (parity does not depend on them); ``medseg export`` measures the largest logit
difference on one random batch of two windows and records it in the file; this script also times one window
through each runtime. 2D families on the ``demo`` config at 64x64, the 3D U-Net on the BraTS config.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _common import line

NETS = {
    "unet": ["preprocess.spatial_size=[64,64]"],
    "attention_unet": ["preprocess.spatial_size=[64,64]"],
    "basicunet": ["preprocess.spatial_size=[64,64]", "model.channels=[8,16,32,64,128]", "model.strides=[2,2,2,2]"],
    "segresnet": ["preprocess.spatial_size=[64,64]"],
    "segnet": ["preprocess.spatial_size=[64,64]"],
    "encoder_unet": ["preprocess.spatial_size=[64,64]", "model.encoder=efficientnet-lite0"],
    "fcn": ["preprocess.spatial_size=[64,64]", "model.encoder=efficientnet-lite0"],
    "unet3d": [],
}


def window_seconds(model, x, runs: int = 5) -> float:
    import torch

    with torch.no_grad():
        model(x)
        t0 = time.perf_counter()
        for _ in range(runs):
            model(x)
    return (time.perf_counter() - t0) / runs


def main() -> None:
    import torch

    from medseg.config import load_config
    from medseg.engine.checkpoints import save_untrained
    from medseg.export import export_model
    from medseg.inference.checkpoints import load_models

    ap = argparse.ArgumentParser()
    ap.add_argument("--nets", nargs="+", default=list(NETS))
    a = ap.parse_args()
    cmd = "python benchmarks/export_parity.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        for net in a.nets:
            cfg = load_config("brats") if net == "unet3d" else load_config("demo", [f"model.name={net}", *NETS[net]])
            ck = save_untrained(cfg, Path(tmp) / f"{net}.pt")
            torch_model = load_models([ck], torch.device("cpu"))[0]
            x = torch.randn(1, int(torch_model.ckpt["model"]["kwargs"]["in_channels"]), *torch_model.ckpt["roi_size"])
            base = window_seconds(torch_model.model, x)
            for fmt in ("onnx", "torchscript"):
                res = export_model(ck, fmt)
                runner = load_models([res.path], torch.device("cpu"))[0].model
                line(
                    f"export parity, {net}, {fmt}: max |logit difference| against PyTorch",
                    float(f"{res.max_abs_diff:.3g}"),
                    "",
                    command=cmd,
                    dynamic_axes=res.dynamic_axes,
                    window_s=round(window_seconds(runner, x), 4),
                    pytorch_window_s=round(base, 4),
                    window=list(x.shape[2:]),
                )


if __name__ == "__main__":
    main()
