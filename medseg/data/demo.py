"""Synthetic demo data, generated on first use into the data directory.

``options.dims`` = 2 writes dermoscopy-like lesions in the ``folder`` layout;
3 writes blob volumes in the ``nifti`` layout. Nothing is downloaded.

The demo only ever writes into a folder it created and marked with ``.medseg-demo``: a folder that already holds
files medseg did not write (a user's own data passed as ``--data-dir``) is refused, never overwritten.
"""

from __future__ import annotations

from pathlib import Path

from medseg.data.base import Recipe, RecipeResult, register
from medseg.data.folder import folder_samples
from medseg.data.nifti import nifti_samples
from medseg.errors import fail

MARKER = ".medseg-demo"
IN_PROGRESS = "generating"  # the marker's first word while the data is being written: a rerun finishes the job


def _claim_for_demo(data_dir: Path) -> bool:
    """Whether demo data must be generated into ``data_dir``; refuses a folder medseg did not fill itself."""
    marker = data_dir / MARKER
    if marker.is_file():
        return marker.read_text(errors="replace").startswith(IN_PROGRESS)
    if data_dir.exists() and any(data_dir.iterdir()):
        raise fail(
            data_dir,
            "is not a medseg demo folder (it holds files medseg did not write)",
            "pass an empty or new --data-dir for the demo",
        )
    return True


def demo_samples(data_dir: Path, options: dict) -> RecipeResult:
    from medseg.data.synthetic import make_folder_2d, make_nifti_folder

    dims = int(options.get("dims", 2))
    n = int(options.get("n_cases", 32))
    if _claim_for_demo(data_dir):
        marker = data_dir / MARKER
        data_dir.mkdir(parents=True, exist_ok=True)
        marker.write_text(f"{IN_PROGRESS} synthetic medseg demo data, dims={dims}, n={n}\n")  # marked before writing
        if dims == 2:
            make_folder_2d(data_dir, n=n, size=tuple(options.get("size", (96, 128))), seed=int(options.get("seed", 0)))
        else:
            make_nifti_folder(
                data_dir, n=n, shape=tuple(options.get("size", (40, 40, 32))), seed=int(options.get("seed", 0))
            )
        marker.write_text(f"synthetic medseg demo data, dims={dims}, n={n}\n")
    return (folder_samples if dims == 2 else nifti_samples)(Path(data_dir), options)


@register
class Demo(Recipe):
    """Synthetic data written on first use: 2D lesions in the folder layout, or 3D blobs in the nifti layout."""

    name = "demo"
    generates_data = True

    def cases(self, data_dir: Path, options: dict) -> RecipeResult:
        return demo_samples(data_dir, options)
