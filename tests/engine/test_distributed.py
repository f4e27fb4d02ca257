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


@pytest.mark.slow
def test_ddp_trains_a_frozen_encoder_below_a_shallow_decoder(folder_dir, tmp_path):
    """Frozen encoder epochs and a timm encoder's unread deeper blocks leave parameters without gradients: DDP
    must be told, or the second step waits for them forever. The frozen epoch must leave the encoder as it was."""
    pytest.importorskip("segmentation_models_pytorch", exc_type=ImportError)
    import torch

    net = ["data.recipe=folder", "preprocess.spatial_size=[48,64]", "train.batch_size=4", "train.val_every=1"]
    net += ["model.name=encoder_unet", "model.encoder=efficientnet-lite0", "model.channels=[8,16,32]"]
    start = train(load_config("demo", [*net, "train.epochs=1"]), folder_dir, tmp_path / "start", progress=False)
    frozen = load_config("demo", [*net, "train.epochs=1", "train.freeze_encoder_epochs=1"])
    train(frozen, folder_dir, tmp_path / "ddp", progress=False, nproc=2, init=start.run_dir / "last.pt")
    before = load_checkpoint(tmp_path / "start" / "last.pt")["state_dict"]
    after = load_checkpoint(tmp_path / "ddp" / "last.pt")["state_dict"]
    weights = [k for k in after if k.startswith("encoder.") and k.endswith(("weight", "bias"))]  # not norm statistics
    assert weights and all(torch.equal(before[k], after[k]) for k in weights)
    assert not torch.equal(before["segmentation_head.0.weight"], after["segmentation_head.0.weight"])
