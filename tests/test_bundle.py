"""medseg export --format monai-bundle: a folder MONAI runs by itself, whose masks are medseg infer's."""

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medseg.api import export
from medseg.config import load_config
from medseg.data import synthetic
from medseg.engine.checkpoints import save_untrained
from medseg.errors import MedsegError
from medseg.inference.infer import infer

pytest.importorskip("fire")  # MONAI's bundle command line
pytest.importorskip("ignite")  # MONAI's evaluator

# A model in float32 everywhere: on a CPU with native bfloat16, medseg infer would otherwise run the network in
# bfloat16 (train.amp), and random weights make near-ties of classes that rounding breaks either way.
SMALL = ["model.channels=[8,16,32]", "model.strides=[2,2]", "infer.roi_size=[32,32,32]", "train.amp=false"]


def _brain_cases(root: Path, modalities, n=2, seed=0) -> Path:
    """Case folders of skull-stripped-looking volumes (zero outside a 'brain') on oblique, anisotropic grids."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        folder = root / f"p{i}"
        folder.mkdir(parents=True)
        shape = (44 + 4 * i, 40, 30)
        lesion = synthetic.blob_3d(rng, shape, (0.2, 0.3))
        brain = synthetic.blob_3d(rng, shape, (0.35, 0.45)) | lesion
        turn = 0.2 + 0.1 * i
        affine = np.eye(4)
        rot = [[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]
        affine[:3, :3] = np.asarray(rot) @ np.diag([1.1, 0.9, 1.6])
        affine[:3, 3] = [-30.0, 12.0, 5.0 * i]
        for m in modalities:
            vol = (synthetic.mri_from_mask(rng, lesion) * brain).astype(np.float32)
            nib.save(nib.Nifti1Image(vol, affine), str(folder / f"{m}.nii.gz"))
    return root


def _run_bundle(bundle: Path, data: Path, out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/inference.json"]
    cmd += ["--meta_file", "configs/metadata.json", "--dataset_dir", str(data), "--output_dir", str(out)]
    assert "medseg" not in (bundle / "configs/inference.json").read_text()  # MONAI's transforms alone run it
    done = subprocess.run(cmd, cwd=bundle, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def _same_masks(medseg_mask: Path, bundle_mask: Path) -> None:
    a, b = nib.load(medseg_mask), nib.load(bundle_mask)
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj).astype(np.uint8))


@pytest.mark.slow
def test_multimodal_bundle_masks_equal_medseg_infer(tmp_path):
    """BraTS' pipeline (two modalities, RAS, 2 mm, non-zero crop, non-zero z-score, 5 classes) on oblique grids."""
    cfg = load_config("brats", SMALL)
    ckpt = save_untrained(cfg, tmp_path / "best.pt")
    res = export(ckpt, fmt="monai-bundle")
    bundle = tmp_path / "best_bundle"
    assert res.path == bundle and res.max_abs_diff == 0.0
    for name in ("configs/metadata.json", "configs/inference.json", "models/model.ts", "docs/README.md"):
        assert (bundle / name).is_file(), name

    meta = json.loads((bundle / "configs/metadata.json").read_text())
    image, pred = (meta["network_data_format"][k] for k in ("inputs", "outputs"))
    assert image["image"]["channel_def"] == {"0": "flair", "1": "t1c"} and image["image"]["spatial_shape"] == [32] * 3
    assert pred["pred"]["num_channels"] == 5 and pred["pred"]["channel_def"]["4"] == "enhancing"
    assert meta["medseg"]["source_checkpoint"] == "best.pt" and len(meta["medseg"]["source_sha256"]) == 64

    data = _brain_cases(tmp_path / "cases", ["flair", "t1c"])
    infer([str(data)], model=[str(ckpt)], out=tmp_path / "medseg", progress=False)
    _run_bundle(bundle, data, tmp_path / "monai")
    for case in ("p0", "p1"):
        _same_masks(tmp_path / "medseg" / f"{case}_seg.nii.gz", tmp_path / "monai" / case / "flair_seg.nii.gz")


@pytest.mark.slow
def test_binary_bundle_with_clean_up_equals_medseg_infer(tmp_path):
    cfg = load_config(
        "brats",
        [
            *SMALL,
            "data.labels=[background,tumour]",
            "data.channels=[t1c]",
            "preprocess.crop_foreground=false",
            "preprocess.nonzero=false",
            "infer.keep_largest=true",
            "infer.fill_holes=true",
            "infer.threshold=0.45",
        ],
    )
    ckpt = save_untrained(cfg, tmp_path / "model.pt", seed=3)
    bundle = export(ckpt, fmt="monai-bundle", out=tmp_path / "bundle").path
    data = tmp_path / "scans"
    data.mkdir()
    for case in _brain_cases(tmp_path / "cases", ["t1c"], seed=1).iterdir():  # one volume file per case
        (case / "t1c.nii.gz").rename(data / f"{case.name}.nii.gz")
    infer([str(data)], model=[str(ckpt)], out=tmp_path / "medseg", progress=False)
    _run_bundle(bundle, data, tmp_path / "monai")
    for case in ("p0", "p1"):
        _same_masks(tmp_path / "medseg" / f"{case}_seg.nii.gz", tmp_path / "monai" / f"{case}_seg.nii.gz")
        assert np.asarray(nib.load(tmp_path / "monai" / f"{case}_seg.nii.gz").dataobj).max() == 1  # not all empty


def test_bundle_refusals_name_the_file_and_the_fix(tmp_path):
    two_d = save_untrained(load_config("demo", ["preprocess.spatial_size=[32,32]"]), tmp_path / "photo.pt")
    with pytest.raises(MedsegError, match=r"photo.pt: is a 2D model.*fix: export it with --format onnx"):
        export(two_d, fmt="monai-bundle")

    ckpt = save_untrained(load_config("brats", SMALL), tmp_path / "best.pt")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(MedsegError, match=r"mine: already exists and is not empty; fix: pass --force"):
        export(ckpt, fmt="monai-bundle", out=foreign)
    with pytest.raises(MedsegError, match=r"mine: is not a bundle medseg wrote; --force replaces only those"):
        export(ckpt, fmt="monai-bundle", out=foreign, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"

    first = export(ckpt, fmt="monai-bundle", out=tmp_path / "b").path
    (first / "data").mkdir()
    (first / "data" / "scan.nii.gz").write_bytes(b"the user's")
    export(ckpt, fmt="monai-bundle", out=first, force=True)  # medseg's own bundle: its files are replaced
    assert (first / "data" / "scan.nii.gz").read_bytes() == b"the user's"  # and nothing else is touched
    with pytest.raises(MedsegError, match=r"--format 'bundle' is not known; fix: use one of onnx, torchscript"):
        export(ckpt, fmt="bundle")
