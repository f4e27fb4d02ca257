"""Batch throughput of `medseg infer` with 1 and 2 processes (``--nproc``) on the same folder of volumes.

    python benchmarks/infer_ranks.py                         # 8 volumes of 160x160x120, CPU, 1 and 2 processes
    python benchmarks/infer_ranks.py --cases 16 --nproc 1 2 4
    python benchmarks/infer_ranks.py --device cuda --nproc 1 2   # one process per GPU

The network is the 3D U-Net of `benchmarks/infer_volume.py` with random weights (speed does not depend on them).
Each run is a fresh `medseg infer` command line into an empty folder, timed from launch to exit, so the figure
includes starting the processes and loading the model in each of them: what a user waits for. On a CPU the cores
are shared out between the processes (2 cores, 2 processes: one thread each). Every run's masks are compared with
the first run's, voxel by voxel: a process with fewer threads sums in another order, which can move a logit that
random weights leave next to the threshold by a rounding error.
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
from infer_volume import make_inputs


def make_cases(folder: Path, n: int, shape) -> Path:
    """``n`` volumes of about ``shape`` (sizes differ a little, as a real batch's do), 0.7 x 0.7 x 1 mm."""
    import nibabel as nib
    import numpy as np

    scans = folder / "scans"
    scans.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        size = [max(16, s + int(rng.integers(-s // 8, s // 8 + 1))) for s in shape]
        vol = rng.normal(0, 100, size=size).astype(np.int16)
        nib.save(nib.Nifti1Image(vol, np.diag([0.7, 0.7, 1.0, 1.0])), str(scans / f"case{i:02d}.nii.gz"))
    return scans


def run_batch(scans: Path, model: Path, out: Path, nproc: int, device: str) -> float:
    cmd = [sys.executable, "-m", "medseg", "infer", str(scans), "--model", str(model), "--out", str(out)]
    cmd += ["--device", device, "--nproc", str(nproc), "--quiet"]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise RuntimeError(done.stdout[-2000:] + done.stderr[-2000:])
    return seconds


def stage_seconds(out: Path) -> dict:
    """The cases' stage timings summed (read+preprocess, network, resample, write): where the time goes."""
    total: dict = {}
    for f in out.glob("*_findings.json"):
        for k, v in json.loads(f.read_text())["timings"].items():
            total[k] = round(total.get(k, 0) + v, 1)
    return total


def main() -> None:

    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", type=int, default=8)
    ap.add_argument("--shape", type=int, nargs=3, default=[160, 160, 120])
    ap.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    shape = "x".join(map(str, a.shape))
    cmd = "python benchmarks/infer_ranks.py " + " ".join(sys.argv[1:])
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        _, model = make_inputs(tmp, (16, 16, 16))
        scans = make_cases(tmp, a.cases, a.shape)
        reference, base = None, None
        for n in a.nproc:
            out = tmp / f"out{n}"
            seconds = run_batch(scans, model, out, n, a.device)
            summary = json.loads((out / "infer_summary.json").read_text())
            got = read_masks(out)
            if reference is None:
                reference, base = got, seconds
            assert list(got) == list(reference), (list(got), list(reference))
            differ = sum(int((got[k] != reference[k]).sum()) for k in got)
            voxels = sum(v.size for v in got.values())
            per_rank = {r: sum(c["rank"] == r for c in summary["cases"]) for r in range(n)}
            line(
                f"batch inference, {a.cases} volumes of about {shape}, {n} process(es) ({a.device})",
                round(a.cases / seconds * 60, 2),
                "cases/min",
                None,
                command=cmd,
                seconds=round(seconds, 1),
                speedup=round(base / seconds, 2),
                cases_per_process=per_rank,
                voxels_differing_from_first_run=f"{differ} of {voxels} ({100 * differ / voxels:.4f} %)",
                stages_s=stage_seconds(out),
            )


if __name__ == "__main__":
    main()
