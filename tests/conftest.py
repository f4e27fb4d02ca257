"""Shared fixtures: synthetic twins of every recipe, and the real data when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _share_cores_among_workers() -> None:
    """Under pytest-xdist each worker gets its share of the cores, before torch sizes its thread pool: workers that
    each claim every core spin against each other, and subprocesses inherit the same share."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // workers))


_share_cores_among_workers()

from medseg.data import synthetic  # after the thread share: it imports torch

SHARED = Path(os.environ.get("MEDSEG_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


def shared(sub: str) -> Path:
    """Path into ../shared/data; skips the test when the real data is absent (a user's clone)."""
    p = SHARED / sub
    if not p.exists():
        pytest.skip(f"real data not available at {p}")
    return p


@pytest.fixture()
def log_lines():
    """The lines medseg logs during the test, as the command line prints them (``warning:`` prefixes included).

    The handler sits on the ``medseg`` logger itself: once a test has run the command line in-process, that logger
    no longer propagates to the root logger, where ``caplog`` listens."""
    import logging

    from medseg.log import ROOT, PlainFormatter

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(PlainFormatter())
    logger = logging.getLogger(ROOT)
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def csv_rows(path) -> list[dict]:
    """A CSV file's rows as dicts of strings, keyed by its header."""
    import csv

    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def dice(a, b) -> float:
    """Dice overlap of two masks (any non-zero is foreground), written out here rather than taken from medseg."""
    a, b = a.astype(bool), b.astype(bool)
    return 2 * (a & b).sum() / max(1, a.sum() + b.sum())


def best_validation(history: list[dict]) -> tuple[int, float]:
    """(epoch, mean validation Dice) of a training history's best validated epoch; the first of equals wins."""
    scored = [
        (n, float(r["val_mean_dice"])) for n, r in enumerate(history, 1) if r.get("val_mean_dice") not in (None, "")
    ]
    return max(scored, key=lambda s: (s[1], -s[0]))


def run_cli(*args):
    """Invoke the ``medseg`` command line in-process with ``args`` (any objects, turned into strings)."""
    from typer.testing import CliRunner

    from medseg.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def write_slices(folder: Path, values: dict, fmt: str = "s_{}.png", shape=(6, 8)) -> Path:
    """One constant-valued 8-bit PNG per ``{slice number: value}`` in ``folder``, named by ``fmt``."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for n, v in values.items():
        Image.fromarray(np.full(shape, v, np.uint8)).save(folder / fmt.format(n))
    return folder


def pdf_text(path) -> str:
    """The text of every page of a PDF, whitespace folded to single spaces."""
    from pypdf import PdfReader

    return " ".join(" ".join(page.extract_text() for page in PdfReader(str(path)).pages).split())


@pytest.fixture(scope="session")
def ph2_dir(tmp_path_factory):
    return synthetic.make_ph2(tmp_path_factory.mktemp("ph2"), n=12)


@pytest.fixture(scope="session")
def lgg_dir(tmp_path_factory):
    return synthetic.make_lgg(tmp_path_factory.mktemp("lgg"), n_patients=4, n_slices=12, size=48)


@pytest.fixture(scope="session")
def brats_dir(tmp_path_factory):
    return synthetic.make_brats(tmp_path_factory.mktemp("brats"), n_train=3, n_val=1, shape=(32, 32, 24))


@pytest.fixture(scope="session")
def folder_dir(tmp_path_factory):
    return synthetic.make_folder_2d(tmp_path_factory.mktemp("folder"), n=12, size=(48, 64))


@pytest.fixture(scope="session")
def nifti_dir(tmp_path_factory):
    return synthetic.make_nifti_folder(tmp_path_factory.mktemp("nifti"), n=4, shape=(24, 24, 16))


@pytest.fixture()
def small_2d_overrides():
    """Settings that make a 2D training run take seconds."""
    return [
        "model.channels=[4,8,16]",
        "model.strides=[2,2]",
        "model.num_res_units=1",
        "preprocess.spatial_size=[48,64]",
        "train.batch_size=4",
        "train.val_every=1",
    ]


def blob_3d_config(*extra: str):
    """A 1-channel 3D U-Net on synthetic bright blobs (1.5 mm grid, 24³ windows) that learns in 50 short epochs."""
    from medseg.config import load_config

    return load_config(
        "brats",
        [
            "data.recipe=nifti",
            "data.labels=[background,blob]",
            "data.channels=[mr]",
            "preprocess.spacing=[1.5,1.5,1.5]",
            "preprocess.crop_foreground=false",
            "train.patch_size=[24,24,24]",
            "infer.roi_size=[24,24,24]",
            "model.channels=[8,16,32]",
            "model.strides=[2,2]",
            "train.epochs=50",
            "train.batch_size=2",
            "train.lr=0.005",
            "train.samples_per_volume=4",
            "train.val_every=50",
            "data.split.use_predefined=false",
            "train.pos_fraction=0.5",
            *extra,
        ],
    )


# A small U-Net from scratch whatever network the config ships (ph2 and humanseg ship an ImageNet encoder U-Net)
TINY_2D = [
    "model.name=unet",
    "model.pretrained=null",
    "preprocess.intensity=zscore",
    "model.channels=[4,8,16]",
    "model.strides=[2,2]",
    "model.num_res_units=1",
    "preprocess.spatial_size=[48,64]",
    "train.batch_size=4",
    "train.epochs=1",
]


def train_tiny(config: str, data_dir, run_dir, *overrides: str) -> Path:
    """Train a 1-epoch, few-feature 2D model of ``config`` (plus ``overrides``) quietly; return its best.pt."""
    from medseg.config import load_config
    from medseg.engine.train import train

    train(load_config(config, [*TINY_2D, *overrides]), data_dir, run_dir, progress=False)
    return Path(run_dir) / "best.pt"


@pytest.fixture()
def one_thread():
    """Small networks run fastest on one thread: two threads spin against each other on a busy 2-core machine,
    which made the model tests several times slower. Use with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def small_spec(name: str, **extra) -> dict:
    """The spec of a 3-level 2D network of family ``name`` (RGB in, 2 classes out unless ``extra`` says otherwise),
    with the defaults the family records, as :func:`medseg.models.model_spec` would write it."""
    from medseg.models import model_family

    kw = {
        "spatial_dims": 2,
        "in_channels": 3,
        "out_channels": 2,
        "channels": [8, 16, 32],
        "strides": [2, 2],
        "num_res_units": 1,
        "dropout": 0.0,
        "norm": "instance",
        **model_family(name).defaults,
        **extra,
    }
    return {"name": name, "kwargs": kw}


@pytest.fixture(autouse=True, scope="session")
def _cache_dir(tmp_path_factory):
    """Derived masks go to a cache of the test session's own, never the user's ~/.cache/medseg."""
    os.environ["MEDSEG_CACHE_DIR"] = str(tmp_path_factory.mktemp("medseg-cache"))


@pytest.fixture(autouse=True)
def _chdir_tmp(tmp_path, monkeypatch):
    """Run every test in its own folder so default outputs (runs/, reports/) never land in the repo."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(repo / "configs"))
    monkeypatch.chdir(tmp_path)


def schema_valid(name: str, record) -> dict:
    """``record`` (a dict, or the path of a JSON file) checked against medseg's published schema ``name``
    (``findings``, ``infer_summary``); returns the record."""
    import json

    import jsonschema

    from medseg import schemas

    data = json.loads(Path(record).read_text()) if isinstance(record, (str, Path)) else record
    jsonschema.validate(data, schemas.load(name), format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return data
