"""Helpers shared by the benchmark scripts (not part of the package)."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from datetime import date


def machine() -> str:
    """Where a figure was measured, as ``medseg cv`` records it in cv.json."""
    from medseg.evaluation.cv import describe_machine

    return describe_machine()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_isolated(args: list[str]) -> dict:
    """Run ``python THIS_SCRIPT args`` in a fresh process (own peak-memory counter); parse its JSON line."""
    out = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def read_masks(out) -> dict:
    """Every ``*_seg.*`` mask `medseg infer` wrote into ``out``, by file name, as arrays (NIfTI or PNG)."""
    from pathlib import Path

    import nibabel as nib
    import numpy as np
    from PIL import Image

    found = {}
    for p in sorted(Path(out).glob("*_seg.*")):
        found[p.name] = np.asarray(nib.load(p).dataobj) if p.name.endswith(".nii.gz") else np.array(Image.open(p))
    return found


def line(metric: str, value, unit: str, peer=None, **extra) -> None:
    """Print one figure per line: metric, value, unit, the peer's value, machine and date."""
    rec = {
        "metric": metric,
        "value": value,
        "unit": unit,
        "peer": peer,
        "machine": machine(),
        "date": str(date.today()),
        **extra,
    }
    print(json.dumps(rec))


def binarise_peer_mask(m):
    """A channel-first mask as MONAI's loaders give it -> one 0/1 float channel, by medseg's own rule
    (`binarise_mask_2d`: 1-bit, 0/1, 0/255, 3-channel and JPEG masks), the rule the peer's scoring uses too."""
    import numpy as np
    import torch

    from medseg.data.transforms import binarise_mask_2d

    binary = torch.from_numpy(binarise_mask_2d(np.moveaxis(np.asarray(m), 0, -1)))
    return m[:1].clone().copy_(binary[None])  # clone keeps the MetaTensor type the peer's pipeline runs on
