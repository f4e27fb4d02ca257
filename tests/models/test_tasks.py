"""The task interface: activations, labels, losses and validation counts of binary and multi-class tasks."""

import numpy as np
import pytest
import torch

from medseg.config import load_config
from medseg.tasks import BinaryTask, MulticlassTask, dice_from_counts, task_for


def _cfg(labels):
    return load_config("demo", [f"data.labels={labels}"])


def test_task_for_picks_by_the_number_of_labels():
    assert isinstance(task_for(_cfg("[background,lesion]")), BinaryTask)
    multi = task_for(_cfg("[background,a,b]"))
    assert isinstance(multi, MulticlassTask) and multi.out_channels == 3


def test_binary_thresholds_the_sigmoid_and_multiclass_takes_the_argmax():
    logits = torch.tensor([[[[-2.0, 0.1, 3.0]]]])  # (B=1, K=1, 1, 3)
    binary = task_for(_cfg("[background,lesion]"))
    assert binary.logits_to_labels(logits).flatten().tolist() == [0, 1, 1]
    assert binary.logits_to_labels(logits, threshold=0.6).flatten().tolist() == [0, 0, 1]
    probs = binary.activation(logits)[0].numpy()
    assert binary.probabilities_to_labels(probs, 0.6).tolist() == [[0, 0, 1]]
    multi = task_for(_cfg("[background,a,b]"))
    logits3 = torch.tensor([[[[5.0, 0.0, 0.0]], [[0.0, 5.0, 0.0]], [[0.0, 0.0, 5.0]]]])  # (1, 3, 1, 3)
    assert multi.logits_to_labels(logits3).flatten().tolist() == [0, 1, 2]
    probs3 = multi.activation(logits3)
    assert torch.allclose(probs3.sum(dim=1), torch.ones(1, 1, 3))
    assert multi.probabilities_to_labels(probs3[0].numpy()).tolist() == [[0, 1, 2]]


def test_background_probabilities_label_as_background():
    for labels in ("[background,lesion]", "[background,a,b]"):
        task = task_for(_cfg(labels))
        empty = task.background_probabilities((task.out_channels, 4, 5))
        assert not task.probabilities_to_labels(empty.numpy()).any()


def test_validation_counts_per_class_and_whole_foreground():
    pred = np.array([0, 1, 1, 2, 2, 0])
    gt = np.array([0, 1, 2, 2, 0, 1])
    multi = task_for(_cfg("[background,a,b]"))
    assert multi.class_counts(pred, gt).tolist() == [[1, 1, 1], [1, 1, 1]]
    assert multi.whole_counts(pred, gt).tolist() == [3, 1, 1]  # any foreground against any foreground
    assert task_for(_cfg("[background,lesion]")).whole_counts(pred > 0, gt > 0) is None
    assert dice_from_counts(0, 0, 0) == 1.0 and dice_from_counts(3, 1, 1) == 0.75


@pytest.mark.parametrize("labels, channels", [("[background,lesion]", 1), ("[background,a,b]", 3)])
def test_each_task_loss_trains_its_own_output(labels, channels):
    task = task_for(_cfg(labels))
    logits = torch.zeros(2, channels, 8, 8, requires_grad=True)
    label = torch.randint(0, len(labels.split(",")), (2, 1, 8, 8)).float()
    loss = task.loss()(logits, label)
    loss.backward()
    assert torch.isfinite(loss) and logits.grad.abs().sum() > 0


def _instance_cfg(*extra):
    return load_config("nuclei", ["data.task=instances", *extra])


def test_instance_targets_mark_the_rim_and_the_seam_between_touching_objects():
    from medseg.tasks import instance_classes

    ids = torch.zeros(1, 1, 5, 8)
    ids[0, 0, 1:4, 1:4] = 1  # a 3x3 square: its centre pixel is the only interior
    ids[0, 0, 1:4, 4:7] = 7  # a second square touching it
    want = torch.tensor(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 2, 1, 2, 2, 1, 2, 0],
            [0, 2, 2, 2, 2, 2, 2, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    ).float()
    assert torch.equal(instance_classes(ids)[0, 0], want)


def test_instance_task_has_three_outputs_scores_the_foreground_and_refuses_two_classes():
    from medseg.errors import MedsegError
    from medseg.tasks import InstanceTask

    cfg = _instance_cfg()
    task = task_for(cfg)
    assert isinstance(task, InstanceTask) and task.out_channels == cfg.out_channels == 3
    pred = np.array([0, 1, 2, 2, 0])  # interior and boundary are both foreground
    gt = np.array([0, 5, 5, 0, 9])  # any object id is foreground
    assert task.class_counts(pred, gt).tolist() == [[2, 1, 1]]
    with pytest.raises(MedsegError, match="one object class"):
        _instance_cfg("data.labels=[background,a,b]")
    with pytest.raises(MedsegError, match="data.task 'objects' is unknown"):
        load_config("nuclei", ["data.task=objects"])


def test_instance_loss_learns_the_targets_it_derives_from_ids():
    task = task_for(_instance_cfg("model.deep_supervision=0"))
    ids = torch.zeros(2, 1, 12, 12)
    ids[:, :, 2:7, 2:7], ids[:, :, 2:7, 7:11] = 3, 4
    logits = torch.zeros(2, 3, 12, 12, requires_grad=True)
    opt = torch.optim.Adam([logits], lr=0.5)
    first = None
    for _ in range(30):
        opt.zero_grad()
        loss = task.loss()(logits, ids)
        first = first if first is not None else float(loss.detach())
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.3 * first
    from medseg.tasks import instance_classes

    assert torch.equal(task.logits_to_labels(logits.detach()).float(), instance_classes(ids))
