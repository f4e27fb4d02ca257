"""Synthetic demo data, generated on first use into the data directory.

``options.dims`` = 2 writes dermoscopy-like lesions in the ``folder`` layout;
3 writes blob volumes in the ``nifti`` layout. Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

from .base import RecipeResult, register
from .folder import folder_samples
from .nifti import nifti_samples


@register("demo")
def demo_samples(data_dir: Path, options: dict) -> RecipeResult:
    from .synthetic import make_folder_2d, make_nifti_folder

    dims = int(options.get("dims", 2))
    n = int(options.get("n_cases", 32))
    marker = data_dir / ".medseg-demo"
    if not marker.exists():
        if dims == 2:
            make_folder_2d(data_dir, n=n, size=tuple(options.get("size", (96, 128))), seed=int(options.get("seed", 0)))
        else:
            make_nifti_folder(data_dir, n=n, shape=tuple(options.get("size", (40, 40, 32))), seed=int(options.get("seed", 0)))
        marker.write_text(f"synthetic medseg demo data, dims={dims}, n={n}\n")
    return (folder_samples if dims == 2 else nifti_samples)(Path(data_dir), options)


demo_samples.generates_data = True
