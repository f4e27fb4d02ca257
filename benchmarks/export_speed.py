"""`medseg infer` file to file with a checkpoint, its ONNX export and its TorchScript export, on the same inputs.

    python benchmarks/export_speed.py                  # PH2-sized photos (shipped ph2 config) and a BraTS volume
    python benchmarks/export_speed.py --images 40 --only 2d

The networks have random weights (speed does not depend on them; the shipped ph2 config's encoder starts from its
ImageNet weights). Each run is a fresh `medseg infer` command into an empty folder; the figures are the network
stage (`predict_s` in the findings, summed over the cases: preprocessing, sliding window and resampling back) and
the whole command's wall time, start-up included. Each export's masks are compared with the checkpoint's, pixel by
pixel.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import line, read_masks


def photos(folder: Path, n: int) -> list[str]:
    """``n`` dermoscopy-sized RGB photos (572 x 765, PH2's size) with a dark lesion on skin tones."""
    import numpy as np
    from PIL import Image

    from medseg.data import synthetic

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img, _ = synthetic.lesion_2d(rng, 572, 765)
        Image.fromarray(img).save(folder / f"IMD{i:03d}.png")
    return [str(folder)]


def brats_case(folder: Path) -> list[str]:
    """One BraTS-sized case: FLAIR and T1c volumes of 240 x 240 x 155 at 1 mm."""
    import nibabel as nib
    import numpy as np

    from medseg.data import synthetic

    folder.mkdir()
    rng = np.random.default_rng(0)
    mask = synthetic.blob_3d(rng, (240, 240, 155), (0.1, 0.2))
    files = []
    for name in ("flair", "t1c"):
        vol = synthetic.mri_from_mask(rng, mask).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(folder / f"{name}.nii.gz"))
        files.append(str(folder / f"{name}.nii.gz"))
    return [",".join(files)]


def run_infer(inputs: list[str], model: Path, out: Path) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "medseg", "infer", *inputs, "--model", str(model), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    predict = sum(json.loads(f.read_text())["timings"]["predict_s"] for f in out.glob("*_findings.json"))
    return wall, predict


def measure(kind: str, cfg, inputs: list[str], tmp: Path, cmd: str) -> None:
    from medseg.engine.checkpoints import save_untrained
    from medseg.export import export_model

    ckpt = save_untrained(cfg, tmp / f"{kind}.pt")
    models = {"checkpoint": ckpt}
    models |= {f"{fmt} export": export_model(ckpt, fmt.lower()).path for fmt in ("ONNX", "TorchScript")}
    reference = None
    for name, model in models.items():
        out = tmp / f"out-{kind}-{name}"
        wall, predict = run_infer(inputs, model, out)
        got = read_masks(out)
        reference = reference or got
        differ = sum(int((got[k] != reference[k]).sum()) for k in reference)
        total = sum(v.size for v in reference.values())
        line(
            f"infer with the {name}, {kind} ({len(got)} case(s), CPU): network stage",
            round(predict, 2),
            "s",
            None,
            command=cmd,
            wall_s=round(wall, 1),
            pixels_differing_from_checkpoint=f"{differ} of {total}",
        )


def main() -> None:
    from medseg.config import load_config

    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=20)
    ap.add_argument("--only", choices=["2d", "3d"])
    a = ap.parse_args()
    cmd = "python benchmarks/export_speed.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if a.only != "3d":
            measure("PH2-sized photos, ph2 config", load_config("ph2"), photos(tmp / "ph2", a.images), tmp, cmd)
        if a.only != "2d":
            measure("BraTS-sized volume, brats config", load_config("brats"), brats_case(tmp / "brats"), tmp, cmd)


if __name__ == "__main__":
    main()
