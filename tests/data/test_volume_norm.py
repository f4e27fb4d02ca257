"""Per-volume intensity normalisation of 2D slices (preprocess.intensity: volume), as in Buda et al. 2019."""

import json
import logging
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.data import IMAGE
from medseg.data.transforms import NormalizeByVolumed, deterministic_transforms
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.inference.infer import infer
from medseg.io import volume_slices
from tests.conftest import write_slices


def test_volume_slices_are_the_numbered_siblings_in_numeric_order(tmp_path):
    d = write_slices(tmp_path, {10: 1, 2: 2, 1: 3})
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(d / "s_1_mask.png")  # a mask is not a slice
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(d / "t_1.png")  # another volume
    (d / "s_3.txt").write_text("not an image")  # another extension
    assert [p.name for p in volume_slices(d / "s_2.png")] == ["s_1.png", "s_2.png", "s_10.png"]
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(d / "lonely.png")
    assert [p.name for p in volume_slices(d / "lonely.png")] == ["lonely.png"]


def test_slices_are_normalised_with_their_volumes_statistics(tmp_path):
    # three constant slices 10, 20 and 60 (equal sizes): volume mean 30, std sqrt((400 + 100 + 900) / 3)
    d = write_slices(tmp_path, {1: 10, 2: 20, 3: 60})
    Image.fromarray(np.full((6, 8), 255, np.uint8)).save(d / "s_1_mask.png")  # must not enter the statistics
    std = np.sqrt(1400 / 3)
    cfg = load_config(
        "lgg",
        [
            "data.channels=[flair]",
            "data.stored_channels=null",
            "preprocess.spatial_size=[6,8]",
            "preprocess.intensity=volume",
            "preprocess.volume_percentiles=[0,100]",
        ],
    )
    pipe = deterministic_transforms(cfg, with_label=False, for_training=False)
    out = pipe({IMAGE: str(d / "s_1.png")})
    # a per-slice z-score would give 0 everywhere; the volume's scale keeps the slice darker than the rest
    assert float(out[IMAGE].mean()) == pytest.approx((10 - 30) / std, abs=1e-5)
    assert out["image_meta"]["volume_slices"] == 3
    assert float(pipe({IMAGE: str(d / "s_3.png")})[IMAGE].mean()) == pytest.approx((60 - 30) / std, abs=1e-5)
    # percentiles [0, 50] clip the volume to [10, 20] first: values 10, 20, 20, mean 50/3, std sqrt(200/9),
    # so the bright slice (60 -> 20) lands at (20 - 50/3) / sqrt(200/9) = 1/sqrt(2)
    clip = NormalizeByVolumed(1, 0, 50)({IMAGE: out[IMAGE] * 0 + 60, "image_meta": {"path": str(d / "s_3.png")}})
    assert float(clip[IMAGE].max()) == pytest.approx(1 / np.sqrt(2), abs=1e-5)

    # an edited slice is read again (the cache key holds modification time and size)
    write_slices(d, {3: 30})
    os.utime(d / "s_3.png", (1, 1))
    std2 = np.sqrt(((10 - 20) ** 2 + 0 + (30 - 20) ** 2) / 3)
    assert float(pipe({IMAGE: str(d / "s_1.png")})[IMAGE].mean()) == pytest.approx((10 - 20) / std2, abs=1e-5)


def test_volume_percentiles_are_checked():
    with pytest.raises(MedsegError, match="volume_percentiles"):
        deterministic_transforms(
            load_config("lgg", ["preprocess.intensity=volume", "preprocess.volume_percentiles=[50,10]"])
        )


def test_lgg_with_volume_normalisation_trains_and_infers(lgg_dir, tmp_path, caplog):
    cfg = load_config(
        "lgg",
        [
            "preprocess.intensity=volume",
            "model.channels=[4,8,16]",
            "model.strides=[2,2]",
            "model.num_res_units=1",
            "preprocess.spatial_size=[48,48]",
            "train.epochs=1",
            "train.batch_size=4",
            "train.val_every=1",
        ],
    )
    train(cfg, lgg_dir, tmp_path / "run", progress=False)
    patient = min(p for p in (lgg_dir / "kaggle_3m").iterdir() if p.is_dir())
    middle = patient / f"{patient.name}_5.tif"
    n_slices = len([p for p in patient.glob("*.tif") if not p.stem.endswith("_mask")])
    lone = tmp_path / "lone" / "scan.tif"
    lone.parent.mkdir()
    shutil.copy(middle, lone)
    caplog.set_level(logging.INFO, logger="medseg")
    ckpt = [str(tmp_path / "run" / "last.pt")]
    infer([str(middle)], model=ckpt, out=tmp_path / "o1", device="cpu", progress=False)
    infer([str(lone)], model=ckpt, out=tmp_path / "o2", device="cpu", progress=False)
    found = json.loads((tmp_path / "o1" / f"{middle.stem}_findings.json").read_text())
    assert found["volume_slices"] == n_slices > 1
    assert json.loads((tmp_path / "o2" / "scan_findings.json").read_text())["volume_slices"] == 1
    assert any("whole volume's statistics" in m and "scan.tif" in m for m in caplog.messages)
    assert not any("whole volume's statistics" in m and middle.name in m for m in caplog.messages)


def test_a_3d_image_is_its_own_volume():
    import torch

    x = torch.zeros(2, 2, 2, 2)
    x[0, 0] = 4.0  # channel 0: half 4, half 0 -> mean 2, std 2; channel 1: constant 3 -> std floored, all zero
    x[1] = 3.0
    out = NormalizeByVolumed(2, 0, 100)({IMAGE: x})[IMAGE]
    assert out[0, 0].unique().tolist() == [1.0] and out[0, 1].unique().tolist() == [-1.0]
    assert out[1].abs().max().item() == 0.0
