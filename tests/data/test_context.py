"""2.5D input (data.context_slices): neighbouring slices found by file name and stacked as extra channels."""

import json
import logging
import shutil

import numpy as np
import pytest
from PIL import Image

from medseg.config import load_config
from medseg.data import IMAGE
from medseg.data.transforms import LoadImage2Dd
from medseg.engine.checks import check_config
from medseg.engine.train import train
from medseg.errors import MedsegError
from medseg.inference.infer import infer
from medseg.io import slice_neighbours
from tests.conftest import write_slices


def test_neighbours_by_number_centre_first_and_edges_repeat(tmp_path):
    d = write_slices(tmp_path, {1: 10, 2: 20, 3: 30})
    paths, found = slice_neighbours(d / "s_2.png", 1)
    assert [p.name for p in paths] == ["s_2.png", "s_1.png", "s_3.png"] and found == 2
    paths, found = slice_neighbours(d / "s_1.png", 2)  # below the first slice: the first slice stands in
    assert [p.name for p in paths] == ["s_1.png", "s_1.png", "s_2.png", "s_1.png", "s_3.png"] and found == 2
    z = write_slices(tmp_path / "padded", {8: 1, 9: 2, 10: 3}, fmt="img{:03d}.png")
    assert [p.name for p in slice_neighbours(z / "img009.png", 1)[0]] == ["img009.png", "img008.png", "img010.png"]
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "lonely.png")
    paths, found = slice_neighbours(tmp_path / "lonely.png", 1)
    assert [p.name for p in paths] == ["lonely.png"] * 3 and found == 0


def test_loader_stacks_neighbours_as_channels(tmp_path):
    d = write_slices(tmp_path, {1: 10, 2: 20, 3: 30})
    out = LoadImage2Dd(1, 2, keys=[IMAGE], context=1)({IMAGE: str(d / "s_2.png")})
    assert out[IMAGE].shape == (3, 6, 8)
    assert [float(c.mean()) for c in out[IMAGE]] == [20.0, 10.0, 30.0]  # centre, below, above
    assert out["image_meta"]["context_found"] == 2
    Image.fromarray(np.zeros((5, 8), np.uint8)).save(d / "s_4.png")
    with pytest.raises(MedsegError, match=r"s_4\.png.*one size"):
        LoadImage2Dd(1, 2, keys=[IMAGE], context=1)({IMAGE: str(d / "s_3.png")})


def test_context_is_for_2d_only():
    with pytest.raises(MedsegError, match="context_slices"):
        check_config(load_config("brats", ["data.context_slices=1"]))


def test_lgg_2p5d_trains_and_infers_with_its_neighbours(lgg_dir, tmp_path, caplog):
    cfg = load_config(
        "lgg",
        [
            "data.context_slices=1",
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
    from medseg.checkpoint import load_checkpoint

    ck = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["model"]["kwargs"]["in_channels"] == 9  # 3 MRI channels x 3 slices
    patient = min(p for p in (lgg_dir / "kaggle_3m").iterdir() if p.is_dir())
    middle = patient / f"{patient.name}_5.tif"
    lone = tmp_path / "lone" / "scan.tif"
    lone.parent.mkdir()
    shutil.copy(middle, lone)
    caplog.set_level(logging.INFO, logger="medseg")
    infer(
        [str(middle)],
        model=[str(tmp_path / "run" / "last.pt")],
        out=tmp_path / "o1",
        device="cpu",
        progress=False,
    )
    infer(
        [str(lone)],
        model=[str(tmp_path / "run" / "last.pt")],
        out=tmp_path / "o2",
        device="cpu",
        progress=False,
    )
    found = json.loads((tmp_path / "o1" / f"{middle.stem}_findings.json").read_text())
    assert found["context_slices_found"] == 2
    assert json.loads((tmp_path / "o2" / "scan_findings.json").read_text())["context_slices_found"] == 0
    assert any("no neighbouring slices" in m and "scan.tif" in m for m in caplog.messages)
    assert Image.open(found["segmentation"]).size == Image.open(middle).size
