"""medseg export: ONNX and TorchScript files that carry their task, run by medseg infer like a checkpoint."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from medseg.checkpoint import file_hash, load_checkpoint, save_checkpoint
from medseg.cli import app
from medseg.config import load_config
from medseg.data import synthetic
from medseg.engine.checkpoints import save_untrained
from medseg.errors import MedsegError
from medseg.export import export_model, read_metadata
from medseg.inference.infer import infer

pytest.importorskip("onnxruntime")

TOLERANCE = 1e-4  # max |logit| difference an exported network may show against PyTorch on a random window

ARCHITECTURES_2D = [
    ("unet", []),
    ("attention_unet", []),
    ("basicunet", ["model.channels=[8,16,32,64,128]", "model.strides=[2,2,2,2]"]),
    ("segresnet", []),
    ("segnet", []),
    ("encoder_unet", ["model.encoder=efficientnet-lite0"]),
    ("fcn", ["model.encoder=efficientnet-lite0"]),
]


def _cfg_2d(name: str, extra: list[str]):
    return load_config("demo", [f"model.name={name}", "preprocess.spatial_size=[64,64]", *extra])


def _cfg_3d(n_classes: int = 3):
    labels = ",".join(["background", *[f"c{i}" for i in range(1, n_classes)]])
    return load_config(
        "brats",
        [f"data.labels=[{labels}]", "model.channels=[8,16,32]", "model.strides=[2,2]", "infer.roi_size=[32,32,32]"],
    )


@pytest.mark.slow
@pytest.mark.parametrize("name,extra", ARCHITECTURES_2D, ids=[a[0] for a in ARCHITECTURES_2D])
@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_every_2d_architecture_exports_with_pytorchs_logits(name, extra, fmt, tmp_path):
    if name in ("encoder_unet", "fcn"):
        pytest.importorskip("segmentation_models_pytorch")
    ck = save_untrained(_cfg_2d(name, extra), tmp_path / "best.pt")
    res = export_model(ck, fmt)
    assert res.path == tmp_path / ("best.onnx" if fmt == "onnx" else "best.ts")
    assert res.max_abs_diff < TOLERANCE
    assert read_metadata(res.path)["parity_max_abs_diff"] == pytest.approx(res.max_abs_diff)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
def test_exported_3d_model_segments_like_its_checkpoint(fmt, tmp_path):
    """Same preprocessing, window, resampling: the masks agree voxel for voxel with the checkpoint run in float32
    (an exported graph runs in float32; mixed precision on a GPU or a bfloat16 CPU moves a few boundary voxels)."""
    cfg = _cfg_3d()
    ck = save_untrained(cfg, tmp_path / "best.pt")
    payload = load_checkpoint(ck)
    payload["config"]["train"]["amp"] = False
    save_checkpoint(payload, ck)
    res = export_model(ck, fmt, out=tmp_path / f"model.{'onnx' if fmt == 'onnx' else 'ts'}")
    assert res.max_abs_diff < TOLERANCE
    assert {"batch", "spatial0", "spatial1", "spatial2"} <= set(res.dynamic_axes)
    rng = np.random.default_rng(0)
    aff = synthetic.oblique_affine(spacing=(1.3, 1.1, 1.8), angle_deg=20)
    paths = []
    for name in ("flair", "t1c"):
        vol = rng.normal(100, 20, size=(40, 36, 30)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / f"{name}.nii.gz"))
        paths.append(str(tmp_path / f"{name}.nii.gz"))
    case = ",".join(paths)
    masks = []
    for model in (ck, res.path):
        s = infer([case], model=[str(model)], out=tmp_path / f"out-{model.suffix}", progress=False)
        seg = nib.load(s.outputs[0]["segmentation"])
        assert np.allclose(seg.affine, aff, atol=1e-5)
        masks.append(np.asarray(seg.dataobj))
    assert len(np.unique(masks[0])) == 3  # random weights still give every class somewhere: a real comparison
    assert np.array_equal(masks[0], masks[1])


def test_exported_file_carries_the_task_but_no_case_ids(tmp_path):
    cfg = _cfg_3d()
    ck = save_untrained(cfg, tmp_path / "best.pt")
    payload = load_checkpoint(ck)
    payload["split"] = {"train": ["Brats_patient_007"], "val": ["Brats_patient_011"], "test": []}
    payload["data"] = {"recipe": "brats", "data_dir": "/hospital/share/brats", "n_train": 1}
    save_checkpoint(payload, ck)
    meta = read_metadata(export_model(ck, "onnx").path)
    assert meta["labels"] == ["background", "c1", "c2"] and meta["channels"] == ["flair", "t1c"]
    assert meta["config"]["preprocess"]["spacing"] == [2.0, 2.0, 2.0] and meta["roi_size"] == [32, 32, 32]
    assert meta["source_sha256"] == file_hash(ck, n=64) and meta["exported_by"].startswith("medseg ")
    text = json.dumps(meta)
    assert "Brats_patient_007" not in text and "/hospital/share" not in text and "state_dict" not in text
    assert meta["data"]["recipe"] == "brats"


def test_export_refuses_what_it_cannot_and_never_overwrites_others_files(tmp_path):
    cfg = _cfg_3d()
    ck = save_untrained(cfg, tmp_path / "best.pt")
    with pytest.raises(MedsegError, match="--format 'tflite' is not known; fix: use one of onnx, torchscript"):
        export_model(ck, "tflite")
    otsu = save_untrained(load_config("ph2", ["model.name=otsu"]), tmp_path / "otsu.pt")
    with pytest.raises(MedsegError, match=r"otsu.pt: is a classical method \(otsu\): no network to export"):
        export_model(otsu, "onnx")
    first = export_model(ck, "torchscript").path
    with pytest.raises(MedsegError, match=r"best.ts: already exists; fix: pass --force"):
        export_model(ck, "torchscript")
    assert export_model(ck, "torchscript", force=True).path == first
    foreign = tmp_path / "notes.onnx"
    foreign.write_text("a colleague's file")
    with pytest.raises(MedsegError, match="notes.onnx: exists and is not a medseg export"):
        export_model(ck, "onnx", out=foreign, force=True)
    assert foreign.read_text() == "a colleague's file"
    with pytest.raises(MedsegError, match=r"notes.onnx: is not a readable model file .*fix: re-export it"):
        infer([str(tmp_path / "x.nii.gz")], model=[str(foreign)], out=tmp_path / "o", progress=False)


def test_export_command_prints_the_file_and_its_parity(tmp_path):
    ck = save_untrained(_cfg_3d(), tmp_path / "best.pt")
    r = CliRunner().invoke(app, ["export", str(ck), "--format", "torchscript", "--out", str(tmp_path / "m.ts")])
    assert r.exit_code == 0, r.output
    assert "m.ts: torchscript, max |logit difference| 0.00e+00, dynamic axes: batch, spatial0" in r.output
    r = CliRunner().invoke(app, ["export", str(tmp_path / "missing.pt")])
    assert r.exit_code == 2 and "missing.pt: checkpoint not found" in r.output
    assert torch.jit.load(str(tmp_path / "m.ts")) is not None


def test_an_exported_model_gets_the_case_pdf_with_its_model_card(tmp_path):
    """--report with an ONNX file: the PDF's model card comes from the metadata the export carries."""
    from PIL import Image

    from medseg.api import infer_from_cli
    from tests.conftest import pdf_text

    ck = save_untrained(_cfg_2d("unet", []), tmp_path / "best.pt")
    onnx_file = export_model(ck, "onnx").path
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (64, 64), dtype=np.uint8)).save(tmp_path / "scan.png")
    infer_from_cli([str(tmp_path / "scan.png")], model=[str(onnx_file)], out=tmp_path / "out", report=True)
    text = pdf_text(tmp_path / "out" / "scan_report.pdf")
    assert "Architecture" in text and "unet 2D, channels" in text
