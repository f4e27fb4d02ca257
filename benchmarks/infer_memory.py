"""Peak host memory of `medseg infer` on a large multi-modal volume, as the number of classes grows.

    python benchmarks/infer_memory.py                            # 512x512x300, 2 modalities, 2/5/14/30 classes
    python benchmarks/infer_memory.py --classes 5 --shape 256 256 150
    python benchmarks/infer_memory.py --classes 5 --keep /tmp/masks   # also keep each mask (to compare versions)
    python benchmarks/infer_memory.py --compare /tmp/old /tmp/new     # voxels that differ between two runs

The model is the shipped BraTS config (two modalities, RAS, 2 mm network grid, z-score on the non-zero voxels,
crop to the non-zero box) with random weights and the class count changed; the input is a pair of float32 NIfTI
volumes at 1 mm, so the network sees an eighth of the input's voxels and its probabilities are resampled back
onto all of them, the step that dominates memory. Each class count runs in its own process, so
peak RSS (``ru_maxrss``) is its own; ``--tta`` adds the flips. With ``--keep`` the masks are kept so two versions of
medseg can be compared voxel by voxel.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from _common import line, peak_rss_mb, run_isolated


def make_volumes(workdir: Path, shape) -> str:
    """Two float32 modalities at 1 mm: a brain-like ellipsoid of noise in a zero background."""
    import nibabel as nib
    import numpy as np

    rng = np.random.default_rng(0)
    grid = np.ogrid[tuple(slice(0, s) for s in shape)]
    inside = sum(((g - s / 2) / (0.42 * s)) ** 2 for g, s in zip(grid, shape)) < 1
    paths = []
    for name in ("flair", "t1c"):
        vol = np.zeros(shape, dtype=np.float32)
        vol[inside] = rng.normal(100, 20, size=int(inside.sum())).astype(np.float32)
        p = workdir / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 1.0, 1.0])), str(p))
        paths.append(str(p))
    return ",".join(paths)


def make_model(workdir: Path, n_classes: int) -> str:
    from medseg.config import load_config
    from medseg.engine.checkpoints import save_untrained

    labels = ["background", *[f"class_{i}" for i in range(1, n_classes)]]
    cfg = load_config("brats", overrides=[f"data.labels=[{','.join(labels)}]"])
    return str(save_untrained(cfg, workdir / f"model-{n_classes}.pt"))


def run_medseg(volume: str, model: str, out: str, tta: bool) -> dict:
    from medseg.inference.infer import infer
    from medseg.inference.options import InferenceOptions

    t0 = time.perf_counter()
    summary = infer([volume], model=[model], out=out, device="cpu", options=InferenceOptions(tta=tta), progress=False)
    return {
        "wall_s": time.perf_counter() - t0,
        "peak_rss_mb": peak_rss_mb(),
        "mask": summary.outputs[0]["segmentation"],
        "timings": summary.outputs[0].get("timings"),
    }


def compare(old: Path, new: Path) -> None:
    """Per mask name in both folders: voxels that differ, as a count and a percentage."""
    import nibabel as nib
    import numpy as np

    for a in sorted(old.glob("*.nii.gz")):
        b = new / a.name
        if not b.exists():
            continue
        x, y = np.asarray(nib.load(a).dataobj), np.asarray(nib.load(b).dataobj)
        n = int((x != y).sum())
        print(json.dumps({"mask": a.name, "voxels": int(x.size), "differ": n, "percent": round(100 * n / x.size, 5)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--shape", type=int, nargs=3, default=[512, 512, 300])
    ap.add_argument("--classes", type=int, nargs="+", default=[2, 5, 14, 30])
    ap.add_argument("--tta", action="store_true")
    ap.add_argument("--keep", default=None, help="copy each mask here as classes-K.nii.gz")
    ap.add_argument("--compare", nargs=2, default=None, metavar=("OLD", "NEW"))
    ap.add_argument("--_worker", action="store_true")
    ap.add_argument("--volume")
    ap.add_argument("--model")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.compare:
        compare(Path(a.compare[0]), Path(a.compare[1]))
        return
    if a._worker:
        print(json.dumps(run_medseg(a.volume, a.model, a.out, a.tta)))
        return
    shape = "x".join(map(str, a.shape))
    cmd = "python benchmarks/infer_memory.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        volume = make_volumes(Path(tmp), tuple(a.shape))
        for k in a.classes:
            model = make_model(Path(tmp), k)
            args = [__file__, "--_worker", "--volume", volume, "--model", model, "--out", f"{tmp}/out-{k}"]
            res = run_isolated(args + (["--tta"] if a.tta else []))
            if a.keep:
                Path(a.keep).mkdir(parents=True, exist_ok=True)
                shutil.copy(res["mask"], Path(a.keep) / f"classes-{k}.nii.gz")
            line(
                f"infer peak host memory, {k} classes, 2 modalities, {shape} float32 (cpu{', tta' if a.tta else ''})",
                round(res["peak_rss_mb"]),
                "MB",
                command=cmd,
                wall_s=round(res["wall_s"], 1),
                stages_s=res["timings"],
            )


if __name__ == "__main__":
    main()
