"""DistributedDataParallel on 2 CPU processes (gloo) against a single process with the same global batch."""

import pytest

from medseg.checkpoint import load_checkpoint
from medseg.config import load_config
from medseg.engine.train import train
from medseg.errors import MedsegError

# Stated tolerance: DDP shards the data and draws different augmentations per rank, so it is not bit-identical
# to one process; both must converge and their best validation Dice must agree within 0.05.
TOLERANCE = 0.05


@pytest.mark.slow
def test_ddp_gloo_matches_single_process(folder_dir, tmp_path):
    cfg = load_config(
        "demo",
        [
            "data.recipe=folder",
            "preprocess.spatial_size=[48,64]",
            "train.epochs=60",
            "train.batch_size=4",
            "train.lr=0.005",
            "train.val_every=20",
        ],
    )
    single = train(cfg, folder_dir, tmp_path / "single", progress=False)
    ddp = train(cfg, folder_dir, tmp_path / "ddp", progress=False, nproc=2)
    assert single.best_metric > 0.8 and ddp.best_metric > 0.8
    assert abs(ddp.best_metric - single.best_metric) < TOLERANCE
    ck = load_checkpoint(tmp_path / "ddp" / "last.pt")
    assert ck["world_size"] == 2 and ck["epoch"] == 60
    assert len(list((tmp_path / "ddp" / "tb").glob("events.out.tfevents.*"))) == 1  # only rank 0 writes
    assert len(ddp.history) == 60
    # --resume works for a distributed run too
    more = load_config(
        "demo",
        [
            "data.recipe=folder",
            "preprocess.spatial_size=[48,64]",
            "train.epochs=61",
            "train.batch_size=4",
            "train.lr=0.005",
            "train.val_every=20",
        ],
    )
    again = train(more, folder_dir, tmp_path / "ddp", resume=True, progress=False, nproc=2)
    assert load_checkpoint(tmp_path / "ddp" / "last.pt")["epoch"] == 61 and len(again.history) == 61


def test_global_batch_must_divide(folder_dir, tmp_path):
    cfg = load_config("demo", ["data.recipe=folder", "train.batch_size=3"])
    with pytest.raises(MedsegError, match="not divisible by --nproc 2"):
        train(cfg, folder_dir, tmp_path / "x", progress=False, nproc=2)
