"""CUDA paths: AMP training, checkpoints that load on a CPU-only machine, GPU and CPU inference that agree.

Skipped where no CUDA GPU is visible (CI, this project's dev machine); run on a GPU box with
``pytest tests/test_gpu.py``.
"""

import nibabel as nib
import numpy as np
import pytest
import torch

from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.data import synthetic
from medseg.engine.train import train
from medseg.inference.infer import infer
from medseg.inference.predictor import predict_logits
from tests.conftest import blob_3d_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU visible")


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gpu")
    data = synthetic.make_nifti_folder(root / "data", n=8, shape=(28, 28, 20), seed=1)
    res = train(blob_3d_config(), data, root / "run", device="cuda", progress=False)
    return root, data, res


def test_amp_training_on_cuda_learns(gpu_run):
    _, _, res = gpu_run
    assert res.best_metric > 0.7, res.history[-1]
    assert all(np.isfinite(r["train_loss"]) for r in res.history)  # the GradScaler never let an inf through


def test_cuda_checkpoint_loads_on_cpu_and_holds_amp_state(gpu_run):
    root, _, _ = gpu_run
    ck = load_checkpoint(root / "run" / "last.pt", map_location="cpu")
    assert all(t.device.type == "cpu" for t in ck["state_dict"].values())
    assert all(
        t.dtype == torch.float32 for t in ck["state_dict"].values() if t.is_floating_point()
    )  # AMP keeps fp32 weights
    assert ck.get("scaler"), "the GradScaler state must be saved so --resume continues the loss scale"


def test_gpu_and_cpu_inference_agree_and_keep_geometry(gpu_run, tmp_path):
    root, data, _ = gpu_run
    vol = min((data / "images").glob("*.nii.gz"))
    src = nib.load(str(vol))
    outs = {}
    for dev in ("cuda", "cpu"):
        infer(
            [str(vol)],
            model=[str(root / "run" / "best.pt")],
            out=tmp_path / dev,
            device=dev,
            progress=False,
        )
        seg = nib.load(str(next((tmp_path / dev).glob("*_seg.nii.gz"))))
        assert np.allclose(seg.affine, src.affine, atol=1e-5) and seg.shape == src.shape[:3]
        outs[dev] = np.asarray(seg.dataobj) > 0
    assert outs["cpu"].sum() > 0
    # fp16 autocast on the GPU vs fp32 on the CPU: only voxels sitting on the threshold may differ
    assert (outs["cuda"] != outs["cpu"]).mean() < 0.002


def test_amp_logits_track_fp32_logits(gpu_run):
    root, _, _ = gpu_run
    from medseg.models import build_model

    ck = load_checkpoint(root / "run" / "best.pt", map_location="cpu")
    net = build_model(ck["model"]).cuda().eval()
    net.load_state_dict(ck["state_dict"])
    cfg = blob_3d_config()
    x = torch.randn(1, 1, 40, 36, 30, device="cuda")
    a = predict_logits(net, x, cfg, torch.device("cuda"), amp=True).float()
    b = predict_logits(net, x, cfg, torch.device("cuda"), amp=False).float()
    assert a.shape == b.shape == (1, 1, 40, 36, 30)
    assert (a - b).abs().max().item() < 0.05 * max(1.0, b.abs().max().item())


def test_2d_train_and_evaluate_on_cuda_match_cpu_evaluation(folder_dir, small_2d_overrides, tmp_path):
    from medseg.evaluation.evaluate import evaluate_model

    cfg = load_config("demo", ["data.recipe=folder", *small_2d_overrides, "train.epochs=3"])
    train(cfg, folder_dir, tmp_path / "run", device="cuda", progress=False)
    dice = {}
    for dev in ("cuda", "cpu"):
        ev = evaluate_model(
            tmp_path / "run" / "best.pt",
            "folder",
            folder_dir,
            tmp_path / f"eval-{dev}",
            device=dev,
            progress=False,
        )
        s = ev.summary
        dice[dev] = float(s[(s["class"] == "lesion") & (s["metric"] == "dice")]["mean"].iloc[0])
    assert abs(dice["cuda"] - dice["cpu"]) < 0.01, dice
